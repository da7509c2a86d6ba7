"""The oracle teacher, prompt sets, visual prompts, specs, limit/shard and the describe command."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image

from lga.cli import main
from lga.data.dataset import load_dataset
from lga.data.dataset_config import DatasetConfig, load_dataset_config
from lga.errors import ConfigError, LgaError
from lga.store.core import DONE, DescriptionStore
from lga.teacher import (
    Backend,
    build_teacher,
    describe,
    load_prompt_set,
    parse_shard,
    parse_teacher_spec,
    resolve_prompts,
    select_images,
)
from lga.teacher.oracle import load_attributes, object_text
from lga.teacher.visual import VisualPrompt, apply_visual_prompt, draw_circle, draw_grid
from lga.testing.tiny_birds import make_tiny_birds

SEED_PROMPTS = {
    "object_description": "Identify the bird in the image and describe distinguishing features "
    "of the bird in the image. Ignore the background, be concise.",
    "object_keywords": "What is the common name of the bird in the image? Give keywords to "
    "identify and describe physical traits of the waterbird or landbird class it belongs to. "
    "Ignore the background. Be concise.",
    "background_description": "Describe the background in the image, ignore the bird. Be concise.",
    "background_keywords": "Give keywords describing the background. Ignore the bird. Be concise.",
}
BACKGROUND_WORDS = re.compile(
    r"\b(forest|grass|grassy|lake|ocean|sea|water|land|meadow|"
    r"woodland|trees)\b",
    re.I,
)
SYNONYMS = {
    "forest": ("forest", "woodland"),
    "grass": ("grass", "meadow"),
    "lake": ("lake",),
    "ocean": ("ocean", "sea"),
}
BIRD_WORDS = re.compile(r"\b(gull|sparrow|bird|neck|bill|feet|plumage|wings?)\b", re.I)


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return make_tiny_birds(tmp_path_factory.mktemp("birds"), 40)


@pytest.fixture(scope="module")
def oracle_store(birds, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "d.sqlite"
    assert (
        main(
            [
                "describe",
                "--data",
                str(birds),
                "--teacher",
                "oracle",
                "--store",
                str(path),
                "--no-progress",
            ]
        )
        == 0
    )
    with DescriptionStore(path, create=False) as store:
        yield store


def run(birds, store_path, *extra: str) -> int:
    return main(
        [
            "describe",
            "--data",
            str(birds),
            "--teacher",
            "oracle",
            "--store",
            str(store_path),
            "--no-progress",
            *extra,
        ]
    )


# -- prompts ----------------------------------------------------------------------------------


def test_waterbirds_prompts_are_the_seeds_verbatim():
    spec = load_dataset_config("waterbirds")
    prompts = resolve_prompts(spec)
    assert {p.name: p.text for p in prompts} == SEED_PROMPTS
    kinds = {p.name: (p.target.value, p.format.value) for p in prompts}
    assert kinds["object_keywords"] == ("object", "keywords")
    assert kinds["background_description"] == ("background", "text")


def test_generic_prompts_fill_the_dataset_names():
    spec = DatasetConfig(
        name="celeb",
        classes=["blond", "dark"],
        places=["female", "male"],
        object_noun="person",
        spurious_attribute="gender",
    )
    texts = {p.name: p.text for p in resolve_prompts(spec)}
    assert "blond or dark class" in texts["object_keywords"]
    assert texts["background_description"] == (
        "Describe the gender in the image, ignore the person. Be concise."
    )
    assert [p.name for p in resolve_prompts(spec, "generic", only=["object_keywords"])] == [
        "object_keywords"
    ]


def test_prompt_set_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprompts:\n  - {name: a, target: object, text: 'the {colour} one'}\n")
    with pytest.raises(ConfigError, match="colour"):
        resolve_prompts(load_dataset_config("waterbirds"), bad)
    with pytest.raises(ConfigError, match="unknown prompt set"):
        load_prompt_set("nonexistent")
    with pytest.raises(ConfigError, match="unknown prompt name"):
        resolve_prompts(load_dataset_config("waterbirds"), only=["nope"])


# -- specs, shards ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "backend", "model", "url"),
    [
        ("oracle", Backend.ORACLE, None, None),
        ("hf:llava-hf/llava-1.5-7b-hf", Backend.HF, "llava-hf/llava-1.5-7b-hf", None),
        ("hf:/ckpt/tiny", Backend.HF, "/ckpt/tiny", None),
        (
            "openai:http://localhost:8000/v1#llava-hf/llava-1.5-7b-hf",
            Backend.OPENAI,
            "llava-hf/llava-1.5-7b-hf",
            "http://localhost:8000/v1",
        ),
        (
            "openai:https://api.example.com/v1/#gpt-4o",
            Backend.OPENAI,
            "gpt-4o",
            "https://api.example.com/v1",
        ),
    ],
)
def test_parse_teacher_spec(text, backend, model, url):
    spec = parse_teacher_spec(text)
    assert (spec.backend, spec.model, spec.base_url) == (backend, model, url)


@pytest.mark.parametrize("text", ["llava", "hf:", "openai:localhost#m", "openai:http://x/v1"])
def test_bad_teacher_spec(text):
    with pytest.raises(ConfigError, match="bad teacher spec"):
        parse_teacher_spec(text)


@pytest.mark.parametrize("text", ["4/4", "1", "a/b", "-1/3"])
def test_bad_shard(text):
    with pytest.raises(ConfigError):
        parse_shard(text)


def test_limit_then_shard_partition(birds):
    ds = load_dataset(birds, check_images=False)
    first = select_images(ds, split="train", limit=10)
    assert first.img_ids.tolist() == list(range(1, 11))
    parts = [select_images(ds, limit=10, shard=parse_shard(f"{i}/3")).img_ids for i in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(1, 11))
    assert all(len(set(a) & set(b)) == 0 for a in parts for b in parts if a is not b)


# -- oracle -----------------------------------------------------------------------------------


def test_oracle_answers_every_prompt(oracle_store, birds):
    df = oracle_store.frame()
    assert len(df) == 40 * 4 and set(df["status"]) == {DONE}
    attrs = load_attributes(birds)
    for r in df.itertuples():
        a = attrs[r.img_id]
        if r.prompt.startswith("object"):
            assert a["species"] in r.text.lower()
            assert not BACKGROUND_WORDS.search(r.text), r.text  # never the place
        else:
            assert any(w in r.text.lower() for w in SYNONYMS[a["background"]]), r.text
            assert not BIRD_WORDS.search(r.text), r.text  # never the bird
        if r.prompt.endswith("keywords"):
            assert r.keywords and r.keywords[0] in (a["species"], a["background"])


def test_oracle_keywords_carry_per_image_traits(oracle_store, birds):
    attrs = load_attributes(birds)
    for img_id, words in oracle_store.keywords("object_keywords").items():
        a = attrs[img_id]
        assert words[0] == a["species"]
        assert f"{a['feet']} feet" in words and f"{a['neck']} neck" in words


def test_oracle_phrasings_vary_and_are_deterministic(oracle_store, birds, tmp_path):
    texts = oracle_store.texts("object_description")
    # the same attributes, several sentence shapes (first three words differ)
    gulls = [t for i, t in texts.items() if load_attributes(birds)[i]["species"] == "gull"]
    assert len({" ".join(t.split()[:3]) for t in gulls}) >= 3
    assert run(birds, tmp_path / "again.sqlite") == 0
    with DescriptionStore(tmp_path / "again.sqlite", create=False) as again:
        assert again.texts("object_description") == texts


def test_oracle_unknown_values_fall_back_to_raw_words():
    attrs = {
        "class_name": "waterbird",
        "species": "albatross",
        "size": "huge",
        "neck": "long",
        "legs": "short",
        "feet": "webbed",
        "bill": "spoon-shaped",
        "plumage": "sooty black",
        "wing": "long-pointed",
        "background": "swamp",
    }
    texts = [object_text(attrs, i, "object_description") for i in range(20)]
    assert all("albatross" in t and "spoon shaped bill" in t for t in texts)
    assert any("long pointed wings" in t or "wings are long pointed" in t for t in texts)


def test_oracle_needs_attributes(tmp_path):
    root = make_tiny_birds(tmp_path / "plain", 2, attributes=False)
    with pytest.raises(LgaError, match="lga data synth"):
        build_teacher("oracle", data_root=root)
    assert run(root, tmp_path / "d.sqlite") == 1


def test_limit_extends_and_rerun_skips(birds, tmp_path, capsys):
    store = tmp_path / "d.sqlite"
    assert run(birds, store, "--limit", "2") == 0
    assert "8 done, 0 failed, 0 skipped" in capsys.readouterr().out
    assert run(birds, store, "--limit", "5") == 0
    assert "12 done, 0 failed, 8 skipped" in capsys.readouterr().out
    assert run(birds, store, "--limit", "5", "--only-prompts", "object_keywords") == 0
    assert "0 done, 0 failed, 5 skipped" in capsys.readouterr().out


def test_shards_merge_to_the_whole(birds, tmp_path):
    stores = [tmp_path / f"s{i}.sqlite" for i in range(3)]
    for i, s in enumerate(stores):
        assert run(birds, s, "--limit", "9", "--shard", f"{i}/3") == 0
    assert main(["store", "merge", str(tmp_path / "all.sqlite"), *map(str, stores)]) == 0
    with DescriptionStore(tmp_path / "all.sqlite", create=False) as merged:
        df = merged.frame()
    assert len(df) == 36 and not df.duplicated(["img_id", "prompt"]).any()


# -- visual prompts ---------------------------------------------------------------------------


def test_visual_prompts_draw_on_a_copy():
    img = Image.new("RGB", (64, 64), (0, 128, 0))
    grid, circle = draw_grid(img), draw_circle(img, (16, 16, 48, 48))
    assert (np.asarray(img) == [0, 128, 0]).all()  # untouched
    assert (np.asarray(grid) != np.asarray(img)).any()
    red = np.asarray(circle)
    assert ((red[..., 0] > 200) & (red[..., 1] < 50)).any()
    assert apply_visual_prompt(img, VisualPrompt.NONE) is img
    with pytest.raises(ConfigError, match="box"):
        apply_visual_prompt(img, VisualPrompt.CIRCLE)


def test_visual_prompt_is_part_of_the_key(birds, tmp_path):
    store = tmp_path / "d.sqlite"
    assert run(birds, store, "--limit", "2") == 0
    assert run(birds, store, "--limit", "2", "--visual-prompt", "grid") == 0
    assert run(birds, store, "--limit", "2", "--visual-prompt", "circle") == 0  # synth boxes
    with DescriptionStore(store, create=False) as s:
        assert len(s.frame()) == 3 * 8
        assert len({v.settings_hash for v in s.variants()}) == 3


def test_circle_needs_boxes_on_real_datasets(tmp_path, capsys):
    root = make_tiny_birds(tmp_path / "plain", 3, attributes=False)
    hf = ["--teacher", "hf:/does/not/matter"]
    args = [
        "describe",
        "--data",
        str(root),
        "--store",
        str(tmp_path / "d.sqlite"),
        "--visual-prompt",
        "circle",
        "--no-progress",
    ]
    assert main([*args, *hf]) == 1
    assert "--boxes" in capsys.readouterr().err
    boxes = tmp_path / "boxes.csv"
    with boxes.open("w", newline="") as f:
        csv.writer(f).writerows([["img_id", "x0", "y0", "x1", "y1"], [1, 2, 2, 20, 20]])
    assert main([*args, *hf, "--boxes", str(boxes)]) == 1
    assert "needs a box for every image" in capsys.readouterr().err


def test_describe_library_api(birds, tmp_path):
    ds = select_images(load_dataset(birds, check_images=False), limit=3)
    prompts = resolve_prompts(ds.config)
    with DescriptionStore(tmp_path / "d.sqlite") as store:
        summary = describe(
            ds, build_teacher("oracle", data_root=birds), store, prompts, progress=False
        )
        assert (summary.done, summary.failed, summary.skipped) == (12, 0, 0)
        assert set(store.texts("background_keywords", ds.img_ids)) == {1, 2, 3}
