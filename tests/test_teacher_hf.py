"""The hf: teacher on a tiny random LLaVA saved by transformers (the real from_pretrained path)."""

from __future__ import annotations

import pytest

from lga.cli import main
from lga.store.core import DONE, DescriptionStore
from lga.teacher.hf import HFTeacher
from lga.testing.tiny_birds import make_tiny_birds
from lga.testing.tiny_llava import build_tiny_llava


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return make_tiny_birds(tmp_path_factory.mktemp("birds"), 6)


@pytest.fixture(scope="module")
def teacher(llava):
    return HFTeacher(str(llava), max_new_tokens=6, batch_size=4, device="cpu")


def test_checkpoint_loads_like_the_hub_one(llava):
    from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor

    processor = AutoProcessor.from_pretrained(llava)
    model = LlavaForConditionalGeneration.from_pretrained(llava)
    assert isinstance(processor, LlavaProcessor)
    assert model.config.image_token_index == processor.tokenizer.convert_tokens_to_ids("<image>")
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi."}]}]
    assert processor.apply_chat_template(chat, add_generation_prompt=True) == (
        "USER: <image>\nHi. ASSISTANT:"
    )


def test_describe_tiny_llava_6_images_x_4_prompts(llava, birds, tmp_path, capsys):
    store = tmp_path / "d.sqlite"
    args = [
        "describe",
        "--data",
        str(birds),
        "--teacher",
        f"hf:{llava}",
        "--store",
        str(store),
        "--max-new-tokens",
        "4",
        "--batch-size",
        "5",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "24 done, 0 failed, 0 skipped" in capsys.readouterr().out
    with DescriptionStore(store, create=False) as s:
        df = s.frame()
        assert len(df) == 24 and set(df["status"]) == {DONE}
        assert not df.duplicated(["img_id", "prompt"]).any()
        assert all(isinstance(t, str) for t in df["text"])
        assert set(df["teacher"]) == {f"hf:{llava}"}
        kw = df[df["prompt"].str.endswith("keywords")]["keywords"]
        assert all(isinstance(k, list) for k in kw)
    assert main(args) == 0  # nothing left to do
    assert "0 done, 0 failed, 24 skipped" in capsys.readouterr().out


def test_batched_generation_matches_one_by_one(teacher, birds):
    """Left padding: a prompt's answer must not depend on its batch neighbours."""
    from lga.data.images import load_rgb

    images = [load_rgb(birds / f"images/{i:04d}.png") for i in (1, 2, 3)]
    prompts = [
        "Describe the bird.",
        "Give keywords describing the background. Be concise.",
        "What is the common name of the bird in the image? Be concise.",
    ]
    batched = teacher.generate(images, prompts)
    single = [teacher.generate([im], [p])[0] for im, p in zip(images, prompts, strict=True)]
    assert batched == single


def test_a_bad_image_fails_alone(teacher, tmp_path):
    from lga.teacher.base import WorkItem
    from lga.teacher.prompts import Format, Prompt, Target

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    prompt = Prompt(name="p", target=Target.OBJECT, format=Format.TEXT, text="Describe the bird.")
    from lga.data.images import load_rgb

    items = [
        WorkItem(1, prompt, lambda: load_rgb(bad)),
        WorkItem(2, prompt, lambda: load_rgb(tmp_path / "missing.png")),
    ]
    from PIL import Image

    items.append(WorkItem(3, prompt, lambda: Image.new("RGB", (20, 20))))
    (chunk,) = list(teacher.describe(items))
    outcomes = {item.img_id: out for item, out in chunk}
    assert not outcomes[1].ok and "image" in outcomes[1].error
    assert not outcomes[2].ok and outcomes[3].ok


def test_missing_checkpoint_folder_is_a_clear_error(birds, tmp_path, capsys):
    assert (
        main(
            [
                "describe",
                "--data",
                str(birds),
                "--teacher",
                f"hf:{tmp_path}/nope",
                "--store",
                str(tmp_path / "d.sqlite"),
                "--no-progress",
            ]
        )
        == 1
    )
    assert "checkpoint folder not found" in capsys.readouterr().err


def test_default_settings_keep_their_settings_hash(llava):
    # {"max_new_tokens": 128, "decoding": "greedy"}: the hash a default hf describe wrote before
    # TeacherConfig held the defaults (commit 91c430e); the same settings reach the same rows.
    from lga.store.keys import settings_key
    from lga.teacher import TeacherConfig, build_teacher

    teacher = build_teacher(TeacherConfig(spec=f"hf:{llava}", device="cpu"))
    try:
        assert teacher.batch_size == TeacherConfig.default("batch_size")
        assert settings_key(teacher.settings, "none")[0] == "117a7b3ad5b2"
    finally:
        teacher.close()
