"""``lga bench``: every measurement on tiny sizes, the JSON schema, and the caches made for it.

Timing goals are not asserted here (they belong to the benchmark's output); these tests check
that each measurement runs the real code path and reports what it documents, and that the
performance fixes (validation cache, one image load and one PNG encoding per image) keep their
correctness guarantees.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from lga.bench import common, run
from lga.bench.eval_cache import eval_cache_speedup
from lga.bench.store import store_writes_per_s
from lga.bench.teacher import teacher_batch_speedup, teacher_concurrency_speedup
from lga.bench.train import _fit_config, train_pipeline_efficiency
from lga.cli import main
from lga.testing.bench_data import fill_descriptions, make_bench_dataset

FIGURE_KEYS = {"value", "goal", "passed", "unit", "command", "sizes"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Noisy 32 px birds: 8 train, 4 val, 8 test images."""
    return make_bench_dataset(
        tmp_path_factory.mktemp("bench") / "data", n_train=8, n_val=4, n_test=8, size=32
    )


@pytest.fixture(scope="module")
def store(data, tmp_path_factory) -> Path:
    return fill_descriptions(tmp_path_factory.mktemp("store") / "d.sqlite", data)


@pytest.fixture(scope="module")
def llava(tmp_path_factory) -> Path:
    from lga.testing.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "llava")


def check_figure(result: dict, name: str) -> None:
    assert FIGURE_KEYS <= set(result)
    assert result["goal"] == common.GOALS[name]
    assert result["value"] > 0
    assert result["passed"] == (result["value"] >= result["goal"])
    json.dumps(result)  # serialisable as it is


# ---------------------------------------------------------------------------------------------
# The measurements, tiny


def test_bench_dataset_has_three_splits_and_descriptions(data, store):
    from lga.data.dataset import load_dataset
    from lga.store.core import DescriptionStore

    ds = load_dataset(data)
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [8, 4, 8]
    assert set(ds.split("val").group_counts().values()) == {1}  # every group in 4 images
    with DescriptionStore(store, create=False) as s:
        texts = s.texts("object_description")
    assert len(texts) == len(ds) and len(set(texts.values())) == len(ds)  # one text per image


def test_store_writes_per_s(tmp_path):
    r = store_writes_per_s(tmp_path, n_rows=64, chunk=8)
    check_figure(r, "store_writes_per_s")
    assert r["sizes"] == {"rows": 64, "rows_per_transaction": 8, "text_words": 40}
    assert r["one_row_per_transaction"]["rows_per_s"] > 0


def test_teacher_batch_speedup(data, llava, tmp_path):
    r = teacher_batch_speedup(
        data, llava, tmp_path, n_images=2, batch_size=4, max_new_tokens=2, repeats=1
    )
    check_figure(r, "teacher_batch_speedup")
    assert r["sizes"]["items"] == 8 and r["sizes"]["batch_size"] == 4
    assert set(r["tokens_per_s"]) == {"batch_1", "batch_4"}


@pytest.mark.slow  # spawns the loopback server in its own process
def test_teacher_concurrency_speedup(data, tmp_path):
    r = teacher_concurrency_speedup(
        data, tmp_path, n_images=2, concurrency=4, latency_s=0.01, repeats=1
    )
    check_figure(r, "teacher_concurrency_speedup")
    assert r["sizes"]["items"] == 8 and r["sizes"]["image_px"] == 32
    assert r["items_per_s"]["ideal"] == 400.0
    # 8 requests and a preflight per teacher, over keep-alive connections (at most C of them).
    for name, c in (("concurrency_1", 1), ("concurrency_4", 4)):
        stats = r["connections"][name]
        assert stats["requests"] == 9 and 1 <= stats["connections"] <= c
        assert stats["requests_per_connection"] == round(9 / stats["connections"], 1)
    assert "requests over" in run.format_table({"teacher_concurrency_speedup": r})


def test_train_pipeline_efficiency_times_the_real_trainer(data, store, tiny_clip_dir, tmp_path):
    r = train_pipeline_efficiency(
        data, store, tiny_clip_dir, tmp_path, batch_size=4, steps=1, num_workers=0,
        count_flops=True,
    )  # fmt: skip
    check_figure(r, "train_pipeline_efficiency")
    assert r["sizes"]["batch_size"] == 4 and r["sizes"]["texts_per_step"] == 4
    assert r["optimizer"]["fused"] is True  # the trainer's AdamW is the fused one
    assert r["flops_per_step"] > 0 and r["optimizer_step_s"] > 0


