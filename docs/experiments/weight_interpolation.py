"""Weight-space interpolation (WiSE-FT, Wortsman et al. 2022) of the pre-trained toy CLIP and
fine-tuned models, scored on VALIDATION only through the class prompts and through the description
prototypes (label-filtered, of every described training image). A diagnostic, no training.

    python docs/experiments/weight_interpolation.py DEMO/data DEMO/descriptions.sqlite MODEL ...
"""

import sys

import torch
import torch.nn.functional as F
from description_head import cleaned_descriptions, head_scores  # this folder (run as a script)

from lga.student.features import image_features
from lga.student.model import class_text_features, load_student

data, store_path = sys.argv[1], sys.argv[2]
models = sys.argv[3:]
full, texts, ys = cleaned_descriptions(data, store_path)
ys = torch.as_tensor(ys)
val = full.split("val")
base = load_student("toy")
sd0 = {k: v.clone() for k, v in base.model.state_dict().items()}
for m in models:
    s = load_student(m)
    sd1 = {k: v.clone() for k, v in s.model.state_dict().items()}
    row = []
    for a in (0.0, 0.25, 0.5, 0.75, 1.0):
        s.model.load_state_dict(
            {
                k: (1 - a) * sd0[k] + a * sd1[k] if sd0[k].is_floating_point() else sd1[k]
                for k in sd1
            }
        )
        s.model.eval()
        with torch.no_grad():
            P = F.normalize(
                class_text_features(s, full.config.classes, full.config.class_templates).float(),
                dim=-1,
            )
            D = F.normalize(s.encode_texts(texts).float(), dim=-1)
            Drep = torch.where(((D @ P.T).argmax(1) != ys)[:, None], P[ys], D)
            protos = F.normalize(torch.stack([Drep[ys == c].mean(0) for c in range(2)]), dim=-1)
            f = image_features(s, val, batch_size=256, progress=False).float()
        out = head_scores(f, {"prompts": P, "desc": protos}, val, full.config.classes)
        row.append(f"a={a}: " + " ".join(out))
    print(m[-28:], " | ".join(row), flush=True)
