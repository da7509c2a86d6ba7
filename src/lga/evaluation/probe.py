"""How much a CLIP checkpoint knows about the object, and how biased its zero-shot rule is.

Two diagnostics on frozen image features, for any CLIP-family checkpoint and any dataset in the
Waterbirds layout (``lga probe``), and for the toy CLIP while it is pretrained (``lga_toy.json``):

- **balanced probe**: a logistic regression on the normalised image embeddings, fit on images
  balanced over class × place (the validation split, sub-sampled to equal groups) and scored on
  other balanced images (the test split, likewise). With the background uninformative in both,
  its accuracy measures how well the features separate the classes by the object alone
  (real CLIP on Waterbirds: last-layer retraining on balanced data reaches about 90% worst group).
- **zero-shot**: accuracy per group of the class-prompt rule on the same scored images; its
  worst group measures the background bias of the image-text alignment.
- **biased probe** (when the dataset has a training split): the same probe fit on the training
  split, as correlated as it is, and scored on the balanced images: what a linear classifier
  learns from the spurious sample alone.

Every figure is a fraction. The logistic regression is :func:`lga.train.linear_probe.train_logreg`
(standardised features, mean cross-entropy + ``l2 * ||W||²``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from lga.config import StudentConfig
from lga.evaluation.metrics import group_metrics
from lga.student.heads import balanced_rows, train_logreg

log = logging.getLogger(__name__)

DEFAULT_L2 = 1e-3
MAX_ITER = 300


@dataclass
class ProbeResult:
    """The diagnostics of one checkpoint on one dataset (fractions)."""

    probe_accuracy: float  # balanced probe, mean accuracy on the balanced scored images
    probe_worst_group: float
    zero_shot_accuracy: float  # on the same balanced scored images
    zero_shot_worst_group: float
    zero_shot_group_accuracy: dict[str, float] = field(default_factory=dict)
    biased_probe_worst_group: float | None = None
    biased_probe_accuracy: float | None = None
    n_fit: int = 0
    n_score: int = 0
    n_biased_fit: int = 0

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _probe_predict(
    fit_x: torch.Tensor, fit_y: np.ndarray, x: torch.Tensor, n_classes: int, l2: float
) -> np.ndarray:
    probe = train_logreg(
        fit_x, torch.as_tensor(np.array(fit_y, dtype=np.int64)), n_classes, l2=l2, max_iter=MAX_ITER
    )
    return probe.probs(x).argmax(axis=1)


def probe_features(
    *,
    fit: tuple[torch.Tensor, np.ndarray, np.ndarray],
    score: tuple[torch.Tensor, np.ndarray, np.ndarray],
    class_feats: torch.Tensor,
    classes: Sequence[str],
    places: Sequence[str],
    biased_fit: tuple[torch.Tensor, np.ndarray] | None = None,
    l2: float = DEFAULT_L2,
    seed: int = 0,
) -> ProbeResult:
    """The diagnostics from features already computed.

    Args:
        fit: ``(features (N, D), y (N,), place (N,))`` of the images the balanced probe is fit
            on; sub-sampled here to equal (class, place) groups.
        score: the same for the images it is scored on; sub-sampled to equal groups.
        class_feats: ``(C, D)`` normalised class-prompt embeddings (zero-shot rule).
        classes, places: names of the class and place indices (group keys "<class>/<place>").
        biased_fit: ``(features, y)`` of a (spuriously correlated) training split, or None.
        l2: the probe's L2 penalty on standardised features.
        seed: seed of the balanced sub-sampling.
    """
    fx, fy, fp = fit
    sx, sy, sp = score
    fi = balanced_rows(fy * len(places) + fp, np.random.default_rng(seed))
    si = balanced_rows(sy * len(places) + sp, np.random.default_rng(seed + 1))
    fx, fy = fx[fi], fy[fi]
    sx, sy, sp = sx[si], sy[si], sp[si]

    def metrics(pred: np.ndarray) -> dict:
        return group_metrics(pred, sy, sp, classes=classes, places=places)

    pred = metrics(_probe_predict(fx, fy, sx, len(classes), l2))
    zs = metrics((sx.float() @ class_feats.float().T).argmax(dim=1).numpy())
    result = ProbeResult(
        probe_accuracy=pred["accuracy"],
        probe_worst_group=pred["worst_group_accuracy"],
        zero_shot_accuracy=zs["accuracy"],
        zero_shot_worst_group=zs["worst_group_accuracy"],
        zero_shot_group_accuracy=zs["group_accuracy"],
        n_fit=len(fi),
        n_score=len(si),
    )
    if biased_fit is not None:
        bx, by = biased_fit
        biased = metrics(_probe_predict(bx, by, sx, len(classes), l2))
        result.biased_probe_accuracy = biased["accuracy"]
        result.biased_probe_worst_group = biased["worst_group_accuracy"]
        result.n_biased_fit = len(by)
    return result


def probe_checkpoint(
    data: str,
    student: str | StudentConfig,
    *,
    fit_split: str = "val",
    score_split: str = "test",
    biased_split: str | None = "train",
    l2: float = DEFAULT_L2,
    seed: int = 0,
    dataset_config: str | None = None,
    batch_size: int = 128,
    progress: bool = True,
) -> ProbeResult:
    """:func:`probe_features` for a checkpoint (hub id, directory or ``toy``, or a
    :class:`StudentConfig` with its device, dtype and revision) on a dataset folder.

    Image features go through the feature cache like ``lga eval``'s.
    """
    from lga.data.dataset import load_dataset
    from lga.evaluation.zero_shot import templates_for
    from lga.student.features import feature_cache, image_features
    from lga.student.model import class_text_features, load_student

    ds = load_dataset(data, dataset_config)
    st = load_student(student)  # "toy" included; a StudentConfig keeps its device and dtype

    def feats(split: str):
        part = ds.split(split)
        if len(part) == 0:
            from lga.errors import DataError

            raise DataError(f"{data}: the {split} split has no rows")
        cache = feature_cache(st, part)
        x = image_features(st, part, batch_size=batch_size, cache=cache, progress=progress)
        return x, part.y, part.place

    with torch.no_grad():
        class_feats = class_text_features(st, ds.config.classes, templates_for(ds)).cpu()
    biased = None
    if biased_split is not None and len(ds.split(biased_split)) > 0:
        bx, by, _ = feats(biased_split)
        biased = (bx, by)
    return probe_features(
        fit=feats(fit_split),
        score=feats(score_split),
        class_feats=class_feats,
        classes=ds.config.classes,
        places=ds.config.places,
        biased_fit=biased,
        l2=l2,
        seed=seed,
    )