def test_eval_cache_speedup_second_run_hits_both_caches(data, tiny_clip_dir, tmp_path):
    r = eval_cache_speedup(data, tiny_clip_dir, tmp_path, num_workers=0)
    check_figure(r, "eval_cache_speedup")
    assert r["sizes"]["images"] == 8
    cache = tmp_path / "eval-cache"
    assert list(cache.glob("features/*/features.safetensors"))
    (validated,) = cache.glob("validated/*.json")
    assert len(json.loads(validated.read_text())["valid"]) == 8
    for k in (1, 2):
        assert (tmp_path / f"eval-{k}" / "metrics.json").is_file()


# ---------------------------------------------------------------------------------------------
# The command and its JSON


TINY = common.BenchPlan(
    image_size=32,
    teacher_images=2,
    teacher_batch=4,
    max_new_tokens=2,
    concurrency_images=2,
    concurrency_image_size=32,
    concurrency_large_image_size=None,
    concurrency=4,
    latency_s=0.01,
    train_batch=4,
    train_steps=1,
    num_workers=0,
    eval_images=8,
    store_rows=64,
    repeats=1,
)


@pytest.mark.slow  # every figure end to end on tiny sizes
def test_bench_command_json_schema(tmp_path, tiny_clip_dir, monkeypatch, capsys):
    # The real --quick sizes take about two minutes: the command runs here on tiny ones.
    monkeypatch.setattr(common, "QUICK", TINY)
    monkeypatch.setattr(run, "random_clip", lambda *a, **k: tiny_clip_dir)
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out), "--workdir", str(tmp_path / "w")]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {*common.FIGURES, "machine", "plan"}
    for name in common.FIGURES:
        check_figure(results[name], name)
        assert results[name]["bench_command"].startswith("lga")
    machine = results["machine"]
    assert {"cpu_count", "torch", "device", "platform", "torch_threads"} <= set(machine)
    assert results["plan"]["quick"] is True and results["plan"]["train_batch"] == 4
    table = capsys.readouterr().out
    for name in common.FIGURES:
        assert name in table
    assert "pass" in table or "FAIL" in table


def test_bench_command_only_one_figure(tmp_path, capsys):
    import torch

    threads_before = torch.get_num_threads()
    out = tmp_path / "b.json"
    code = main(["bench", "--only", "store_writes_per_s", "--json", str(out), "--threads", "1"])
    assert code == 0
    results = json.loads(out.read_text())
    assert set(results) == {"store_writes_per_s", "machine", "plan"}
    assert results["machine"]["torch_threads"] == 1
    import torch

    assert torch.get_num_threads() == threads_before  # restored after the run
    assert results["store_writes_per_s"]["sizes"]["rows"] == common.FULL.store_rows


def test_bench_command_refuses_unknown_figure(capsys):
    assert main(["bench", "--only", "nope"]) == 1
    assert "unknown figure" in capsys.readouterr().err


def test_format_table_marks_pass_and_fail():
    ok = common.figure("store_writes_per_s", 9000, unit="rows/s", command="c", sizes={})
    bad = common.figure("eval_cache_speedup", 2.0, unit="x", command="c", sizes={})
    table = run.format_table({"store_writes_per_s": ok, "eval_cache_speedup": bad})
    assert "9,000/s" in table and "pass" in table
    assert "2.0x" in table and "FAIL" in table


def test_choose_threads(monkeypatch):
    assert common.choose_threads(3) == (3, "asked for (--threads)")
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    assert common.choose_threads()[0] == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    import torch

    assert common.choose_threads() == (torch.get_num_threads(), "torch default")


def test_interleaved_keeps_each_best_time(monkeypatch):
    times = iter([5.0, 1.0, 2.0, 3.0])  # rounds: (a=5, b=1), (a=2, b=3)
    monkeypatch.setattr(common, "timed", lambda fn: next(times))
    assert common.interleaved({"a": lambda: None, "b": lambda: None}, 2) == {"a": 2.0, "b": 1.0}
    order: list[str] = []
    fns = {k: (lambda k=k: order.append(k)) for k in "ab"}
    monkeypatch.setattr(common, "timed", lambda fn: fn() or 1.0)
    assert common.interleaved_samples(fns, 2) == {"a": [1.0, 1.0], "b": [1.0, 1.0]}
    assert order == ["a", "b", "a", "b"]  # taking turns


