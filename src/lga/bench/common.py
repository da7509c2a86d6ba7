"""What every benchmark shares: the plan (sizes), the goals, a figure, timing, the machine."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lga.offline.bench_data import PROMPTS

__all__ = [
    "FIGURES", "FULL", "GOALS", "PROMPTS", "QUICK", "BenchPlan", "choose_threads", "figure",
    "interleaved", "interleaved_samples", "machine_info", "timed",
]  # fmt: skip

GOALS = {
    "teacher_batch_speedup": 3.0,
    "teacher_concurrency_speedup": 10.0,
    "train_pipeline_efficiency": 0.9,
    "eval_cache_speedup": 20.0,
    "store_writes_per_s": 5000.0,
}
FIGURES = tuple(GOALS)


@dataclass(frozen=True)
class BenchPlan:
    """The sizes of one benchmark run (``QUICK``: about two minutes on two loaded cores)."""

    image_size: int = 256  # px of the dataset images (decoding and preprocessing cost)
    teacher_images: int = 16  # x 4 prompts = items
    teacher_batch: int = 16
    max_new_tokens: int = 16
    concurrency_images: int = 32  # x 4 prompts = items
    concurrency_image_size: int = 64
    concurrency_large_image_size: int | None = 256  # also measured with these (None: not)
    concurrency: int = 16
    latency_s: float = 0.05
    train_batch: int = 16
    train_steps: int = 3  # timed optimizer steps (and as many bare steps), after one warm-up
    clip_depth: int | None = None  # None: 12 + 12 layers (ViT-B/32); else layers per tower
    num_workers: int = 2
    eval_images: int = 128
    eval_depth: int | None = None
    store_rows: int = 20_000
    store_chunk: int = 16
    repeats: int = 2


FULL = BenchPlan()
QUICK = BenchPlan(
    teacher_images=8,
    concurrency_images=32,
    concurrency_large_image_size=None,
    train_batch=16,
    train_steps=5,
    clip_depth=2,
    num_workers=1,
    eval_images=256,
    eval_depth=2,
    store_rows=5_000,
)


def figure(
    name: str, value: float, *, unit: str, command: str, sizes: dict, **details: Any
) -> dict[str, Any]:
    """One result: value against its goal, with the sizes and command that produced it."""
    goal, value = GOALS[name], round(float(value), 3)
    return {
        "value": value,
        "goal": goal,
        "passed": value >= goal,
        "unit": unit,
        "command": command,
        "sizes": sizes,
        **details,
    }


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes (CUDA work included)."""
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def interleaved_samples(
    fns: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Times of each function over ``repeats`` rounds, the functions taking turns each round.

    Taking turns exposes both sides to the same background load.
    """
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeats)):
        for k, fn in fns.items():
            samples[k].append(timed(fn))
    return samples


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best time of each function over ``repeats`` interleaved rounds.

    The best of several rounds drops the rounds another process slowed down (noise only ever
    adds time).
    """
    return {k: min(v) for k, v in interleaved_samples(fns, repeats).items()}


def choose_threads(threads: int | None = None) -> tuple[int, str]:
    """The torch CPU thread count for the run, and why.

    Args:
        threads: a fixed count; None: torch's default, except on a machine already busier than
            its CPU count (1-minute load average), where every parallel op of torch would wait
            for a descheduled thread (measured here: 160x slower small matmuls with 2 threads on
            2 cores at load 8): then 1.
    """
    import torch

    if threads is not None:
        return threads, "asked for (--threads)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cpus = os.cpu_count() or 1
    if load >= cpus:
        return 1, f"load average {load:.1f} >= {cpus} CPUs: one thread avoids stalls at every op"
    return torch.get_num_threads(), "torch default"


def machine_info() -> dict[str, Any]:
    """CPU count, load, library versions and the accelerator, for the JSON."""
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
