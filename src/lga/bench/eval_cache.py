"""The evaluation figure: a second ``lga eval`` of the same frozen model and data over the first."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lga.bench.common import figure, timed


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def eval_cache_speedup(
    data_root: str | Path,
    clip_dir: str | Path,
    workdir: str | Path,
    *,
    split: str = "test",
    batch_size: int = 64,
    num_workers: int = 2,
    device: str = "cpu",
) -> dict[str, Any]:
    """Seconds of a first ``lga eval`` over a second one of the same frozen model and data.

    Both run what ``lga eval`` runs (its config, then :func:`lga.evaluation.zero_shot.run_eval`)
    in this process (interpreter start-up and imports, the same in both, are left out), with a
    fresh cache folder (``$LGA_CACHE`` and ``eval.cache_dir``): the first checks and encodes
    every image, the second finds the images checked and the features cached.
    """
    from lga.config import EvalRunConfig, resolve_config
    from lga.evaluation.zero_shot import run_eval

    workdir = Path(workdir)
    cache = workdir / "eval-cache"

    def evaluate(out: Path) -> None:  # lga eval --data --student --split --batch-size
        cfg = resolve_config(  # --num-workers --device --cache-dir --out, the rest by default
            EvalRunConfig,
            base={
                "data": {"root": data_root, "num_workers": num_workers},
                "student": {"spec": str(clip_dir), "device": device},
                "eval": {"split": split, "batch_size": batch_size, "cache_dir": cache},
            },
        )
        run_eval(cfg, out)

    seconds = []
    with _env(LGA_CACHE=str(cache)):
        for k in (1, 2):
            seconds.append(timed(lambda k=k: evaluate(workdir / f"eval-{k}")))
    from lga.data.dataset import load_dataset

    n = len(load_dataset(data_root, check_images=False).split(split))
    return figure(
        "eval_cache_speedup",
        seconds[0] / seconds[1],
        unit="x",
        command=f"lga eval --data DATA --student <random clip> --split {split} "
        f"--batch-size {batch_size} --num-workers {num_workers} (twice)",
        sizes={"images": n, "split": split, "device": device, "batch_size": batch_size},
        seconds={"first": round(seconds[0], 3), "second": round(seconds[1], 3)},
        images_per_s={"first": round(n / seconds[0], 2), "second": round(n / seconds[1], 2)},
    )
