import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write_dataset
from lga.data import load_dataset
from lga.evaluation.metrics import format_metrics, group_metrics, weighted_accuracy
from lga.evaluation.zero_shot import train_group_counts

CLASSES, PLACES = ["landbird", "waterbird"], ["land", "water"]


def test_hand_computed():
    # groups: LL x3 (2 right), LW x1 (1 right), WL x2 (0 right), WW x2 (2 right)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    place = np.array([0, 0, 0, 1, 0, 0, 1, 1])
    pred = np.array([0, 0, 1, 0, 0, 0, 1, 1])
    m = group_metrics(
        pred,
        y,
        place,
        classes=CLASSES,
        places=PLACES,
        train_group_counts={
            "landbird/land": 70,
            "landbird/water": 10,
            "waterbird/land": 5,
            "waterbird/water": 15,
        },
    )
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["class_accuracy"] == {
        "landbird": pytest.approx(3 / 4),
        "waterbird": pytest.approx(2 / 4),
    }
    assert m["group_accuracy"] == {
        "landbird/land": pytest.approx(2 / 3),
        "landbird/water": 1.0,
        "waterbird/land": 0.0,
        "waterbird/water": 1.0,
    }
    assert m["group_count"] == {
        "landbird/land": 3,
        "landbird/water": 1,
        "waterbird/land": 2,
        "waterbird/water": 2,
    }
    assert m["worst_group"] == "waterbird/land" and m["worst_group_accuracy"] == 0.0
    assert m["weighted_accuracy"] == pytest.approx(0.70 * 2 / 3 + 0.10 + 0.0 + 0.15)
    text = format_metrics(m)
    assert "62.50%" in text and "worst group (waterbird/land)" in text


def test_absent_group_has_count_zero_and_is_not_worst():
    m = group_metrics([0, 1], [0, 1], [0, 1], classes=CLASSES, places=PLACES)
    assert m["group_count"]["landbird/water"] == 0
    assert "landbird/water" not in m["group_accuracy"]
    assert m["worst_group_accuracy"] == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="lengths differ"):
        group_metrics([0], [0, 1], [0, 1], classes=CLASSES, places=PLACES)
    with pytest.raises(ValueError, match="zero examples"):
        group_metrics([], [], [], classes=CLASSES, places=PLACES)
    with pytest.raises(ValueError):
        weighted_accuracy({"a": 1.0}, {"b": 3})


arrays = st.integers(1, 60).flatmap(
    lambda n: st.tuples(*(st.lists(st.integers(0, 1), min_size=n, max_size=n) for _ in range(3)))
)


@settings(max_examples=200, deadline=None)
@given(arrays)
def test_properties(data):
    pred, y, place = map(np.array, data)
    m = group_metrics(pred, y, place, classes=CLASSES, places=PLACES)
    assert m["worst_group_accuracy"] == min(m["group_accuracy"].values())
    assert sum(m["group_count"].values()) == len(y)
    # weighting by the evaluated split's own proportions gives plain accuracy
    assert m["weighted_accuracy"] == pytest.approx(m["accuracy"])
    same = group_metrics(
        pred,
        y,
        place,
        classes=CLASSES,
        places=PLACES,
        train_group_counts={g: 3 * c for g, c in m["group_count"].items()},
    )
    assert same["weighted_accuracy"] == pytest.approx(m["accuracy"])
    assert (
        0.0 <= m["worst_group_accuracy"] <= m["accuracy"] + 1e-12 or len(m["group_accuracy"]) == 1
    )


def _skewed_dataset(tmp_path, test_groups):
    """Train: 18 landbird/land, 1 landbird/water, 1 waterbird/land, 4 waterbird/water;
    test: two images of each (y, place) in ``test_groups``."""
    train = [(0, 0)] * 18 + [(0, 1)] + [(1, 0)] + [(1, 1)] * 4
    test = [g for g in test_groups for _ in range(2)]
    rows = [(i + 1, f"images/{i + 1:03d}.jpg", y, 0, p) for i, (y, p) in enumerate(train)]
    rows += [(100 + i, f"images/{100 + i}.jpg", y, 2, p) for i, (y, p) in enumerate(test)]
    return load_dataset(write_dataset(tmp_path / "ds", rows), check_images=False)


@pytest.mark.parametrize("absent", [None, (1, 0)])
def test_weighted_accuracy_on_a_skewed_training_split(tmp_path, absent):
    groups = [g for g in [(0, 0), (0, 1), (1, 0), (1, 1)] if g != absent]
    full = _skewed_dataset(tmp_path, groups)
    counts = train_group_counts(full)
    assert counts == {
        "landbird/land": 18,
        "landbird/water": 1,
        "waterbird/land": 1,
        "waterbird/water": 4,
    }
    test = full.split("test")  # sorted by img_id: in the order written, group by group
    assert np.stack([test.y, test.place], 1).tolist() == [list(g) for g in groups for _ in "ab"]
    # right per group of two: landbird/land 2, landbird/water 1, waterbird/land 0, waterbird/water 2
    right = {(0, 0): [1, 1], (0, 1): [1, 0], (1, 0): [0, 0], (1, 1): [1, 1]}
    pred = [y if ok else 1 - y for (y, p), oks in right.items() if (y, p) in groups for ok in oks]
    m = group_metrics(
        np.array(pred),
        test.y,
        test.place,
        classes=CLASSES,
        places=PLACES,
        train_group_counts=counts,
    )
    if absent is None:  # (18 * 1 + 1 * 0.5 + 1 * 0 + 4 * 1) / 24
        assert m["weighted_accuracy"] == pytest.approx(22.5 / 24)
        assert m["accuracy"] == pytest.approx(5 / 8)  # the test split's own mix
    else:  # waterbird/land has no test image: left out, weights renormalised over 23
        assert m["weighted_accuracy"] == pytest.approx(22.5 / 23)
        assert m["accuracy"] == pytest.approx(5 / 6)
