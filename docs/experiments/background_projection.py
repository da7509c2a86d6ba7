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
from description_head import head_scores, teacher_embeddings, teacher_texts  # this folder

from lga.student.features import image_features
from lga.student.heads import place_basis, project_out
from lga.student.model import load_student


def main(data: str, store_path: str, models: list[str]) -> None:
    full, ys, cleaned, background, _ = teacher_texts(data, store_path)
    splits = {"val": full.split("val")}
    if "--test" in models:  # reporting only, after a choice made on validation
        models = [m for m in models if m != "--test"]
        splits |= {"test": full.split("test"), "unseen": full.unseen}
    for m in models:
        s = load_student(m)
        D, B, place, P = teacher_embeddings(s, full, cleaned, background)
        with torch.no_grad():
            keep = (D @ P.T).argmax(1) == ys
            Drep = torch.where(~keep[:, None], P[ys], D)
            desc = F.normalize(torch.stack([Drep[ys == c].mean(0) for c in range(2)]), dim=-1)
            Bc = B - B.mean(0)
            _, _, V = torch.linalg.svd(Bc, full_matrices=False)
            bases = {"diff": place_basis(B, place)} | {f"pc{k}": V[:k] for k in (1, 2, 4, 8)}
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
