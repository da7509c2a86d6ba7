"""`lga store import`: descriptions made elsewhere enter a store and train like generated ones."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fit_support import (
    PROMPTS,
    _answer,
    build_fit_env,
    one_thread,  # noqa: F401  (autouse fixture)
)
from lga.cli import main
from lga.data.dataset import load_dataset
from lga.store.core import DescriptionStore


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_clip_dir):
    return build_fit_env(tmp_path_factory.mktemp("import"), tiny_clip_dir)


def _minimal_rows(data: Path) -> list[dict]:
    """What a captioner outside lga would write: img_id, prompt, text for every image."""
    ds = load_dataset(data, check_images=False)
    return [
        {"img_id": i, "prompt": p, "text": _answer(p, i, y, place)}
        for i, y, place in zip(ds.img_ids.tolist(), ds.y.tolist(), ds.place.tolist(), strict=True)
        for p in PROMPTS
    ]


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _import(env, file: Path, store: Path, *extra: str) -> int:
    return main(["store", "import", str(file), "--store", str(store), "--data", str(env["data"]),
                 *extra])  # fmt: skip


def _fit(env, store: Path, out: Path) -> dict:
    argv = ["fit", "--data", str(env["data"]), "--student", str(env["clip"]), "--method", "lga",
            "--descriptions", str(store), "--out", str(out), "--batch-size", "8", "--epochs", "1",
            "--num-workers", "0", "--no-progress", "--device", "cpu",
            "eval.use_cache=false"]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _log(run: Path) -> list[dict]:
    return [json.loads(s) for s in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_minimal_file_trains_like_the_generated_store(env, tmp_path, suffix):
    file = _write(tmp_path / f"captions{suffix}", _minimal_rows(env["data"]))
    store = tmp_path / "imported.sqlite"
    assert _import(env, file, store, "--teacher", "my-captioner") == 0
    with DescriptionStore(store, read_only=True) as s:
        assert {v.teacher for v in s.variants()} == {"my-captioner"}
        kws = s.keywords("object_keywords")
        assert kws and all(isinstance(k, list) and k for k in kws.values())
    if suffix != ".jsonl":
        return  # one fit is enough to show it trains like the generated answers
    ref, imported = tmp_path / "ref", tmp_path / "imp"
    assert _fit(env, env["store"], ref) == _fit(env, store, imported)
    assert _log(ref) == _log(imported)


def test_export_round_trip_keeps_keys_and_importing_twice_changes_nothing(env, tmp_path, capsys):
    export = tmp_path / "export.jsonl"
    assert main(["store", "export", str(env["store"]), "--to", str(export)]) == 0
    store = tmp_path / "copy.sqlite"
    assert _import(env, export, store) == 0
    n = len(_minimal_rows(env["data"]))
    assert f"{n} new, 0 already" in capsys.readouterr().out
    again = tmp_path / "again.jsonl"
    assert main(["store", "export", str(store), "--to", str(again)]) == 0
    keep = ["dataset", "img_id", "prompt", "prompt_hash", "teacher", "settings_hash", "text",
            "keywords", "status"]  # fmt: skip
    a = pd.read_json(export, lines=True)[keep]
    b = pd.read_json(again, lines=True)[keep]
    pd.testing.assert_frame_equal(a, b)
    before = store.read_bytes()
    assert _import(env, export, store) == 0
    assert "0 new, " + str(n) + " already" in capsys.readouterr().out
    again2 = tmp_path / "again2.jsonl"
    assert main(["store", "export", str(store), "--to", str(again2)]) == 0
    assert again.read_text() == again2.read_text()
    assert len(before) > 0


def test_bad_rows_are_named_with_their_lines_and_nothing_is_written(env, tmp_path, capsys):
    rows = _minimal_rows(env["data"])[:6]
    rows[1] = {**rows[1], "img_id": 99999}
    rows[3] = {**rows[3], "prompt": "bird_colour"}
    rows[4] = {**rows[4], "text": "  "}
    file = _write(tmp_path / "bad.jsonl", rows)
    store = tmp_path / "s.sqlite"
    assert _import(env, file, store) == 1
    err = capsys.readouterr().err
    assert "3 row(s) cannot be imported" in err
    assert "line 2: img_id 99999 is not in" in err
    assert "line 4: prompt 'bird_colour' is not in the prompt set" in err
    assert "line 5: empty text" in err
    assert "Traceback" not in err and not store.exists()
    csv = _write(tmp_path / "bad.csv", rows)
    assert _import(env, csv, store) == 1
    assert "line 3: img_id 99999" in capsys.readouterr().err  # line 1 is the header
    no_text = _write(tmp_path / "no-text.csv", [{"img_id": 1, "prompt": "object_description"}])
    assert _import(env, no_text, store) == 1
    assert "no column(s) ['text']" in capsys.readouterr().err
