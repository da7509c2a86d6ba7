"""The teacher's figures: ``hf:`` batching and ``openai:`` concurrency (a loopback server)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lga.bench.common import PROMPTS, figure, interleaved, timed


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
    return images, resolve_prompts(ds.config, "waterbirds", only=list(PROMPTS))


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
    from lga.teacher import TeacherConfig, build_teacher

    workdir = Path(workdir)
    images, prompts = _bench_images(data_root, n_images)
    teachers = {}
    for b in (1, batch_size):
        teacher = build_teacher(
            TeacherConfig(
                spec=f"hf:{llava_dir}", max_new_tokens=max_new_tokens, batch_size=b, device=device
            )
        )
        teacher.model.generation_config.min_new_tokens = max_new_tokens  # fixed-length answers
        teachers[f"batch_{b}"] = teacher
    with _describe_runs(images.select(np.arange(1)), teachers, prompts, workdir, runs=1) as warm:
        for fn in warm.values():  # first-call costs (lazy imports, allocator) stay out of timing
            fn()
    try:
        with _describe_runs(images, teachers, prompts, workdir, runs=repeats) as runs:
            t = interleaved(runs, repeats)
        shape = _llava_shape(teachers["batch_1"].model)
    finally:
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

    The server (:class:`lga.offline.fake_chat_server.FakeChatServer`) answers every request after
    ``latency_s``: the figure shows how much of a server's latency the client hides.
    """
    from lga.teacher import TeacherConfig, build_teacher

    workdir = Path(workdir)
    images, prompts = _bench_images(data_root, n_images)
    with chat_server_process(latency_s) as base_url:
        spec = f"openai:{base_url}#bench-model"
        teachers = {
            f"concurrency_{c}": build_teacher(
                TeacherConfig(
                    spec=spec, max_new_tokens=max_new_tokens, concurrency=c, max_retries=0
                )
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
    from lga.offline.fake_chat_server import FakeChatServer

    with FakeChatServer(delay_s=latency_s) as server:
        conn.send(server.base_url)
        try:
            conn.recv()
        except EOFError:
            pass


@contextlib.contextmanager
def chat_server_process(latency_s: float) -> Iterator[str]:
    """A :class:`~lga.offline.fake_chat_server.FakeChatServer` in its own process; its base URL.

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
