"""Performance benchmarks: each stage of the pipeline measured as a ratio, side by side, in one run.

Absolute speeds on a shared machine say little, so every figure compares two ways of doing the
same work in one process, interleaved round by round (best time of ``repeats`` rounds each):

- ``teacher_batch_speedup``: items/s of the ``hf:`` teacher (the real transformers backend, a
  tiny random LLaVA) at batch size B over batch size 1, every answer exactly ``max_new_tokens``.
- ``teacher_concurrency_speedup``: items/s of the ``openai:`` teacher at concurrency C over 1,
  against the loopback chat-completions server with a fixed latency; with the requests sent per
  connection opened (``connections``: keep-alive reuse).
- ``train_pipeline_efficiency``: images/s of a whole ``lga`` optimizer step through the real
  trainer (its batches, description tokens, text tower, loss, clipping, AdamW) over images/s of
  the bare model forward+backward on the same batch shapes, for a ViT-B/32-shaped random CLIP.
- ``eval_cache_speedup``: a second ``lga eval`` of the same frozen model and data over the first.
- ``store_writes_per_s``: description rows committed per second through the store.

Each function returns one *figure*: ``{"value", "goal", "passed", "unit", "command", "sizes",
...timings}``; :func:`run_benchmarks` runs them all on assets it builds offline (dataset, random
checkpoints) and adds the ``machine``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

GOALS = {
    "teacher_batch_speedup": 3.0,
    "teacher_concurrency_speedup": 10.0,
    "train_pipeline_efficiency": 0.9,
    "eval_cache_speedup": 20.0,
    "store_writes_per_s": 5000.0,
}
FIGURES = tuple(GOALS)
PROMPTS = ("object_description", "object_keywords", "background_description", "background_keywords")

# Words the random students' tokenizer knows; descriptions are drawn from them (40 words, like a
# concise LLaVA answer), so every image has its own text, as with a real teacher.
WORDS = (
    "the bird has a long neck short neck webbed feet clawed feet flat bill hooked bill conical "
    "bill white grey brown black plumage wings spread perched swimming standing on water land "
    "lake ocean forest grass trees sky it is a gull duck heron cormorant sparrow finch warbler "
    "woodpecker small medium large with and of in photo picture close-up seabird songbird"
).split()


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


# ---------------------------------------------------------------------------------------------
# Timing


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


# ---------------------------------------------------------------------------------------------
# Assets, built offline


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

    The tiny-birds drawings (:func:`lga.testing.tiny_birds.make_tiny_birds`, with their
    ``attributes.csv``) get per-pixel noise so that decoding costs what a photo of that size
    costs; splits are consecutive img_ids, so every 4 images cover the 4 groups.
    """
    import pandas as pd
    from PIL import Image

    from lga.testing.tiny_birds import make_tiny_birds

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
        Row(key, img_id, prompt, "bench", "bench-teacher", "bench", DONE, _words(rng, 40))
        for img_id in ds.img_ids.tolist()
        for prompt in PROMPTS
    ]
    with DescriptionStore(store_path) as store:
        store.put(rows)
    return Path(store_path)


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n)) + "."


# Widths of the two CLIP shapes the benchmarks use (CLIPConfig's defaults are ViT-B/32).
CLIP_SHAPES: dict[str, dict[str, dict[str, int]]] = {
    "vit-b32": {"vision": {}, "text": {}, "top": {}},
    "vit-l14": {
        "vision": dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
            num_attention_heads=16, patch_size=14,
        ),
        "text": dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12
        ),
        "top": dict(projection_dim=768),
    },
}  # fmt: skip


