"""One tester suite over every teacher family (lga.testing.teacher_families.TINY_TEACHERS).

Each family's tiny random checkpoint is built offline and loaded through the real
``from_pretrained`` path. For every family whose processor can be built here: ``lga describe``
with ``hf:DIR``, batched answers equal to one-by-one answers, special tokens exactly once, and
each prompt's image where the processor expects it. For families whose processor needs a module
that is not installed (torchvision for the processors holding a video processor): one clear line
naming the extra. Bad checkpoints are named in one short line.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lga.cli import main
from lga.errors import LgaError
from lga.store.core import DONE, DescriptionStore
from lga.teacher.families import FAMILIES, ImageLayout, PromptStyle
from lga.teacher.hf import HFTeacher
from lga.testing.teacher_families import TINY_TEACHERS
from lga.testing.tiny_birds import make_tiny_birds


def _installed(model_type: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in TINY_TEACHERS[model_type].needs)


RUNNABLE = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            not _installed(name), reason=f"needs {', '.join(TINY_TEACHERS[name].needs)}"
        ),
    )
    for name in TINY_TEACHERS
]
NOT_INSTALLED = [name for name in TINY_TEACHERS if not _installed(name)]

PROMPTS = [
    "Identify the bird in the image and describe distinguishing features.",
    "Describe the background in the image, ignore the bird. Be concise.",
    "What is the common name?",
]


def _images() -> list[Image.Image]:
    """Three images of different sizes and contents (sizes change some families' token counts)."""
    rng = np.random.default_rng(0)
    sizes = [(32, 32), (48, 32), (32, 64)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """family -> its tiny checkpoint folder, built on first use."""
    root = tmp_path_factory.mktemp("teachers")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = TINY_TEACHERS[name].build(root / name)
        return built[name]

    return get


@pytest.fixture(scope="session")
def teachers(checkpoints):
    """family -> a loaded HFTeacher (CPU, 4 new tokens), loaded on first use."""
    loaded: dict[str, HFTeacher] = {}

    def get(name: str) -> HFTeacher:
        if name not in loaded:
            loaded[name] = HFTeacher(
                str(checkpoints(name)), max_new_tokens=4, batch_size=3, device="cpu"
            )
        return loaded[name]

    return get


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return make_tiny_birds(tmp_path_factory.mktemp("birds"), 1)


def test_every_tiny_teacher_is_a_family_of_the_table():
    for name, tiny in TINY_TEACHERS.items():
        assert name in FAMILIES
        assert set(tiny.needs) == set(FAMILIES[name].needs), name


@pytest.mark.parametrize("name", RUNNABLE)
def test_describe_through_the_cli(name, checkpoints, birds, tmp_path, capsys, caplog):
    store = tmp_path / "d.sqlite"
    args = ["describe", "--data", str(birds), "--teacher", f"hf:{checkpoints(name)}",
            "--store", str(store), "--max-new-tokens", "2", "--batch-size", "3",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "4 done, 0 failed, 0 skipped" in capsys.readouterr().out  # batches of 3 and 1
    # Every batch ran as a batch: none failed and was retried one item at a time.
    assert "retrying one by one" not in caplog.text
    with DescriptionStore(store, create=False) as s:
        df = s.frame()
    assert len(df) == 4 and set(df["status"]) == {DONE}
    assert set(df["teacher"]) == {f"hf:{checkpoints(name)}"}


@pytest.mark.parametrize("name", RUNNABLE)
def test_batched_answers_equal_one_by_one(name, teachers):
    teacher, images = teachers(name), _images()
    batched = teacher.generate(images, PROMPTS)
    single = [teacher.generate([im], [p])[0] for im, p in zip(images, PROMPTS, strict=True)]
    assert batched == single  # the prompts differ in length: the batch is left padded


@pytest.mark.parametrize("name", RUNNABLE)
def test_batched_next_token_scores_equal_one_by_one(name, teachers):
    """Each row's next-token logits in the padded batch are its logits alone (a tiny random
    model may answer every prompt alike; its scores still differ)."""
    teacher, images = teachers(name), _images()

    def next_scores(ims: list, prompts: list[str]) -> torch.Tensor:
        with torch.inference_mode():
            return teacher.model(**teacher.encode(ims, prompts)).logits[:, -1]  # (B, V)

    batched = next_scores(images, PROMPTS)
    for i, (im, p) in enumerate(zip(images, PROMPTS, strict=True)):
        torch.testing.assert_close(batched[i], next_scores([im], [p])[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batched[0], batched[1], rtol=1e-4, atol=1e-4)  # rows do differ


def _unpadded(ids: torch.Tensor, mask: torch.Tensor) -> list[int]:
    return ids[mask.bool()].tolist()


def _assert_framed_once(tok, ids: list[int], text: str, family) -> None:
    """BOS once and first (after PaliGemma's image tokens); a tokenizer without a BOS (Qwen2's:
    Qwen-VL, LLaVA-OneVision, InternVL) adds nothing before the template's first token."""
    if tok.bos_token_id is None:
        assert ids[0] == tok(text, add_special_tokens=False)["input_ids"][0], tok.decode(ids)
        assert tok.pad_token_id not in ids, tok.decode(ids)  # <|endoftext|> is padding only
        return
    assert ids.count(tok.bos_token_id) == 1, tok.decode(ids)
    assert ids[:1] == [tok.bos_token_id] or family.prompt is PromptStyle.PLAIN


@pytest.mark.parametrize("name", RUNNABLE)
def test_special_tokens_exactly_once(name, teachers):
    teacher = teachers(name)
    enc = teacher.encode(_images(), PROMPTS)
    texts = teacher.family.texts(teacher.processor, PROMPTS)
    assert (enc["attention_mask"][:, -1] == 1).all()  # left padding: every row ends at the right
    for row, mask, text in zip(enc["input_ids"], enc["attention_mask"], texts, strict=True):
        _assert_framed_once(teacher.processor.tokenizer, _unpadded(row, mask), text, teacher.family)


@pytest.mark.parametrize("name", RUNNABLE)
def test_each_prompt_gets_its_own_image(name, teachers):
    """The batch holds, row for row, what each (image, prompt) pair gives alone."""
    teacher, images = teachers(name), _images()
    batch = teacher.encode(images, PROMPTS)
    singles = [teacher.encode([im], [p]) for im, p in zip(images, PROMPTS, strict=True)]
    mask = batch["attention_mask"]
    for key, value in batch.items():
        if key == "attention_mask" or not isinstance(value, torch.Tensor):
            continue
        parts = [one[key] for one in singles]
        if value.shape == mask.shape:  # one entry per token (ids, token types): left padded
            for i, p in enumerate(parts):
                assert _unpadded(value[i], mask[i]) == p[0].tolist(), key
        elif all(p.shape[1:] == value.shape[1:] for p in parts):
            torch.testing.assert_close(torch.cat(parts), value, msg=key)
        else:  # padded per image (tiles, patches): each image's own part, at the front
            for i, p in enumerate(parts):
                front = value[i][tuple(slice(0, n) for n in p.shape[1:])]
                torch.testing.assert_close(front, p[0], msg=key)


def test_gemma3_idefics3_smolvlm_get_one_image_list_per_prompt():
    for name in ("gemma3", "idefics3", "smolvlm"):
        assert FAMILIES[name].layout(_images()[:2])[0] == [_images()[0]], name
    assert FAMILIES["llava"].images is ImageLayout.FLAT


@pytest.mark.skipif(not _installed("paligemma"), reason="paligemma processor")
def test_paligemma_is_a_base_model_with_a_plain_prompt(teachers):
    teacher = teachers("paligemma")
    assert teacher.settings["prompt_format"] == "<image>answer en {prompt}"
    tok = teacher.processor.tokenizer
    enc = teacher.encode(_images()[:1], ["what is the common name ?"])
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    words = ["answer", "en", "what", "is", "the", "common", "name", "?"]
    assert tokens[: 16 + 1 + len(words)] == ["<image>"] * 16 + ["<bos>", *words]


@pytest.mark.parametrize("name", NOT_INSTALLED or [pytest.param("-", marks=pytest.mark.skip)])
def test_a_missing_module_names_the_extra(name, checkpoints):
    family = FAMILIES[name]
    with pytest.raises(LgaError) as err:
        HFTeacher(str(checkpoints(name)), device="cpu")
    msg = str(err.value)
    assert f"pip install 'lga[{family.extra}]'" in msg and family.name in msg
    assert "\n" not in msg


def test_a_torchvision_that_does_not_import_names_the_build(checkpoints, monkeypatch):
    """A torchvision built for another torch is found but raises on import (as PyPI's does beside
    a CPU torch): one line naming it, not an "unexpected" error from inside the processor."""
    import importlib.abc
    import importlib.util

    class Broken(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            raise RuntimeError("operator torchvision::nms does not exist")

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            return (
                importlib.util.spec_from_loader(name, Broken()) if name == "torchvision" else None
            )

    folder = checkpoints("qwen2_vl")  # built before torchvision breaks
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])
    with pytest.raises(LgaError) as err:
        HFTeacher(str(folder), device="cpu")
    msg = _short_line(err)
    assert "Qwen2-VL needs torchvision, which is installed but does not import" in msg
    assert f"the torchvision build made for torch {torch.__version__}" in msg


# -- bad checkpoints: one short line each ------------------------------------------------------


def _short_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


@pytest.fixture()
def llava_copy(checkpoints, tmp_path) -> Path:
    return Path(shutil.copytree(checkpoints("llava"), tmp_path / "llava"))


def test_truncated_weights_are_named(llava_copy):
    weights = llava_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(LgaError) as err:
        HFTeacher(str(llava_copy), device="cpu")
    msg = _short_line(err)
    assert msg.startswith(f"damaged weights file {weights}: ") and "(truncated)" in msg


def test_missing_weights_are_named(llava_copy):
    (llava_copy / "model.safetensors").unlink()
    with pytest.raises(LgaError) as err:
        HFTeacher(str(llava_copy), device="cpu")
    assert str(llava_copy) in _short_line(err)


def test_a_sentencepiece_only_tokenizer_names_the_extra(llava_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # not importable, as if not installed
    (llava_copy / "tokenizer.json").unlink()
    (llava_copy / "tokenizer.model").write_bytes(b"\n\x0b")  # a sentencepiece model's place
    with pytest.raises(LgaError, match=r"pip install 'lga\[sentencepiece\]'") as err:
        HFTeacher(str(llava_copy), device="cpu")
    _short_line(err)


def test_missing_chat_template_is_named(llava_copy):
    (llava_copy / "chat_template.jinja").unlink()
    with pytest.raises(LgaError, match="no chat template") as err:
        HFTeacher(str(llava_copy), device="cpu")
    _short_line(err)


def test_a_clip_checkpoint_is_not_a_teacher(tiny_clip_dir):
    with pytest.raises(LgaError) as err:
        HFTeacher(str(tiny_clip_dir), device="cpu")
    msg = _short_line(err)
    assert "is a clip checkpoint (CLIPModel), not an image-text-to-text model" in msg


def test_a_relative_path_is_never_a_hub_id(birds, tmp_path, monkeypatch, capsys):
    """``hf:teachers/nope`` where ``teachers/`` is a folder here: not found, no hub request."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "teachers").mkdir()
    for spec in ("teachers/nope", "runs/a/teacher", "./nope", "~/no-such-teacher-here"):
        argv = ["describe", "--data", str(birds), "--teacher", f"hf:{spec}",
                "--store", str(tmp_path / "d.sqlite"), "--no-progress"]  # fmt: skip
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"error: teacher checkpoint folder not found: {spec}" in err, err
        assert "Traceback" not in err


@pytest.mark.parametrize("name", NOT_INSTALLED or [pytest.param("-", marks=pytest.mark.skip)])
def test_without_its_processor_the_prompt_and_model_still_load(name, checkpoints):
    """What runs without the missing module: the model, and the prompt with its special tokens
    written once (the tokenizer renders the family's chat template as its processor would)."""
    from types import SimpleNamespace

    from transformers import AutoModelForImageTextToText, AutoTokenizer

    folder = checkpoints(name)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert model.config.model_type == name
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = (folder / "chat_template.jinja").read_text()
    family = FAMILIES[name]
    holder = SimpleNamespace(tokenizer=tok, apply_chat_template=tok.apply_chat_template)
    texts = family.texts(holder, PROMPTS)
    enc = tok(texts, add_special_tokens=family.add_special_tokens(holder, texts))
    for ids, text in zip(enc["input_ids"], texts, strict=True):
        _assert_framed_once(tok, ids, text, family)
