"""The teacher's places read on the IMAGE side: the direction between the two places the teacher
named, estimated from image embeddings, projected out of every image before the class head. A
no-training screen on VALIDATION only (``--test`` adds test and unseen places, for reporting a
choice already made, never for choosing).

    python docs/experiments/image_projection.py DEMO/data DEMO/descriptions.sqlite toy [--test]

``lga.project=background`` removes the place direction from the class TEXTS. An image still
carries its place along directions the text-side one misses (the two towers put the place in
different places). Here each described training image gets the place its background answer is
read as (as sample.balance=background reads it), and the image-side place direction is:
- `cdiff`: the mean over classes of (mean image of place 1 - mean image of place 0) within the
  class (class-conditional, so the class itself is not removed);
- `cdiff2`: the two classes' differences as two directions.
Heads: class prompts and description prototypes (label filter's texts replaced), each as it is
and with the text-side projection (`-tp`), over images with or without the image-side one
(`img-none`, `img-cdiff`, `img-cdiff2`). `-joint-cdiff*`: the text-side and image-side
directions removed from the class vectors together (one orthonormal span); read them on the
`img-none` rows (on the others the images are projected a second time).
"""

import sys

import torch
import torch.nn.functional as F
from description_head import head_scores, teacher_embeddings, teacher_texts  # this folder

from lga.student.features import image_features
from lga.student.heads import image_place_basis, place_basis, project_images_out, project_out
from lga.student.model import load_student


def class_place_directions(f: torch.Tensor, y: torch.Tensor, place: torch.Tensor) -> torch.Tensor:
    """(C, D): per class, mean image of the teacher's place 1 minus that of place 0."""
    return torch.stack(
        [f[(y == c) & (place == 1)].mean(0) - f[(y == c) & (place == 0)].mean(0) for c in (0, 1)]
    )


def main(data: str, store_path: str, args: list[str]) -> None:
    full, ys, cleaned, background, rows = teacher_texts(data, store_path)
    train = full.split("train")
    splits = {"val": full.split("val")}
    if "--test" in args:
        splits |= {"test": full.split("test"), "unseen": full.unseen}
    models = [a for a in args if a != "--test"]
    for m in models:
        s = load_student(m)
        D, B, place, P = teacher_embeddings(s, full, cleaned, background)
        with torch.no_grad():
            keep = (D @ P.T).argmax(1) == ys
            desc = F.normalize(torch.stack([torch.where(~keep[:, None], P[ys], D)[ys == c].mean(0)
                                            for c in range(2)]), dim=-1)  # fmt: skip
            tb = place_basis(B, place)
            heads = {"prompts": P, "desc": desc, "prompts-tp": project_out(P, tb),
                     "desc-tp": project_out(desc, tb)}  # fmt: skip
        ftr = image_features(s, train, batch_size=256, progress=False).float()[rows]
        ftr = F.normalize(ftr, dim=-1)  # the described training images, in teacher_texts' order
        bases = {
            "none": None,
            "cdiff": image_place_basis(ftr, ys, place),  # what lga.project_images removes
            "cdiff2": torch.linalg.qr(class_place_directions(ftr, ys, place).T).Q.T,
        }
        for bname in ("cdiff", "cdiff2"):  # both directions out of the head at once
            joint = torch.linalg.qr(torch.cat([tb, bases[bname]]).T).Q.T
            heads[f"prompts-joint-{bname}"] = project_out(P, joint)
            heads[f"desc-joint-{bname}"] = project_out(desc, joint)
        for split, ds in splits.items():
            f = F.normalize(image_features(s, ds, batch_size=256, progress=False).float(), dim=-1)
            for bname, basis in bases.items():
                out = head_scores(project_images_out(f, basis), heads, ds, full.config.classes)
                print(f"{m[-20:]:20s} {split:6s} img-{bname:7s}", " | ".join(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
