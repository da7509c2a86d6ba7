"""Zero-shot through the teacher's words: the class prompts against the description prototypes.

Usage (DEMO from `lga reproduce demo --out DEMO 'methods=[zero-shot]'`):

    python docs/experiments/description_head.py DEMO/data DEMO/descriptions.sqlite toy [MODEL ...]

For each model: validation, test and unseen-place accuracy and worst group through three heads,
with no training: `prompts` (the dataset's class prompts, as zero-shot), `descr` (each class's
prototype: the normalised mean embedding of the cleaned object descriptions the teacher wrote for
every described training image of that class; lga.head=descriptions builds the same from one
seed's sample), and `both` (their normalised sum). Given fine-tuned models it swaps their head
after the fact: a diagnostic, not a method (the run chose its checkpoint through its own head).
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

from lga.data.dataset import load_dataset
from lga.evaluation.metrics import group_metrics
from lga.store.core import DescriptionStore, dataset_key
from lga.student.features import image_features
from lga.student.model import class_text_features, load_student
from lga.teacher.prompts import BACKGROUND_DESCRIPTION, BACKGROUND_KEYWORDS, OBJECT_DESCRIPTION
from lga.train.data import strip_background


def _train_answers(data: str, store_path: str, prompts: list[str]):
    """(dataset, training split, {prompt: {img_id: answer}}, {img_id: background keywords}) of
    the training images, read from the store once."""
    full = load_dataset(data, check_images=False)
    train = full.split("train")
    key, ids = dataset_key(full), train.img_ids.tolist()
    with DescriptionStore(store_path, read_only=True) as st:
        answers = {p: st.texts(p, ids, dataset=key) for p in prompts}
        kws = st.keywords(BACKGROUND_KEYWORDS, ids, dataset=key)
    return full, train, answers, kws


def cleaned_descriptions(data: str, store_path: str):
    """(dataset, cleaned object descriptions, their classes (numpy)) of every described
    training image, the background parts dropped as lga.clean=background drops them."""
    full, train, answers, kws = _train_answers(data, store_path, [OBJECT_DESCRIPTION])
    texts = answers[OBJECT_DESCRIPTION]
    described = [i for i in train.img_ids.tolist() if i in texts]
    y_of = dict(zip(train.img_ids.tolist(), train.y.tolist(), strict=True))
    cleaned = [strip_background(texts[i], kws.get(i, [])) for i in described]
    return full, cleaned, np.array([y_of[i] for i in described])


def teacher_texts(data: str, store_path: str):
    """(dataset, classes (tensor), object descriptions cleaned as lga.clean=background cleans
    them, background descriptions, rows in the training split) of every training image with
    both answers."""
    prompts = [OBJECT_DESCRIPTION, BACKGROUND_DESCRIPTION]
    full, train, answers, bk = _train_answers(data, store_path, prompts)
    d, b = answers[OBJECT_DESCRIPTION], answers[BACKGROUND_DESCRIPTION]
    rows = [r for r, i in enumerate(train.img_ids.tolist()) if i in d and i in b]
    ids = [train.img_ids[r] for r in rows]
    ys = torch.tensor([int(train.y[r]) for r in rows])
    cleaned = [strip_background(d[i], bk.get(i, [])) for i in ids]
    return full, ys, cleaned, [b[i] for i in ids], rows


@torch.no_grad()
def teacher_embeddings(student, full, cleaned, background):
    """Through ``student`` (put in eval mode): the normalised embeddings of the cleaned object
    texts (N, D) and of the background texts (N, D), the place each background text is read as
    (N,): the nearest of the dataset's template-averaged spurious prompts, as
    sample.balance=background reads it; and the class prompts (C, D)."""
    student.model.eval()

    def enc(texts):
        return F.normalize(student.encode_texts(texts).float(), dim=-1)

    objects, backgrounds = enc(cleaned), enc(background)
    sp = full.config.spurious_texts()
    places = torch.stack([student.encode_texts(sp[p]).mean(0) for p in full.config.places])
    read = (backgrounds @ F.normalize(places.float(), dim=-1).T).argmax(1)
    spec = full.config
    prompts = F.normalize(class_text_features(student, spec.classes, spec.class_templates), dim=-1)
    return objects, backgrounds, read, prompts.float()


def head_scores(feats, heads: dict, ds, classes) -> list[str]:
    """``"name acc/worst"`` (%, one decimal / none) of each (C, D) head over features of ``ds``."""
    out = []
    for name, w in heads.items():
        pred = (feats @ w.T).argmax(1).numpy()
        r = group_metrics(pred, ds.y, ds.place, classes=classes, places=ds.config.places)
        out.append(f"{name} {100 * r['accuracy']:.1f}/{100 * r['worst_group_accuracy']:.0f}")
    return out


def main(data: str, store_path: str, models: list[str]) -> None:
    full, cleaned, ys = cleaned_descriptions(data, store_path)
    print(len(cleaned), "described;", "e.g.", cleaned[0][:150])
    for m in models:
        s = load_student(m)
        with torch.no_grad():
            d = s.encode_texts(cleaned).float()
            d = F.normalize(d, dim=-1)
            protos = F.normalize(torch.stack([d[ys == c].mean(0) for c in range(2)]), dim=-1)
            prompts = class_text_features(
                s, full.config.classes, full.config.class_templates
            ).float()
            prompts = F.normalize(prompts, dim=-1)
        heads = {"prompts": prompts, "descr": protos, "both": F.normalize(prompts + protos, dim=-1)}
        for split in ("val", "test", "unseen"):
            ds = full.unseen if split == "unseen" else full.split(split)
            f = image_features(s, ds, batch_size=256, progress=False).float()
            for h, w in heads.items():
                pred = (f @ w.T).argmax(1).numpy()
                r = group_metrics(
                    pred, ds.y, ds.place, classes=full.config.classes, places=ds.config.places
                )
                acc, worst = 100 * r["accuracy"], 100 * r["worst_group_accuracy"]
                print(f"{m[-40:]:40s} {split:6s} {h:8s} acc {acc:.1f} worst {worst:.1f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
