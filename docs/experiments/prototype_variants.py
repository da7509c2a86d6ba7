"""Description prototypes built other ways, scored on VALIDATION only (no training; given
fine-tuned models, their head is swapped after the fact): label-filtered texts replaced by the
class prompt (lga.filter=label) or dropped (lga.filter=drop), and each weighted 1/count(class,
place the teacher's background answer names) so that the common groups do not dominate.

    python docs/experiments/prototype_variants.py DEMO/data DEMO/descriptions.sqlite toy [MODEL ...]
"""

import sys

import torch
import torch.nn.functional as F
from description_head import head_scores  # this folder (run as a script)

from lga.data.dataset import load_dataset
from lga.store.core import DescriptionStore, dataset_key
from lga.student.features import image_features
from lga.student.model import class_text_features, load_student
from lga.teacher.prompts import BACKGROUND_DESCRIPTION, BACKGROUND_KEYWORDS, OBJECT_DESCRIPTION
from lga.train.data import strip_background

data, store_path, models = sys.argv[1], sys.argv[2], sys.argv[3:]
full = load_dataset(data, check_images=False)
train = full.split("train")
key = dataset_key(full)
with DescriptionStore(store_path, read_only=True) as st:
    ids = train.img_ids.tolist()
    d = st.texts(OBJECT_DESCRIPTION, ids, dataset=key)
    b = st.texts(BACKGROUND_DESCRIPTION, ids, dataset=key)
    bk = st.keywords(BACKGROUND_KEYWORDS, ids, dataset=key)
ids = [i for i in ids if i in d and i in b]
y_of = dict(zip(train.img_ids.tolist(), train.y.tolist(), strict=True))
ys = torch.tensor([y_of[i] for i in ids])
val = full.split("val")
for m in models:
    s = load_student(m)
    s.model.eval()
    with torch.no_grad():

        def enc(t, s=s):
            return F.normalize(s.encode_texts(t).float(), dim=-1)

        D = enc([strip_background(d[i], bk.get(i, [])) for i in ids])
        B = enc([b[i] for i in ids])
        sp = full.config.spurious_texts()
        PL = F.normalize(
            torch.stack([s.encode_texts(sp[p]).mean(0) for p in full.config.places]).float(), dim=-1
        )
        place = (B @ PL.T).argmax(1)
        P = F.normalize(
            class_text_features(s, full.config.classes, full.config.class_templates).float(), dim=-1
        )
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