def test_gpu_path_settings(tmp_path, data, store, tiny_clip_dir):
    import torch
    from accelerate.utils import DynamoBackend

    from lga.train.fit import make_accelerator, release_accelerator
    from lga.train.trainer import make_adamw

    opt = make_adamw([{"params": [torch.nn.Parameter(torch.zeros(3))]}], lr=1e-3)
    assert opt.defaults["fused"] is True
    cfg = _fit_config(
        data, store, tiny_clip_dir, batch=4, steps=1, nw=0, device="cpu", train={"compile": True}
    )
    acc = make_accelerator(cfg, tmp_path)
    try:
        assert acc.state.dynamo_plugin.backend == DynamoBackend.INDUCTOR
    finally:
        release_accelerator(acc)


# ---------------------------------------------------------------------------------------------
# The validation cache


@pytest.fixture()
def decodes(monkeypatch) -> list[str]:
    """Names of the images decoded by dataset validation."""
    import lga.data.dataset as dataset

    seen: list[str] = []
    real = dataset.load_rgb

    def counting(path, *a, **k):
        seen.append(Path(path).name)
        return real(path, *a, **k)

    monkeypatch.setattr(dataset, "load_rgb", counting)
    return seen


def test_validation_cache_skips_unchanged_images(small_dataset, tmp_path, monkeypatch, decodes):
    from lga.data.dataset import check_dataset

    monkeypatch.setenv("LGA_CACHE", str(tmp_path / "cache"))
    first = check_dataset(small_dataset)
    assert len(decodes) == 36 and not first.problems
    decodes.clear()
    second = check_dataset(small_dataset)
    assert decodes == [] and not second.problems
    assert len(second.table) == len(first.table)
    check_dataset(small_dataset, validation_cache=False)
    assert len(decodes) == 36  # off: every image decoded


@pytest.mark.parametrize("change", ["truncate", "rewrite", "touch"])
def test_validation_cache_rechecks_a_changed_file(
    small_dataset, tmp_path, monkeypatch, decodes, change
):
    from lga.data.dataset import check_dataset

    monkeypatch.setenv("LGA_CACHE", str(tmp_path / "cache"))
    check_dataset(small_dataset)
    victim = small_dataset / "images" / "005.jpg"
    if change == "truncate":
        victim.write_bytes(victim.read_bytes()[:40])
    elif change == "rewrite":  # same size, other content
        raw = bytearray(victim.read_bytes())
        raw[-200:-2] = bytes(198)
        victim.write_bytes(bytes(raw))
    else:
        st = victim.stat()
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    decodes.clear()
    res = check_dataset(small_dataset)
    assert decodes == ["005.jpg"]
    if change == "truncate":
        assert [p.file for p in res.problems] == ["images/005.jpg"]
        decodes.clear()
        res = check_dataset(small_dataset)  # a faulty file is never recorded as valid
        assert decodes == ["005.jpg"] and len(res.problems) == 1


def test_validation_cache_is_per_folder_and_survives_garbage(
    small_dataset, tmp_path, monkeypatch, decodes
):
    import shutil

    from lga.data.dataset import check_dataset
    from lga.data.validation_cache import ValidationCache

    monkeypatch.setenv("LGA_CACHE", str(tmp_path / "cache"))
    check_dataset(small_dataset)
    copy = shutil.copytree(small_dataset, tmp_path / "copy")
    decodes.clear()
    check_dataset(copy)
    assert len(decodes) == 36  # another folder: its own entries
    cache = ValidationCache(copy, max_pixels=1)
    assert len(cache) == 0  # another decompression limit: another cache
    from lga.data.images import MAX_PIXELS

    ValidationCache(copy, max_pixels=MAX_PIXELS).file.write_text("{not json")
    decodes.clear()
    assert not check_dataset(copy).problems  # unreadable cache: ignored, images decoded
    assert len(decodes) == 36


def test_validation_cache_root_matches_the_feature_cache(tmp_path, monkeypatch):
    from lga.data.validation_cache import cache_root
    from lga.student.cache import default_cache_dir

    assert cache_root() == default_cache_dir()
    monkeypatch.setenv("LGA_CACHE", str(tmp_path))
    assert cache_root() == default_cache_dir() == tmp_path


