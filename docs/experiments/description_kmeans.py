"""Several description prototypes per class (k-means of the cleaned description embeddings of each
class; a class scores its best prototype), against one (lga.head=descriptions). A diagnostic: no
training; given fine-tuned models it swaps their head after the fact.

    python docs/experiments/description_kmeans.py DEMO/data DEMO/descriptions.sqlite toy [MODEL ...]
"""

import sys

import torch
import torch.nn.functional as F
from description_head import cleaned_descriptions  # this folder (run as a script)

from lga.evaluation.metrics import group_metrics
from lga.student.features import image_features
from lga.student.model import load_student

data, store_path, models = sys.argv[1], sys.argv[2], sys.argv[3:]
full, cl, ys = cleaned_descriptions(data, store_path)
ys = torch.as_tensor(ys)


def kmeans(x, k, iters=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):
        a = (x @ c.T).argmax(1)
        c = F.normalize(
            torch.stack([x[a == j].mean(0) if (a == j).any() else c[j] for j in range(k)]), dim=-1
        )
    return c


for m in models:
    s = load_student(m)
    with torch.no_grad():
        e = F.normalize(s.encode_texts(cl).float(), dim=-1)
    feats = {
        sp: image_features(
            s, full.unseen if sp == "unseen" else full.split(sp), batch_size=256, progress=False
        ).float()
        for sp in ("val", "test", "unseen")
    }
    for k in (1, 2, 4, 8):
        protos = [kmeans(e[ys == c], k) for c in (0, 1)]
        out = []
        for sp, f in feats.items():
            ds = full.unseen if sp == "unseen" else full.split(sp)
            scores = torch.stack([(f @ p.T).max(1).values for p in protos], 1)
            r = group_metrics(
                scores.argmax(1).numpy(),
                ds.y,
                ds.place,
                classes=full.config.classes,
                places=ds.config.places,
            )
            out.append(f"{sp} {100 * r['accuracy']:.1f}/{100 * r['worst_group_accuracy']:.1f}")
        print(m[-30:], f"k={k}", " | ".join(out), flush=True)
