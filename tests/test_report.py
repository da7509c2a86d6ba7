"""Tests of lga.report: run grouping, the results table's numbers, every output file."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_dataset
from lga.cli import main
from lga.data import load_dataset
from lga.errors import LgaError
from lga.report import (
    ReportOptions,
    build_report,
    group_runs,
    load_runs,
    pick_images,
    results_table,
    to_latex,
    to_long_frame,
    to_markdown,
)
from lga.testing.fake_runs import write_fake_run

GROUPS = ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]
PER_GROUP = 10  # test images per group: accuracies are multiples of 0.1

# method -> per seed, the accuracy of each group (GROUPS order)
ACCS = {
    "zero-shot": [[1.0, 0.8, 0.3, 0.6]],
    "erm": [[1.0, 0.9, 0.6, 0.9], [0.9, 0.8, 0.4, 1.0]],
    "lga": [[1.0, 0.9, 0.8, 0.9], [1.0, 1.0, 0.9, 0.8]],
    "linear-probe": [[0.9, 0.7, 0.5, 0.8]],
}
SEEDS = {  # the runs' seeds (sample.seed and train.seed); None: an lga eval run, unseeded
    "erm": [0, 1],
    "lga": [0, 1],
    "zero-shot": [None],
    "linear-probe": [3],
}


def _rows() -> list[tuple]:
    """95%-correlated training split (40 images), balanced test split (10 per group)."""
    rows, i = [], 1
    for y, place, n in ((0, 0, 19), (0, 1, 1), (1, 0, 1), (1, 1, 19)):
        for _ in range(n):
            rows.append((i, f"images/{i:03d}.jpg", y, 0, place))
            i += 1
    for y in (0, 1):
        for place in (0, 1):
            for _ in range(PER_GROUP):
                rows.append((i, f"images/{i:03d}.jpg", y, 2, place))
                i += 1
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("report-data") / "ds", _rows())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset, tiny_clip_dir) -> Path:
    """2 x (erm, lga) seeds, one zero-shot and one linear-probe run; lga seed 0 has a model/."""
    root = tmp_path_factory.mktemp("runs")
    ds = load_dataset(dataset, check_images=False)
    for method, per_seed in ACCS.items():
        for k, accs in enumerate(per_seed):
            write_fake_run(
                root / f"{method}-{k}",
                ds,
                method=method,
                group_accuracy=dict(zip(GROUPS, accs, strict=True)),
                base=str(tiny_clip_dir),
                seed=SEEDS[method][k],
                rng_seed=k,
                model_dir=tiny_clip_dir if (method, k) == ("lga", 0) else None,
            )
    return root


def _table(runs: Path):
    return results_table(group_runs(load_runs([runs])))


# --------------------------------------------------------------------------------------------
# Runs and seeds


def test_runs_grouped_by_method_in_seed_order(runs):
    columns = group_runs(load_runs([runs]))
    assert [m.label for m in columns] == ["zero-shot", "linear-probe", "erm", "lga"]
    assert [m.n_seeds for m in columns] == [1, 1, 2, 2]
    assert [r.seed for r in columns[3].runs] == [
        {"sample.seed": 0, "train.seed": 0},
        {"sample.seed": 1, "train.seed": 1},
    ]


def test_same_run_twice_is_one_seed_and_no_seed_key_is_its_own_seed(runs):
    once = load_runs([runs / "erm-0", runs / "erm-0", runs / "zero-shot-0"])
    assert len(once) == 2
    assert once[1].seed == {} and once[1].seed_label == "zero-shot-0"


def test_method_read_from_metrics_not_folder_name(tmp_path, runs):
    import shutil

    shutil.copytree(runs / "erm-1", tmp_path / "some-name")
    assert {m.label for m in group_runs(load_runs([tmp_path / "some-name"]))} == {"erm"}


def test_bases_kept_apart(tmp_path, runs):
    import shutil

    import yaml

    shutil.copytree(runs / "erm-0", tmp_path / "erm-other")
    cfg = yaml.safe_load((tmp_path / "erm-other" / "config.yaml").read_text())
    cfg["student"]["spec"] = "openai/clip-vit-large-patch14"
    (tmp_path / "erm-other" / "config.yaml").write_text(yaml.safe_dump(cfg))
    labels = [m.label for m in group_runs(load_runs([runs / "erm-0", tmp_path / "erm-other"]))]
    assert set(labels) == {"erm [clip]", "erm [clip-vit-large-patch14]"}


def test_sample_sizes_are_not_seeds(tmp_path, dataset):
    """A sweep over training-set sizes gives one column per size (zero-shot stays one)."""
    ds = load_dataset(dataset, check_images=False)
    accs = dict.fromkeys(GROUPS, 1.0)
    for name, method, n in (
        ("a", "erm", 100),
        ("b", "erm", 100),
        ("c", "erm", 20),
        ("d", "zero-shot", 100),
        ("e", "zero-shot", 20),
    ):
        write_fake_run(
            tmp_path / name,
            ds,
            method=method,
            group_accuracy=accs,
            n_train=n,
            seed=ord(name),
        )
    columns = group_runs(load_runs([tmp_path]))
    assert [(m.label, m.n_seeds) for m in columns] == [
        ("zero-shot", 2),
        ("erm [n=100]", 2),
        ("erm [n=20]", 1),
    ]


def test_not_a_run(tmp_path):
    with pytest.raises(LgaError, match="no run directory"):
        load_runs([tmp_path])


# --------------------------------------------------------------------------------------------
# Numbers


def test_table_mean_and_std_over_seeds(runs):
    table = _table(runs)
    erm = np.array(ACCS["erm"])  # (seeds, groups)
    for g, name in enumerate(GROUPS):
        mean, std, n = table.stats("erm", f"group_accuracy/{name}")
        assert n == 2
        assert mean == pytest.approx(erm[:, g].mean())
        assert std == pytest.approx(erm[:, g].std(ddof=1))
    mean, std, _ = table.stats("erm", "worst_group_accuracy")
    assert mean == pytest.approx(erm.min(axis=1).mean())
    assert std == pytest.approx(erm.min(axis=1).std(ddof=1))
    mean, _, _ = table.stats("lga", "accuracy")
    assert mean == pytest.approx(np.mean(ACCS["lga"]))  # balanced test set
    mean, std, n = table.stats("zero-shot", "class_accuracy/waterbird")
    assert (mean, n) == (pytest.approx(0.45), 1) and np.isnan(std)


def test_weighted_accuracy_uses_training_mix(runs):
    weights = np.array([19, 1, 1, 19]) / 40
    mean, _, _ = _table(runs).stats("zero-shot", "weighted_accuracy")
    assert mean == pytest.approx(float(weights @ np.array(ACCS["zero-shot"][0])))


def test_markdown_layout(runs):
    md = to_markdown(_table(runs))
    lines = md.splitlines()
    assert lines[0] == "| accuracy (%) | n | zero-shot | linear-probe | erm (n=2) | lga (n=2) |"
    names = [line.split("|")[1].strip() for line in lines[2 : lines.index("")]]
    assert names == [
        "overall accuracy",
        "weighted overall (train group mix)",
        "landbird accuracy",
        "waterbird accuracy",
        "landbird on land",
        "landbird on water",
        "waterbird on land",
        "waterbird on water",
        "worst group",
        "worst group is",
    ]
    erm_wl = np.array(ACCS["erm"])[:, 2] * 100
    row = next(line for line in lines if line.startswith("| waterbird on land "))
    assert f"{erm_wl.mean():.2f} ± {erm_wl.std(ddof=1):.2f}" in row
    assert f"| {PER_GROUP} |" in row  # the count column
    assert "| 30.00 |" in row  # one seed: the value alone


def test_csv_is_fractions(runs):
    df = to_long_frame(_table(runs))
    assert list(df.columns) == ["method", "student", "metric", "mean", "std", "n_seeds", "count"]
    row = df[(df["method"] == "lga") & (df["metric"] == "worst_group_accuracy")].iloc[0]
    assert row["mean"] == pytest.approx(np.mean([0.8, 0.8]))
    assert row["n_seeds"] == 2
    assert df["mean"].between(0, 1).all()


def test_latex(runs):
    tex = to_latex(_table(runs))
    assert tex.count(r"\begin{tabular}") == 1 and r"\bottomrule" in tex
    assert r"$\pm$" in tex and "±" not in tex
    assert "linear-probe" in tex and "accuracy (\\%)" in tex


def test_pick_images_is_deterministic_and_spread():
    preds = pd.DataFrame({"img_id": np.arange(100, 0, -1), "group": ["a/b"] * 100})
    assert pick_images(preds, "a/b", 4) == [1, 34, 67, 100]
    assert pick_images(preds, "a/b", 3, among={5, 6}) == [5, 6]
    assert pick_images(preds, "x/y", 3) == []


# --------------------------------------------------------------------------------------------
# Files


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory, dataset) -> Path:
    """Object and background descriptions of every test image."""
    from lga.store.core import DONE, DescriptionStore, Row, dataset_key

    ds = load_dataset(dataset, check_images=False)
    test = ds.split("test")
    path = tmp_path_factory.mktemp("store") / "store.sqlite"
    with DescriptionStore(path) as s:
        s.put(
            [
                Row(dataset_key(ds), int(i), prompt, "h", "oracle", "s", DONE, text=text)
                for i, place in zip(test.img_ids, test.place, strict=True)
                for prompt, text in (
                    ("object_description", "the bird has webbed feet"),
                    ("background_description", ["grass", "a lake"][place]),
                )
            ]
        )
    return path


@pytest.fixture(scope="module")
def full_report(runs, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report"
    opts = ReportOptions(n_images=2, alignment_per_group=3, descriptions=store, dpi=40)
    return build_report([runs], out, opts)


def test_full_report_files(full_report):
    out = full_report.out
    for name in (
        "results.md",
        "results.csv",
        "results.tex",
        "summary.json",
        "report.html",
        "alignment.csv",
    ):
        assert (out / name).is_file(), name
    for name in ("group_accuracy.png", "class_probs.png", "alignment.png"):
        assert _is_png(out / name), name
    saliency = sorted((out / "saliency").glob("*.png"))
    assert len(saliency) == 2 and all(map(_is_png, saliency))
    assert full_report.notes == []


def test_full_report_chosen_images_and_summary(full_report):
    # 2 images evenly spaced over the zero-shot run's worst group (waterbird/land, ids 61-70).
    assert full_report.chosen_group == "waterbird/land"
    assert full_report.chosen == [61, 70]
    summary = json.loads((full_report.out / "summary.json").read_text())
    assert [m["n_seeds"] for m in summary["methods"]] == [1, 1, 2, 2]
    assert summary["chosen_images"]["img_ids"] == [61, 70]
    assert summary["group_count"] == dict.fromkeys(GROUPS, PER_GROUP)


def test_full_report_html_is_self_contained(full_report):
    parser = _Imgs()
    page = (full_report.out / "report.html").read_text()
    parser.feed(page)
    n_png = len([k for k in full_report.files if k.endswith(".png")])
    assert n_png == 5 and len(parser.srcs) == n_png
    assert all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert "erm (n=2)" in page and "<table" in page


def test_alignment_with_descriptions(full_report):
    from lga.report import diagnostics

    align = full_report.alignment
    assert list(dict.fromkeys(align["model"])) == ["pre-trained", "lga"]
    assert set(align["n"]) == {3}
    assert set(align["target"]) == set(diagnostics.TARGETS)
    assert full_report.alignment_source == "test split"
    # lga's model/ is a copy of the base here: before and after must agree.
    wide = diagnostics.alignment_pivot(align)
    assert np.allclose(wide["pre-trained"], wide["lga"], atol=1e-5)
    csv = pd.read_csv(full_report.out / "alignment.csv")
    assert len(csv) == len(align)


def test_alignment_margin_is_own_minus_other(dataset, tiny_clip_dir):
    from lga.report import diagnostics
    from lga.student.model import load_student

    ds = load_dataset(dataset, check_images=False)
    sample = diagnostics.AlignmentSample(diagnostics.per_group_sample(ds.split("test"), 2), "t")
    df = diagnostics.alignment(
        "m", load_student(str(tiny_clip_dir)), sample, templates=["a photo of a {}."]
    )
    wide = df.pivot_table(index="group", columns="target", values="mean_cos")
    own, other = wide[diagnostics.OWN_CLASS], wide[diagnostics.OTHER_CLASS]
    assert np.allclose(wide[diagnostics.MARGIN], own - other, atol=1e-6)
    assert set(df["n"]) == {2}


def test_alignment_of_a_changed_model(runs, store, dataset, tmp_path):
    """lga's model/ differs from the pre-trained one: each row block must be its own model's."""
    import shutil

    from lga.report import diagnostics
    from lga.student.model import load_student

    shutil.copytree(runs / "lga-0", tmp_path / "runs" / "lga-0")
    model_dir = tmp_path / "runs" / "lga-0" / "model"
    changed = load_student(str(model_dir))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in changed.model.named_parameters():
            if name.startswith("vision_model.") and name.endswith("weight"):
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    changed.model.save_pretrained(model_dir)
    opts = ReportOptions(n_images=0, alignment_per_group=3, descriptions=store, dpi=40)
    report = build_report([tmp_path / "runs"], tmp_path / "out", opts)
    align = report.alignment
    wide = diagnostics.alignment_pivot(align)
    assert not np.allclose(wide["pre-trained"], wide["lga"], atol=1e-3)
    # the "lga" rows are what the changed model alone gives on the same sample
    ds = load_dataset(dataset, check_images=False)
    sample = diagnostics.build_sample(ds, split="test", per_group=3, store=store)
    base = load_student(str(runs / "lga-0" / "model"))  # a copy of the pre-trained model
    for label, student in (("lga", load_student(str(model_dir))), ("pre-trained", base)):
        mine = align[align["model"] == label]
        alone = diagnostics.alignment(
            label, student, sample, templates=list(ds.config.class_templates)
        )
        merged = mine.merge(alone, on=["group", "target"], suffixes=("", "_alone"))
        assert len(merged) >= 3 * 4
        np.testing.assert_allclose(merged["mean_cos"], merged["mean_cos_alone"], atol=1e-5)


def test_report_without_models_or_data(runs, tmp_path):
    """Copied runs whose dataset is gone: tables and group figure still, the rest noted."""
    import shutil

    import yaml

    for name in ("erm-0", "erm-1", "zero-shot-0"):
        shutil.copytree(runs / name, tmp_path / "runs" / name)
        f = tmp_path / "runs" / name / "config.yaml"
        cfg = yaml.safe_load(f.read_text())
        cfg["data"]["root"] = str(tmp_path / "gone")
        f.write_text(yaml.safe_dump(cfg))
    report = build_report([tmp_path / "runs"], tmp_path / "out", ReportOptions(dpi=40))
    assert _is_png(tmp_path / "out" / "group_accuracy.png")
    assert _is_png(tmp_path / "out" / "class_probs.png")  # drawn without the pictures
    assert not (tmp_path / "out" / "alignment.png").exists()
    assert any("not reachable" in n for n in report.notes)
    assert "not reachable" in (tmp_path / "out" / "report.html").read_text()


def test_cli_report(runs, tmp_path, capsys):
    rc = main(
        [
            "report",
            str(runs / "erm-0"),
            str(runs / "erm-1"),
            str(runs / "zero-shot-0"),
            "--out",
            str(tmp_path / "r"),
            "--no-alignment",
            "--no-saliency",
            "--images",
            "41",
            "42",
            "--dpi",
            "40",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert re.search(r"\| erm \(n=2\) \|", out)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["chosen_images"] == {"img_ids": [41, 42], "group": None}
