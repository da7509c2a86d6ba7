"""Description prototypes built other ways, scored on VALIDATION only (no training; given
fine-tuned models, their head is swapped after the fact): label-filtered texts replaced by the
class prompt (lga.filter=label) or dropped (lga.filter=drop), and each weighted 1/count(class,
place the teacher's background answer names) so that the common groups do not dominate.

    python docs/experiments/prototype_variants.py DEMO/data DEMO/descriptions.sqlite toy [MODEL ...]
"""

import sys

import torch
import torch.nn.functional as F
from description_head import head_scores, teacher_embeddings, teacher_texts  # this folder

from lga.student.features import image_features
from lga.student.model import load_student

data, store_path, models = sys.argv[1], sys.argv[2], sys.argv[3:]
full, ys, cleaned, background, _ = teacher_texts(data, store_path)
val = full.split("val")
for m in models:
    s = load_student(m)
    D, _, place, P = teacher_embeddings(s, full, cleaned, background)
    with torch.no_grad():
        keep = (D @ P.T).argmax(1) == ys
        Drep = torch.where(~keep[:, None], P[ys], D)
        g = ys * 2 + place
        cnt = torch.bincount(g, minlength=4).float()
        w = 1 / cnt[g]
        f = image_features(s, val, batch_size=256, progress=False).float()

    def proto(E, wt):
        return F.normalize(
            torch.stack([(E[ys == c] * wt[ys == c, None]).sum(0) for c in range(2)]), dim=-1
        )

    one = torch.ones_like(w)
    heads = {
        "desc-replace": proto(Drep, one),
        "desc-replace-bal": proto(Drep, w),
        "desc-drop": proto(D, keep.float()),
        "desc-drop-bal": proto(D, keep.float() * w),
        "desc-bal": proto(D, w),
    }
    out = head_scores(f, heads, val, full.config.classes)
    print(m[-30:], cnt.tolist(), " | ".join(out), flush=True)
