"""Group-robustness metrics: pure functions of (predictions, labels, places).

Fractions are stored; percentages are only for printing. Groups are ``(y, place)``, keyed
``"<class>/<place>"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lga.data.dataset_config import Group


def _accuracy(correct: np.ndarray) -> float:
    return float(correct.mean())


def group_metrics(
    pred: np.ndarray,
    y: np.ndarray,
    place: np.ndarray,
    *,
    classes: Sequence[str],
    places: Sequence[str],
    train_group_counts: Mapping[str, int] | None = None,
) -> dict:
    """Overall, weighted, per-class, per-group and worst-group accuracy.

    Args:
        pred: (N,) predicted class indices.
        y: (N,) true class indices.
        place: (N,) spurious attribute indices.
        classes: class names (index = ``y``).
        places: spurious attribute names (index = ``place``).
        train_group_counts: images per group in the training split. ``weighted_accuracy`` weights
            each group's accuracy by its training proportion (the WILDS / group-DRO convention);
            when None, the evaluated split's own proportions are used (= ``accuracy``).

    Returns:
        Keys ``n, accuracy, weighted_accuracy, worst_group_accuracy, worst_group,
        class_accuracy, group_accuracy, group_count``. Groups absent from the evaluated data have
        count 0 and no accuracy; they are not candidates for the worst group.
    """
    pred, y, place = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (pred, y, place))
    if not (len(pred) == len(y) == len(place)):
        raise ValueError(f"pred, y, place lengths differ: {len(pred)}, {len(y)}, {len(place)}")
    if len(y) == 0:
        raise ValueError("cannot compute metrics on zero examples")
    correct = pred == y
    group_accuracy, group_count = {}, {}
    for ci, c in enumerate(classes):
        for pi, p in enumerate(places):
            mask = (y == ci) & (place == pi)
            group_count[Group(c, p).key] = int(mask.sum())
            if mask.any():
                group_accuracy[Group(c, p).key] = _accuracy(correct[mask])
    class_accuracy = {
        c: _accuracy(correct[y == ci]) for ci, c in enumerate(classes) if (y == ci).any()
    }
    worst = min(group_accuracy, key=lambda g: (group_accuracy[g], g))
    weights = train_group_counts if train_group_counts is not None else group_count
    return {
        "n": int(len(y)),
        "accuracy": _accuracy(correct),
        "weighted_accuracy": weighted_accuracy(group_accuracy, weights),
        "worst_group_accuracy": group_accuracy[worst],
        "worst_group": worst,
        "class_accuracy": class_accuracy,
        "group_accuracy": group_accuracy,
        "group_count": group_count,
    }


def weighted_accuracy(group_accuracy: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Σ_g w_g acc_g / Σ_g w_g over the groups that have an accuracy and a positive weight."""
    keys = [g for g in group_accuracy if weights.get(g, 0) > 0]
    if not keys:
        raise ValueError("no group has both an accuracy and a positive weight")
    total = sum(weights[g] for g in keys)
    return float(sum(weights[g] * group_accuracy[g] for g in keys) / total)


def format_metrics(metrics: Mapping) -> str:
    """A human-readable table of one run's metrics, as percentages."""
    rows = [
        ("overall accuracy", metrics["accuracy"], metrics["n"]),
        ("weighted accuracy (train group mix)", metrics["weighted_accuracy"], None),
    ]
    rows += [(f"class {c}", a, None) for c, a in metrics["class_accuracy"].items()]
    rows += [
        (f"group {g}", metrics["group_accuracy"].get(g), n)
        for g, n in metrics["group_count"].items()
    ]
    rows.append((f"worst group ({metrics['worst_group']})", metrics["worst_group_accuracy"], None))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'acc':>7}  {'n':>6}"]
    for name, acc, n in rows:
        acc_s = f"{100 * acc:6.2f}%" if acc is not None else "    n/a"
        lines.append(f"{name:{width}}  {acc_s}  {'' if n is None else n:>6}")
    return "\n".join(lines)
