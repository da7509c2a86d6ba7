"""The benchmarks' data: a noisy tiny-birds dataset and a store of random 40-word descriptions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lga.teacher.prompts import SHIPPED_PROMPTS

# The four prompts the benchmarks describe every image with.
PROMPTS = SHIPPED_PROMPTS

# Words the random students' tokenizer knows; descriptions are drawn from them (40 words, like a
# concise LLaVA answer), so every image has its own text, as with a real teacher.
WORDS = (
    "the bird has a long neck short neck webbed feet clawed feet flat bill hooked bill conical "
    "bill white grey brown black plumage wings spread perched swimming standing on water land "
    "lake ocean forest grass trees sky it is a gull duck heron cormorant sparrow finch warbler "
    "woodpecker small medium large with and of in photo picture close-up seabird songbird"
).split()


def random_words(rng: np.random.Generator, n: int) -> str:
    """``n`` words of :data:`WORDS` drawn by ``rng``, ending with a full stop."""
    return " ".join(rng.choice(WORDS, size=n)) + "."


def make_bench_dataset(
    root: str | Path,
    *,
    n_train: int,
    n_val: int = 4,
    n_test: int = 4,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """A Waterbirds-layout folder of noisy bird images (PNG, ``size`` px), three splits.

    The tiny-birds drawings (:func:`lga.offline.tiny_birds.make_tiny_birds`, with their
    ``attributes.csv``) get per-pixel noise so that decoding costs what a photo of that size
    costs; splits are consecutive img_ids, so every 4 images cover the 4 groups.
    """
    import pandas as pd
    from PIL import Image

    from lga.offline.tiny_birds import make_tiny_birds

    root = make_tiny_birds(root, n_train + n_val + n_test, size=size)
    meta = pd.read_csv(root / "metadata.csv")
    meta["split"] = np.repeat([0, 1, 2], [n_train, n_val, n_test])
    meta.to_csv(root / "metadata.csv", index=False)
    rng = np.random.default_rng(seed)
    for name in meta["img_filename"]:
        pixels = np.asarray(Image.open(root / name).convert("RGB"), dtype=np.int16)
        noisy = pixels + rng.integers(-24, 25, pixels.shape)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(root / name)
    return root


def fill_descriptions(store_path: str | Path, data_root: str | Path, *, seed: int = 0) -> Path:
    """A store with a distinct 40-word answer to each of the four prompts for every image."""
    from lga.data.dataset import load_dataset
    from lga.store.core import DONE, DescriptionStore, Row, dataset_key

    ds = load_dataset(data_root, check_images=False)
    key, rng = dataset_key(ds), np.random.default_rng(seed)
    rows = [
        Row(key, img_id, prompt, "bench", "bench-teacher", "bench", DONE, random_words(rng, 40))
        for img_id in ds.img_ids.tolist()
        for prompt in PROMPTS
    ]
    with DescriptionStore(store_path) as store:
        store.put(rows)
    return Path(store_path)