def build_random_clip(
    out_dir: str | Path, *, shape: str = "vit-b32", depth: int | None = None, seed: int = 0
) -> Path:
    """A CLIP-shaped ``CLIPModel`` with random weights and a CLIP processor, saved like the hub's.

    Args:
        out_dir: the checkpoint folder.
        shape: ``vit-b32`` (``CLIPConfig`` defaults) or ``vit-l14`` (openai/clip-vit-large-patch14).
        depth: layers per tower (None: the shape's own); widths, heads, patch, image size and
            vocabulary stay those of the shape.
        seed: torch seed of the weights.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from lga.testing.tiny_clip import DEFAULT_CORPUS, build_word_tokenizer

    tokenizer = build_word_tokenizer([*DEFAULT_CORPUS, " ".join(WORDS)], max_length=77)
    bos, eos = (
        tokenizer.convert_tokens_to_ids(t) for t in (tokenizer.bos_token, tokenizer.eos_token)
    )
    dims = CLIP_SHAPES[shape]
    layers = {} if depth is None else {"num_hidden_layers": depth}
    config = CLIPConfig(
        text_config={
            **dims["text"],
            **layers,
            "eos_token_id": eos,
            "bos_token_id": bos,
            "pad_token_id": eos,
        },
        vision_config={**dims["vision"], **layers},
        **dims["top"],
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------
# Teacher


@contextlib.contextmanager
def _describe_runs(
    images: Any, teachers: dict[str, Any], prompts: list, workdir: Path, *, runs: int
) -> Iterator[dict[str, Callable[[], None]]]:
    """Timed callables: each call is one ``describe`` run of a teacher into a fresh store.

    The ``runs`` stores of each teacher are created beforehand (creating an SQLite file is not
    the teacher's throughput) and closed on exit.
    """
    from lga.errors import LgaError
    from lga.store.core import DescriptionStore
    from lga.teacher import describe

    stores = {
        name: [
            DescriptionStore(workdir / f"describe-{name}-{uuid.uuid4().hex[:8]}.sqlite")
            for _ in range(runs)
        ]
        for name in teachers
    }

    def run(name: str) -> None:
        summary = describe(images, teachers[name], stores[name].pop(), prompts, progress=False)
        if summary.failed or summary.done != len(images) * len(prompts):
            raise LgaError(f"benchmark teacher {name}: {summary.line()}")

    opened = [store for left in stores.values() for store in left]
    try:
        yield {name: (lambda name=name: run(name)) for name in teachers}
    finally:
        for store in opened:
            store.close()


def _bench_images(data_root: str | Path, n_images: int) -> tuple[Any, list]:
    from lga.data.dataset import load_dataset
    from lga.teacher import resolve_prompts, select_images

    ds = load_dataset(data_root, check_images=False)
    images = select_images(ds, split="train", limit=n_images)
    return images, resolve_prompts(ds.spec, "waterbirds", only=list(PROMPTS))


def teacher_batch_speedup(
    data_root: str | Path,
    llava_dir: str | Path,
    workdir: str | Path,
    *,
    n_images: int = 16,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    repeats: int = 2,
    device: str = "cpu",
) -> dict[str, Any]:
    """Items/s of the ``hf:`` teacher at ``batch_size`` over batch size 1 (4 prompts per image).

    Both teachers are the real :class:`lga.teacher.hf.HFTeacher` run by the real describe loop
    into fresh stores; every answer is forced to exactly ``max_new_tokens`` tokens
    (``min_new_tokens``), so both sides generate the same number of tokens.
    """
    from lga.teacher import TeacherOptions, build_teacher

    workdir = Path(workdir)
    images, prompts = _bench_images(data_root, n_images)
    teachers = {}
    for b in (1, batch_size):
        opts = TeacherOptions(max_new_tokens=max_new_tokens, batch_size=b, device=device)
        teacher = build_teacher(f"hf:{llava_dir}", opts)
        teacher.model.generation_config.min_new_tokens = max_new_tokens  # fixed-length answers
        teachers[f"batch_{b}"] = teacher
    with _describe_runs(images.select(np.arange(1)), teachers, prompts, workdir, runs=1) as warm:
        for fn in warm.values():  # first-call costs (lazy imports, allocator) stay out of timing
            fn()
    with _describe_runs(images, teachers, prompts, workdir, runs=repeats) as runs:
        t = interleaved(runs, repeats)
    shape = _llava_shape(teachers["batch_1"].model)
    for teacher in teachers.values():
        teacher.close()
    n = len(images) * len(prompts)
    t1, tb = t["batch_1"], t[f"batch_{batch_size}"]
    return figure(
        "teacher_batch_speedup",
        t1 / tb,
        unit="x",
        command=f"lga describe --teacher hf:<tiny random llava> --batch-size {batch_size} "
        f"vs --batch-size 1 --max-new-tokens {max_new_tokens} --device {device}",
        sizes={
            "items": n,
            "images": len(images),
            "prompts": len(prompts),
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "device": device,
            "model": shape,
            "repeats": repeats,
        },
        seconds={"batch_1": round(t1, 3), f"batch_{batch_size}": round(tb, 3)},
        items_per_s={"batch_1": round(n / t1, 2), f"batch_{batch_size}": round(n / tb, 2)},
        tokens_per_s={
            "batch_1": round(n * max_new_tokens / t1, 1),
            f"batch_{batch_size}": round(n * max_new_tokens / tb, 1),
        },
    )


def _llava_shape(model: Any) -> dict[str, Any]:
    text = model.config.text_config
    return {
        "text_layers": text.num_hidden_layers,
        "text_hidden": text.hidden_size,
        "vision_layers": model.config.vision_config.num_hidden_layers,
        "image_tokens": model.config.image_seq_length,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def teacher_concurrency_speedup(
    data_root: str | Path,
    workdir: str | Path,
    *,
    n_images: int = 16,
    concurrency: int = 16,
    latency_s: float = 0.05,
    max_new_tokens: int = 16,
    repeats: int = 1,
) -> dict[str, Any]:
    """Items/s of the ``openai:`` teacher at ``concurrency`` over 1, against a loopback server.

    The server (:class:`lga.testing.fake_chat_server.FakeChatServer`) answers every request after
    ``latency_s``: the figure shows how much of a server's latency the client hides.
    """
    from lga.teacher import TeacherOptions, build_teacher

    workdir = Path(workdir)
    images, prompts = _bench_images(data_root, n_images)
    with chat_server_process(latency_s) as base_url:
        spec = f"openai:{base_url}#bench-model"
        teachers = {
            f"concurrency_{c}": build_teacher(
                spec,
                TeacherOptions(
                    max_new_tokens=max_new_tokens, concurrency=c, timeout=30.0, max_retries=0
                ),
            )
            for c in (1, concurrency)
        }
        try:
            with _describe_runs(images, teachers, prompts, workdir, runs=repeats) as runs:
                t = interleaved(runs, repeats)
        finally:
            for teacher in teachers.values():
                teacher.close()
    n = len(images) * len(prompts)
    t1, tc = t["concurrency_1"], t[f"concurrency_{concurrency}"]
    return figure(
        "teacher_concurrency_speedup",
        t1 / tc,
        unit="x",
        command=f"lga describe --teacher openai:<loopback, {latency_s * 1000:.0f} ms>#model "
        f"--concurrency {concurrency} vs --concurrency 1",
        sizes={
            "items": n,
            "images": len(images),
            "image_px": _image_px(images),
            "prompts": len(prompts),
            "concurrency": concurrency,
            "latency_s": latency_s,
            "repeats": repeats,
        },
        seconds={"concurrency_1": round(t1, 3), f"concurrency_{concurrency}": round(tc, 3)},
        items_per_s={
            "concurrency_1": round(n / t1, 2),
            f"concurrency_{concurrency}": round(n / tc, 2),
            "ideal": round(concurrency / latency_s, 1),
        },
        connections={name: _per_connection(tr.connection_stats) for name, tr in teachers.items()},
    )


def _per_connection(stats: dict[str, int]) -> dict[str, float]:
    """Requests (the preflights included) and connections opened over all runs of a teacher."""
    per = stats["requests"] / stats["connections"] if stats["connections"] else 0.0
    return {**stats, "requests_per_connection": round(per, 1)}


def _image_px(images: Any) -> int:
    from PIL import Image

    with Image.open(images.image_path(0)) as im:
        return max(im.size)


def png_encode_ms(data_root: str | Path, *, n_images: int = 4) -> dict[str, float]:
    """Milliseconds to PNG-encode one image for a request, the ``openai:`` client's main CPU cost.

    Paid once per image (its prompts share the encoding); the client's ceiling on one core is
    about ``4 prompts / encode time`` items/s.
    """
    from lga.teacher.openai_compat import image_data_url

    images, _ = _bench_images(data_root, n_images)
    loaded = [images.load_image(i) for i in range(len(images))]
    seconds = min(timed(lambda: [image_data_url(im) for im in loaded]) for _ in range(2))
    ms = 1000 * seconds / len(loaded)
    return {
        "image_px": _image_px(images),
        "ms": round(ms, 2),
        "items_per_s_per_core": round(4000 / ms, 1),
    }


def _serve(conn: Any, latency_s: float) -> None:
    """Child process: run the loopback server until told to stop (or the parent goes away)."""
    from lga.testing.fake_chat_server import FakeChatServer

    with FakeChatServer(delay_s=latency_s) as server:
        conn.send(server.base_url)
        try:
            conn.recv()
        except EOFError:
            pass


@contextlib.contextmanager
def chat_server_process(latency_s: float) -> Iterator[str]:
    """A :class:`~lga.testing.fake_chat_server.FakeChatServer` in its own process; its base URL.

    A real server is another process: in this one its threads would take the client's GIL.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, latency_s), daemon=True)
    proc.start()
    try:
        if not parent.poll(120):
            raise TimeoutError("the benchmark chat server did not start within 120 s")
        yield parent.recv()
    finally:
        with contextlib.suppress(OSError):  # the child may be gone already
            parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


# ---------------------------------------------------------------------------------------------
# Training


def _fit_config(
    data_root: Path,
    store: Path,
    clip_dir: Path,
    *,
    batch: int,
    steps: int,
    nw: int,
    device: str,
    train: dict[str, Any] | None = None,
) -> Any:
    from lga.train.config import FitConfig

    return FitConfig.model_validate(
        {
            "method": "lga",
            "data": {"root": data_root, "num_workers": nw, "check_images": False},
            "student": {"spec": str(clip_dir), "device": device},
            "sample": {"n_train": None},
            "descriptions": {"store": store},
            "train": {
                "batch_size": batch,
                "max_steps": steps,
                "warmup_ratio": 0.0,
                **(train or {}),
            },
            "eval": {"at_start": False},
        }
    )


def train_pipeline_efficiency(
    data_root: str | Path,
    store_path: str | Path,
    clip_dir: str | Path,
    workdir: str | Path,
    *,
    batch_size: int = 32,
    steps: int = 3,
    num_workers: int = 2,
    device: str = "cpu",
    train: dict[str, Any] | None = None,
    count_flops: bool = False,
) -> dict[str, Any]:
    """Images/s of a full ``lga`` optimizer step over images/s of the bare forward+backward.

    The full step is :meth:`lga.train.trainer.FineTuner.optimizer_step` of the trainer that
    ``lga fit --method lga`` builds (:func:`lga.train.fit.build_fine_tuner`, default settings):
    the next batch of the trainer's own stream (pixels preprocessed once, ``train.cache_pixels``),
    the batch's description tokens from the text table, both towers, the lga loss (supcon +
    instance), backward, gradient clipping, AdamW and the schedule. The bare step runs the same
    model's two towers on one of those batches held ready (its pixels and distinct descriptions:
    the same shapes) and back-propagates the sum of the embeddings. They take turns, ``steps``
    times each after one warm-up step of each; best times are compared. ``optimizer_step_s``
    (AdamW alone) is reported for the breakdown.

    Args:
        train: ``train.*`` settings of the fit config (e.g. ``{"gradient_checkpointing": True}``).
        count_flops: also count the model FLOPs of the bare step (forward + backward, no
            recomputation) with ``torch.utils.flop_counter``: ``flops_per_step``.
    """
    from lga.train.fit import (
        build_fine_tuner,
        load_run_data,
        make_accelerator,
        release_accelerator,
    )

    workdir = Path(workdir)
    cfg = _fit_config(
        Path(data_root),
        Path(store_path),
        Path(clip_dir),
        batch=batch_size,
        steps=steps + 1,
        nw=num_workers,
        device=device,
        train=train,
    )
    out = workdir / "train-run"
    acc = make_accelerator(cfg, out)
    device, precision = str(acc.device), acc.mixed_precision
    try:
        data = load_run_data(cfg, check_images=False, progress=False)
        tuner = build_fine_tuner(cfg, data, out, acc, progress=False)
        batches = tuner.batches()  # the trainer's own batch stream, epoch after epoch
        bare = _bare_step(tuner, *next(batches), acc)
        tuner.model.train()
        bare()  # warm-up: allocator, first-call costs, optimizer state
        tuner.optimizer_step(batches)
        opt_s = _optimizer_seconds(tuner)
        flops = _count_flops(bare) if count_flops else None
        samples = interleaved_samples(
            {"bare": bare, "full": lambda: tuner.optimizer_step(batches)}, steps
        )
        t = {k: min(v) for k, v in samples.items()}
        batches.close()
    finally:
        release_accelerator(acc)
    model = tuner.student.model
    return figure(
        "train_pipeline_efficiency",
        t["bare"] / t["full"],
        unit="ratio",
        command=f"lga fit --method lga --batch-size {batch_size} --num-workers {num_workers} "
        f"(one optimizer step) vs bare forward+backward",
        sizes={
            "batch_size": batch_size,
            "timed_steps": steps,
            "num_workers": num_workers,
            "device": device,
            "mixed_precision": precision,
            "model": _clip_shape(model),
            "texts_per_step": int(bare.n_texts),
            "text_tokens": int(bare.n_tokens),
        },
        seconds={"bare": round(t["bare"], 3), "full": round(t["full"], 3)},
        images_per_s={
            "bare": round(batch_size / t["bare"], 2),
            "full": round(batch_size / t["full"], 2),
        },
        samples_s={k: [round(x, 3) for x in v] for k, v in samples.items()},
        median_ratio=round(float(np.median(samples["bare"]) / np.median(samples["full"])), 3),
        optimizer_step_s=round(opt_s, 3),
        optimizer={k: tuner.optimizer.defaults.get(k) for k in ("fused", "foreach")},
        train_settings=train or {},
        **({"flops_per_step": flops} if flops is not None else {}),
    )


def _count_flops(step: Callable[[], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


class _BareStep:
    """Forward of both towers on fixed tensors, backward of their sum; grads dropped."""

    def __init__(self, model: Any, pixels: Any, ids: Any, mask: Any, acc: Any):
        self.model, self.pixels, self.ids, self.mask, self.acc = model, pixels, ids, mask, acc
        self.n_texts, self.n_tokens = ids.shape

    def __call__(self) -> None:
        from lga.student.model import pooled

        with self.acc.autocast():
            u = pooled(self.model.get_image_features(pixel_values=self.pixels))  # (B, D)
            v = pooled(self.model.get_text_features(input_ids=self.ids, attention_mask=self.mask))
            loss = u.float().sum() + v.float().sum()
        loss.backward()
        self.model.zero_grad(set_to_none=True)


def _bare_step(tuner: Any, pixels: Any, rows: Any, acc: Any) -> _BareStep:
    """The bare step on one real batch of the trainer: its pixels and its distinct texts."""
    import torch

    dev = acc.device
    index = torch.cat([tuner.table.per_image[name][rows] for name in tuner.method.image_texts])
    ids, mask = tuner.table.tokens(torch.unique(index))  # (T, L): what the full step encodes
    model = acc.unwrap_model(tuner.model).model
    return _BareStep(model, pixels.to(dev), ids.to(dev), mask.to(dev), acc)


def _optimizer_seconds(tuner: Any) -> float:
    """Seconds of one AdamW step alone (gradients of ones), for the breakdown."""
    params = [p for g in tuner.optimizer.param_groups for p in g["params"]]
    for p in params:
        p.grad = p.new_zeros(p.shape)
    seconds = timed(tuner.optimizer.step)
    tuner.optimizer.zero_grad(set_to_none=True)
    return seconds


def _clip_shape(model: Any) -> dict[str, Any]:
    v, t = model.config.vision_config, model.config.text_config
    return {
        "vision": f"{v.num_hidden_layers}x{v.hidden_size}, patch {v.patch_size}, {v.image_size}px",
        "text": f"{t.num_hidden_layers}x{t.hidden_size}, vocab {t.vocab_size}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }


# ---------------------------------------------------------------------------------------------
# Evaluation


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

    Both go through ``lga.cli.main(["eval", ...])`` in this process (interpreter start-up and
    imports, the same in both, are left out), with a fresh cache folder (``$LGA_CACHE`` and
    ``--cache-dir``): the first checks and encodes every image, the second finds the images
    checked and the features cached.
    """
    from lga.cli import main

    workdir = Path(workdir)
    cache = workdir / "eval-cache"
    args = [
        "eval", "--data", str(data_root), "--student", str(clip_dir), "--split", split,
        "--batch-size", str(batch_size), "--num-workers", str(num_workers),
        "--device", device, "--cache-dir", str(cache),
    ]  # fmt: skip
    seconds = []
    with _env(LGA_CACHE=str(cache)), contextlib.redirect_stdout(io.StringIO()):
        for k in (1, 2):
            seconds.append(
                timed(lambda k=k: _check(main([*args, "--out", str(workdir / f"eval-{k}")])))
            )
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


def _check(code: int) -> None:
    if code != 0:
        from lga.errors import LgaError

        raise LgaError(f"benchmark command exited with {code}")


# ---------------------------------------------------------------------------------------------
# Store


def store_writes_per_s(
    workdir: str | Path, *, n_rows: int = 20_000, chunk: int = 16, text_words: int = 40
) -> dict[str, Any]:
    """Description rows committed per second by :meth:`DescriptionStore.put`.

    Rows are committed ``chunk`` per transaction, as the describe loop commits a teacher batch;
    the same is measured one row per transaction (the worst case: a server teacher answering
    one item at a time) for the record.
    """
    from lga.store.core import DONE, DescriptionStore, Row

    workdir = Path(workdir)
    rng = np.random.default_rng(0)
    texts = [_words(rng, text_words) for _ in range(256)]

    def rows(offset: int, n: int) -> list[Row]:
        return [
            Row("bench@0", offset + i // 4, PROMPTS[i % 4], "h", "bench", "s", DONE, texts[i % 256])
            for i in range(n)
        ]

    def write(name: str, size: int, n: int) -> float:
        data = rows(0, n)
        with DescriptionStore(workdir / f"store-{name}.sqlite") as store:
            return timed(lambda: [store.put(data[i : i + size]) for i in range(0, n, size)])

    t_chunk = write(f"chunk{chunk}", chunk, n_rows)
    n_single = max(1, n_rows // 4)
    t_single = write("chunk1", 1, n_single)
    return figure(
        "store_writes_per_s",
        n_rows / t_chunk,
        unit="rows/s",
        command=f"DescriptionStore.put, {chunk} rows per transaction (lga describe's commits)",
        sizes={"rows": n_rows, "rows_per_transaction": chunk, "text_words": text_words},
        seconds=round(t_chunk, 3),
        one_row_per_transaction={
            "rows": n_single,
            "rows_per_s": round(n_single / t_single, 1),
        },
    )


# ---------------------------------------------------------------------------------------------
# All of them


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
    from lga.testing.tiny_llava import build_tiny_llava

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


def random_clip(workdir: str | Path, *, shape: str = "vit-b32", depth: int | None = None) -> Path:
    """``workdir/clip-<shape>-depth<n>``, built by :func:`build_random_clip` unless there."""
    out = Path(workdir) / f"clip-{shape}-depth{depth or 'full'}"
    if not (out / "config.json").is_file():
        build_random_clip(out, shape=shape, depth=depth)
    return out


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
