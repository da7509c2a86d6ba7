"""All the figures in one run, on assets built offline, and their table."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lga.bench.common import FIGURES, BenchPlan, choose_threads, machine_info
from lga.bench.eval_cache import eval_cache_speedup
from lga.bench.store import store_writes_per_s
from lga.bench.teacher import png_encode_ms, teacher_batch_speedup, teacher_concurrency_speedup
from lga.bench.train import train_pipeline_efficiency
from lga.offline.bench_data import fill_descriptions, make_bench_dataset
from lga.offline.clip import random_clip

log = logging.getLogger(__name__)


def run_benchmarks(
    plan: BenchPlan,
    workdir: str | Path,
    *,
    device: str = "cpu",
    only: list[str] | None = None,
    threads: int | None = None,
    command: str = "lga bench",
) -> dict[str, Any]:
    """Build the assets in ``workdir`` and measure every figure (or those in ``only``).

    Args:
        plan: the sizes.
        workdir: where datasets, checkpoints, stores and runs are written.
        device: ``cpu`` or ``cuda`` for the teacher, training and evaluation.
        only: figure names to measure (default: all of :data:`FIGURES`).
        threads: torch CPU threads (None: :func:`choose_threads`).
        command: the command line, recorded with every figure.

    Returns:
        ``{figure name: figure, ..., "machine": {...}, "plan": {...}}``.
    """
    import torch

    workdir = Path(workdir)
    wanted = list(only or FIGURES)
    n_threads, why = choose_threads(threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    machine = {**machine_info(), "threads_chosen_because": why}
    log.info("benchmarks in %s with %d torch thread(s) (%s)", workdir, n_threads, why)
    results: dict[str, Any] = {}
    try:
        for name in wanted:
            start = time.perf_counter()
            log.info("measuring %s", name)
            results[name] = _MEASURE[name](plan, workdir, device)
            results[name]["bench_command"] = command
            results[name]["wall_s"] = round(time.perf_counter() - start, 1)
    finally:
        torch.set_num_threads(previous)
    machine["load_average_end"] = machine_info()["load_average"]
    results["machine"] = machine
    results["plan"] = asdict(plan)
    return results


def _dataset(plan: BenchPlan, workdir: Path) -> Path:
    """The shared dataset: enough training images for every figure, ``eval_images`` for test."""
    root = workdir / "data"
    if not (root / "metadata.csv").is_file():
        n_train = max(plan.teacher_images, plan.train_batch * (plan.train_steps + 2))
        make_bench_dataset(root, n_train=n_train, n_test=plan.eval_images, size=plan.image_size)
    return root


def _measure_teacher_batch(plan: BenchPlan, workdir: Path, device: str) -> dict[str, Any]:
    from lga.offline.tiny_llava import build_tiny_llava

    llava = workdir / "llava"
    if not (llava / "config.json").is_file():
        build_tiny_llava(llava, hidden_size=64)
    return teacher_batch_speedup(
        _dataset(plan, workdir),
        llava,
        workdir,
        n_images=plan.teacher_images,
        batch_size=plan.teacher_batch,
        max_new_tokens=plan.max_new_tokens,
        repeats=plan.repeats,
        device=device,
    )


def _measure_concurrency(plan: BenchPlan, workdir: Path, device: str) -> dict[str, Any]:
    def at(size: int) -> tuple[Path, dict[str, Any]]:
        root = workdir / f"data-{size}px"
        if not (root / "metadata.csv").is_file():
            make_bench_dataset(root, n_train=plan.concurrency_images, size=size)
        return root, teacher_concurrency_speedup(
            root,
            workdir,
            n_images=plan.concurrency_images,
            concurrency=plan.concurrency,
            latency_s=plan.latency_s,
            max_new_tokens=plan.max_new_tokens,
            repeats=plan.repeats,
        )

    _, result = at(plan.concurrency_image_size)
    result["png_encode"] = png_encode_ms(_dataset(plan, workdir))
    result["note"] = (
        f"{plan.concurrency_image_size} px images: the figure is the latency the client hides. "
        "With large images the PNG encoding (once per image, shared by its prompts) and the "
        "loopback server's decoding share the CPU: see png_encode"
        + (" and large_images" if plan.concurrency_large_image_size else "")
        + ". connections: requests (preflights included) per TCP connection opened; an idle "
        "connection closes after httpx's 5 s keep-alive expiry (uvicorn's default too), so each "
        "round reconnects after the other teacher's round"
    )
    if plan.concurrency_large_image_size:
        large = at(plan.concurrency_large_image_size)[1]
        result["large_images"] = {k: large[k] for k in ("value", "sizes", "seconds", "items_per_s")}
    return result


def _measure_train(plan: BenchPlan, workdir: Path, device: str) -> dict[str, Any]:
    data = _dataset(plan, workdir)
    store = workdir / "descriptions.sqlite"
    if not store.is_file():
        fill_descriptions(store, data)
    result = train_pipeline_efficiency(
        data,
        store,
        random_clip(workdir, depth=plan.clip_depth),
        workdir,
        batch_size=plan.train_batch,
        steps=plan.train_steps,
        num_workers=plan.num_workers,
        device=device,
    )
    if plan.clip_depth is not None:
        result["note"] = (
            f"quick mode: a reduced-depth ViT-B/32-shaped CLIP ({plan.clip_depth} layers per "
            "tower; ViT-B/32 widths, heads, patch, image size and vocabulary) and a small batch; "
            "`lga bench` without --quick uses the full 12+12 layers"
        )
    return result


def _measure_eval(plan: BenchPlan, workdir: Path, device: str) -> dict[str, Any]:
    return eval_cache_speedup(
        _dataset(plan, workdir),
        random_clip(workdir, depth=plan.eval_depth),
        workdir,
        num_workers=plan.num_workers,
        device=device,
    )


def _measure_store(plan: BenchPlan, workdir: Path, device: str) -> dict[str, Any]:
    return store_writes_per_s(workdir, n_rows=plan.store_rows, chunk=plan.store_chunk)


_MEASURE: dict[str, Callable[[BenchPlan, Path, str], dict[str, Any]]] = {
    "teacher_batch_speedup": _measure_teacher_batch,
    "teacher_concurrency_speedup": _measure_concurrency,
    "train_pipeline_efficiency": _measure_train,
    "eval_cache_speedup": _measure_eval,
    "store_writes_per_s": _measure_store,
}


def format_table(results: dict[str, Any]) -> str:
    """The figures as a text table: figure, value, goal, pass/fail."""
    lines = [f"{'figure':<30} {'value':>12} {'goal':>10}  result"]
    for name in FIGURES:
        if name not in results:
            continue
        r = results[name]
        op = ">="
        lines.append(
            f"{name:<30} {_fmt(r['value'], r['unit']):>12} {op + _fmt(r['goal'], r['unit']):>10}  "
            f"{'pass' if r['passed'] else 'FAIL'}"
        )
    connections = results.get("teacher_concurrency_speedup", {}).get("connections", {})
    if connections:
        lines.append(
            "openai: teacher connections: "
            + ", ".join(
                f"{name} {c['requests']} requests over {c['connections']} "
                f"({c['requests_per_connection']:g} per connection)"
                for name, c in connections.items()
            )
        )
    m = results.get("machine", {})
    if m:
        lines.append(
            f"machine: {m['cpu_count']} CPUs, {m['device']}, torch {m['torch']}, "
            f"load {m['load_average']} -> {m.get('load_average_end')}"
        )
    return "\n".join(lines)


def _fmt(value: float, unit: str) -> str:
    if unit == "rows/s":
        return f"{value:,.0f}/s"
    if unit == "x":
        return f"{value:.1f}x"
    return f"{value:.2f}"
