import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write_dataset
from lga.data import load_dataset, subsample


def _skewed(tmp_path, counts=(60, 3, 7, 30)):
    rows, i = [], 1
    for g, k in enumerate(counts):
        for _ in range(k):
            rows.append((i, f"images/{i:03d}.jpg", g // 2, 0, g % 2))
            i += 1
    return load_dataset(write_dataset(tmp_path / "ds", rows), check_images=False)


def test_keeps_group_proportions_and_is_seeded(tmp_path):
    ds = _skewed(tmp_path)
    a = subsample(ds, 50, seed=1)
    assert len(a) == 50
    assert np.bincount(a.group, minlength=4).tolist() == [30, 2, 3, 15]  # 60:3:7:30 halved
    assert list(a.img_ids) == list(subsample(ds, 50, seed=1).img_ids)
    assert list(a.img_ids) != list(subsample(ds, 50, seed=2).img_ids)
    assert subsample(ds, None, seed=0) is ds and subsample(ds, 1000, seed=0) is ds


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 99), seed=st.integers(0, 10_000))
def test_allocation_properties(tmp_path_factory, n, seed):
    ds = _skewed(tmp_path_factory.mktemp("s"))
    sub = subsample(ds, n, seed=seed)
    counts = np.bincount(ds.group, minlength=4)
    got = np.bincount(sub.group, minlength=4)
    assert got.sum() == n
    assert len(set(sub.img_ids)) == n and set(sub.img_ids) <= set(ds.img_ids)
    assert np.all(np.abs(got - counts * n / counts.sum()) < 1)  # largest remainder: within one