# ---------------------------------------------------------------------------------------------
# One load and one PNG encoding per image for a server teacher


def _hammer(fn, n: int = 8) -> list:
    out: list = [None] * n
    barrier = threading.Barrier(n)

    def work(k: int) -> None:
        barrier.wait()
        out[k] = fn()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_image_source_loads_an_image_once_for_concurrent_prompts(small_dataset, monkeypatch):
    from lga.data.dataset import load_dataset
    from lga.teacher.runner import ImageSource
    from lga.teacher.visual import VisualPrompt

    ds = load_dataset(small_dataset, check_images=False)
    loads: list[int] = []
    real = ds.load_image

    def slow_load(i: int) -> Image.Image:
        loads.append(i)
        time.sleep(0.05)
        return real(i)

    monkeypatch.setattr(ds, "load_image", slow_load)
    source = ImageSource(ds, VisualPrompt.NONE)
    images = _hammer(lambda: source(int(ds.img_ids[0])))
    assert len(loads) == 1 and all(im is images[0] for im in images)


def test_image_source_load_error_reaches_every_waiter(small_dataset, monkeypatch):
    from lga.data.dataset import load_dataset
    from lga.teacher.runner import ImageSource
    from lga.teacher.visual import VisualPrompt

    ds = load_dataset(small_dataset, check_images=False)

    def broken(i: int) -> Image.Image:
        time.sleep(0.02)
        raise OSError("gone")

    monkeypatch.setattr(ds, "load_image", broken)
    source = ImageSource(ds, VisualPrompt.NONE)

    def attempt() -> str:
        try:
            source(int(ds.img_ids[0]))
        except OSError as e:
            return str(e)
        return "loaded"

    assert _hammer(attempt) == ["gone"] * 8
    assert source._loading == {}  # no gate left behind


def test_openai_teacher_encodes_each_image_once(monkeypatch):
    import lga.teacher.openai_compat as oc

    calls: list[int] = []
    real = oc.image_data_url

    def counting(image: Image.Image) -> str:
        calls.append(id(image))
        time.sleep(0.02)
        return real(image)

    monkeypatch.setattr(oc, "image_data_url", counting)
    urls = oc._ImageURLs(size=2)
    a, b = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    assert len(set(_hammer(lambda: urls(a)))) == 1 and len(calls) == 1
    assert urls(b) != urls(a) and len(calls) == 2
    urls(Image.new("RGB", (8, 8), "green"))  # evicts b, the least recently used (size 2)
    urls(b)
    assert len(calls) == 4
    assert urls(a).startswith("data:image/png;base64,")


# ---------------------------------------------------------------------------------------------
# benchmarks/gpu_check.py


def _gpu_check():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_without_cuda_says_so(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _gpu_check().main([]) == 0
    captured = capsys.readouterr()
    assert "no CUDA GPU" in captured.err
    assert json.loads(captured.out) == {"skipped": "no CUDA device"}


def test_gpu_check_peak_lookup():
    gc = _gpu_check()
    assert gc.peak_tflops("NVIDIA H200", None) == 989.4
    assert gc.peak_tflops("NVIDIA H100 PCIe", None) == 756.0
    assert gc.peak_tflops("NVIDIA A100-SXM4-80GB", None) == 312.0
    assert gc.peak_tflops("Mystery GPU", None) is None
    assert gc.peak_tflops("Mystery GPU", 100.0) == 100.0


@pytest.mark.slow  # the whole script on tiny shapes on the CPU
def test_gpu_check_smoke(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    argv = ["--smoke", "--clip-batch", "2", "--clip-steps", "1", "--new-tokens", "2",
            "--batches", "1,2", "--json", str(out), "--workdir", str(tmp_path / "w")]  # fmt: skip
    assert _gpu_check().main(argv) == 0
    r = json.loads(out.read_text())
    clip = r["clip_vit_l14"]
    assert clip["no_checkpointing"]["model_flops_per_step"] > 0
    assert clip["gradient_checkpointing"]["images_per_s"]["full"] > 0
    assert r["llava_7b"]["batch_2"]["tokens_per_s"] > 0 and r["llava_7b"]["speedup"] > 0
