"""The teacher's background words projected out of the class head (after Chuang et al. 2023,
"Debiasing vision-language models via biased prompts", arXiv:2302.00070), scored on VALIDATION
only, with no training; given fine-tuned models, their head is swapped after the fact.

    python docs/experiments/background_projection.py DEMO/data DEMO/descriptions.sqlite toy \
        [MODEL ...] [--test]

The teacher's background descriptions of the described training images are embedded and each is
given the place whose spurious prompts it is nearest to (as sample.balance=background does). The
"place subspace" is then spanned by:
- `diff`: the difference of the two place means of those embeddings (one direction);
- `pcK`: the top K principal directions of the background-description embeddings.
Each head (class prompts, description prototypes with the label filter's texts replaced) is
scored as it is and with its class vectors projected onto the orthogonal complement of that
subspace, so that an image's place no longer moves its logits along it. ``--test`` adds the test
and unseen-place figures: for reporting heads already chosen, never for choosing.
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


def project_out(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Rows of ``w`` (C, D) with their component in span(basis rows, orthonormal) removed."""
    return F.normalize(w - (w @ basis.T) @ basis, dim=-1)


def main(data: str, store_path: str, models: list[str]) -> None:
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
    splits = {"val": full.split("val")}
    if "--test" in models:  # reporting only, after a choice made on validation
        models = [m for m in models if m != "--test"]
        splits |= {"test": full.split("test"), "unseen": full.unseen}
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
                torch.stack([s.encode_texts(sp[p]).mean(0) for p in full.config.places]).float(),
                dim=-1,
            )
            place = (B @ PL.T).argmax(1)
            P = F.normalize(
                class_text_features(s, full.config.classes, full.config.class_templates).float(),
                dim=-1,
            )
            keep = (D @ P.T).argmax(1) == ys
            Drep = torch.where(~keep[:, None], P[ys], D)
            desc = F.normalize(torch.stack([Drep[ys == c].mean(0) for c in range(2)]), dim=-1)
            diff = F.normalize(B[place == 0].mean(0) - B[place == 1].mean(0), dim=-1)[None]
            Bc = B - B.mean(0)
            _, _, V = torch.linalg.svd(Bc, full_matrices=False)
            bases = {"diff": diff} | {f"pc{k}": V[:k] for k in (1, 2, 4, 8)}
            heads = {"prompts": P, "desc": desc}
            for name, basis in bases.items():
                heads[f"prompts-{name}"] = project_out(P, basis)
                heads[f"desc-{name}"] = project_out(desc, basis)
            for split, ds in splits.items():
                f = image_features(s, ds, batch_size=256, progress=False).float()
                out = head_scores(f, heads, ds, full.config.classes)
                print(f"{m[-40:]:40s} {split:6s}", " | ".join(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
