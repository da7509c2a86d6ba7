"""`lga reproduce`: every (method, seed) run, resumable, then the report."""

import json

import pytest
import yaml

from lga.cli import main
from lga.errors import ConfigError
from lga.train.config import Method
from lga.workflows.reproduce import load_reproduce_config, run_fit_config, training_images


@pytest.fixture()
def config_file(tmp_path, tiny_clip_dir):
    cfg = {
        "name": "tiny",
        "data": {"synth": {"seed": 3, "n_train": 48, "n_val": 16, "n_test": 16, "size": 32}},
        "teacher": {"spec": "oracle"},
        "student": {"spec": str(tiny_clip_dir)},
        "methods": ["zero-shot", "lga"],
        "seeds": [0, 1],
        "fit": {
            "sample": {"n_train": 24},
            "train": {"epochs": 1, "batch_size": 8},
            "eval": {"batch_size": 16},
        },
        "method_overrides": {"lga": {"train": {"lr": 2.0e-5}}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_reproduce_runs_every_method_and_seed_then_resumes(config_file, tmp_path, capsys):
    out = tmp_path / "repro"
    assert main(["reproduce", str(config_file), "--out", str(out)]) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == [f"{m}-seed{s}" for m in ("lga", "zero-shot") for s in (0, 1)]
    for run in runs:
        metrics = json.loads((out / "runs" / run / "metrics.json").read_text())
        assert sum(metrics["group_count"].values()) == metrics["n"] == 16
    assert (out / "report" / "report.html").is_file()
    assert (out / "report" / "results.md").is_file()
    printed = capsys.readouterr().out
    assert "worst" in printed.lower()
    stamp = {r: (out / "runs" / r / "metrics.json").stat().st_mtime_ns for r in runs}
    assert main(["reproduce", str(config_file), "--out", str(out)]) == 0
    assert stamp == {r: (out / "runs" / r / "metrics.json").stat().st_mtime_ns for r in runs}
    # --jobs 2: the same runs in two spawned processes (one thread each here), resumable alike
    par = tmp_path / "par"
    assert main(["reproduce", str(config_file), "--out", str(par), "--jobs", "2"]) == 0
    assert sorted(p.name for p in (par / "runs").iterdir()) == runs
    for run in runs:
        a, b = (json.loads((d / "runs" / run / "metrics.json").read_text()) for d in (out, par))
        assert a["group_accuracy"] == pytest.approx(b["group_accuracy"], abs=1 / 16), run
        assert a["selected_step"] == b["selected_step"], run
    stamp = {r: (par / "runs" / r / "metrics.json").stat().st_mtime_ns for r in runs}
    assert main(["reproduce", str(config_file), "--out", str(par), "--jobs", "2"]) == 0
    assert stamp == {r: (par / "runs" / r / "metrics.json").stat().st_mtime_ns for r in runs}


def test_config_layers_and_per_method_settings(config_file, tmp_path):
    cfg = load_reproduce_config(config_file, overrides=["seeds=[5]", "methods=[erm,lga]"])
    assert cfg.seeds == [5]
    lga = run_fit_config(cfg, Method.LGA, 5, tmp_path, tmp_path / "d.sqlite")
    erm = run_fit_config(cfg, Method.ERM, 5, tmp_path, tmp_path / "d.sqlite")
    assert lga.train.lr == 2.0e-5 and erm.train.lr != 2.0e-5
    assert lga.sample.seed == erm.sample.seed == 5 and lga.sample.n_train == 24
    assert lga.descriptions.store is not None and erm.descriptions.store is None  # no balance


def test_shipped_configs_validate():
    for name in ("demo", "waterbirds-vitb32", "waterbirds-vitl14"):
        cfg = load_reproduce_config(name)
        assert set(cfg.methods) >= {"zero-shot", "erm", "lga", "lga-slides"}
        assert cfg.method_of("lga-slides") is Method.LGA
    quick = load_reproduce_config("demo", quick=True)
    assert quick.data.synth["n_test"] < load_reproduce_config("demo").data.synth["n_test"]


def test_teacher_describes_only_the_union_of_samples(config_file, tmp_path):
    from lga.data.synth import SynthConfig, generate

    cfg = load_reproduce_config(config_file)
    root = generate(tmp_path / "data", SynthConfig(**cfg.data.synth))
    ds = training_images(cfg, root, tmp_path / "d.sqlite")
    assert 24 <= len(ds) <= 48 and set(ds.table["split"]) == {0}


@pytest.mark.slow
def test_sweep_over_sizes(config_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        str(config_file),
        "--out",
        str(out),
        "--sizes",
        "24,12",
        "seeds=[0]",
        "methods=[zero-shot,lga]",
    ]  # overrides may follow the flags
    assert main(args) == 0
    results = json.loads((out / "sweep.json").read_text())
    assert set(results) == {"zero-shot", "lga"}
    assert set(results["lga"]) == {"24", "12"}
    assert (out / "sweep.png").stat().st_size > 0
    assert (out / "descriptions.sqlite").is_file()  # one store serves every size
    assert "worst group" in capsys.readouterr().out


def test_failed_descriptions_exit_non_zero_before_fitting(config_file, tmp_path, capsys):
    from lga.testing.fake_chat_server import FakeChatServer

    out = tmp_path / "repro"
    with FakeChatServer(lambda n: "500") as server:
        overrides = [
            f"teacher.spec=openai:{server.base_url}#tiny",
            "teacher.max_retries=0",
            "teacher.backoff=0.01",
            'teacher.options={top_k: 3, stop: ["\\n"]}',  # YAML: a list of one newline
            "seeds=[0]",
            "fit.sample.n_train=4",
        ]
        assert main(["reproduce", str(config_file), "--out", str(out), *overrides]) == 1
        requests = server.requests
    items = len(requests)
    assert 4 <= items < 20, "every item asked once (no retries), under the failure streak limit"
    assert all(r.body["top_k"] == 3 and r.body["stop"] == ["\n"] for r in requests)
    err = capsys.readouterr().err
    assert f"{items} failed: {items} HTTP 500" in err and "no method fitted" in err
    assert not (out / "runs").exists() and not (out / "report").exists()


def test_teacher_options_lga_sets_are_refused_in_configs(config_file):
    with pytest.raises(ConfigError, match="teacher.max_new_tokens"):
        load_reproduce_config(config_file, overrides=["teacher.options={max_tokens: 3}"])


def test_recipes_are_named_columns_of_one_method(config_file, tmp_path):
    recipes = "recipes={lga-plain: {method: lga, fit: {lga: {weights: {supcon: 0.0}}}}}"
    cfg = load_reproduce_config(
        config_file, overrides=[recipes, "methods=[zero-shot,lga,lga-plain]"]
    )
    plain = run_fit_config(cfg, "lga-plain", 0, tmp_path, tmp_path / "d.sqlite")
    lga = run_fit_config(cfg, "lga", 0, tmp_path, tmp_path / "d.sqlite")
    assert plain.method is lga.method is Method.LGA
    assert (plain.name, plain.run_name, lga.name, lga.run_name) == (
        "lga-plain",
        "lga-plain",
        None,
        "lga",
    )
    assert plain.lga.weights.supcon == 0 and lga.lga.weights.supcon == 1
    assert lga.train.lr == 2.0e-5 and plain.train.lr != 2.0e-5  # method_overrides: lga's only
    with pytest.raises(ConfigError, match="neither methods"):
        load_reproduce_config(config_file, overrides=["methods=[zero-shot,lga-nope]"])
    with pytest.raises(ConfigError, match="named like methods"):
        load_reproduce_config(config_file, overrides=["recipes={erm: {method: lga}}"])


def test_balanced_recipe_of_erm_reads_the_store(config_file, tmp_path):
    recipes = "recipes={erm-balanced: {method: erm, fit: {sample: {balance: background}}}}"
    cfg = load_reproduce_config(config_file, overrides=[recipes, "methods=[erm,erm-balanced]"])
    balanced = run_fit_config(cfg, "erm-balanced", 0, tmp_path, tmp_path / "d.sqlite")
    assert balanced.descriptions.store is not None and balanced.sample.balance == "background"


@pytest.mark.slow
def test_sweep_over_the_teacher_fault_rate(config_file, tmp_path, capsys):
    from lga.store.core import DescriptionStore

    out = tmp_path / "tsweep"
    args = ["sweep", str(config_file), "--over", "teacher", "--out", str(out),
            "--kinds", "species_error", "--rates", "1", "--scales", "0,1",
            "seeds=[0]", "methods=[zero-shot,lga]"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "teacher_sweep.json").read_text())
    assert set(results["fixed"]) == {"zero-shot"}  # never reads the teacher: run once
    assert set(results["curves"]["lga"]) == {"species_error-1", "llava-like-0", "llava-like-1"}
    assert all(len(v["worst"]) == 1 for v in results["curves"]["lga"].values())
    assert (out / "report" / "teacher_sweep.png").stat().st_size > 0
    assert "llava-like-1" in (out / "report" / "teacher_sweep.md").read_text()
    with DescriptionStore(out / "descriptions.sqlite", read_only=True) as s:
        settings = {v.settings_hash for v in s.variants("object_description")}
    assert len(settings) == 3  # one store, one variant per teacher
    assert "species_error-1" in capsys.readouterr().out


@pytest.mark.slow
def test_a_finished_run_of_another_recipe_is_never_reused(config_file, tmp_path, capsys):
    out = tmp_path / "repro"
    base = ["reproduce", str(config_file), "--out", str(out), "seeds=[0]", "methods=[lga]"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "method_overrides.lga.train.lr=3e-5"]) == 1
    err = capsys.readouterr().err
    assert "lga-seed0 holds a finished run of another configuration" in err
    assert "train.lr: 2e-05 -> 3e-05" in err


def test_jobs_must_be_positive(config_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", str(config_file), "--out", str(tmp_path / "o"), "--jobs", "0"])
    assert "expected a positive whole number, got '0'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failed_parallel_run_stops_the_reproduction_and_keeps_the_others(
    config_file, tmp_path, capsys
):
    out, bad = tmp_path / "repro", tmp_path / "not-a-folder"
    bad.write_text("")
    args = ["reproduce", str(config_file), "--out", str(out), "--jobs", "2", "seeds=[0]"]
    # the zero-shot run's feature cache cannot be written: its error, in the CLI's words
    assert main([*args, f"method_overrides.zero-shot.eval.cache_dir={bad}"]) == 1
    assert "not-a-folder/features" in capsys.readouterr().err
    assert (out / "runs" / "lga-seed0" / "metrics.json").is_file()
    assert not (out / "runs" / "zero-shot-seed0" / "metrics.json").is_file()
    assert main(args) == 0  # the rerun does what is left
    assert (out / "runs" / "zero-shot-seed0" / "metrics.json").is_file()


def test_the_toy_is_recorded_as_toy_and_runs_that_recorded_its_folder_still_match(tmp_path):
    from lga.student.toy import toy_checkpoint
    from lga.train.fit import config_changes

    cfg = load_reproduce_config("demo", quick=True)
    fc = run_fit_config(cfg, "lga", 0, tmp_path, tmp_path / "d.sqlite")
    assert fc.student.spec == "toy"  # as `lga fit --student toy` records it
    run = tmp_path / "run"
    run.mkdir()
    saved = fc.model_dump(mode="json")
    for spec, changed in ((str(toy_checkpoint()), False), (str(tmp_path / "other"), True)):
        saved["student"]["spec"] = spec  # earlier releases recorded the toy's folder
        (run / "config.yaml").write_text(yaml.safe_dump(saved))
        assert bool(config_changes(fc, run)) == changed, spec


def test_a_bad_column_setting_fails_at_load_before_any_data_is_made(config_file, tmp_path, capsys):
    out = tmp_path / "repro"
    assert main(["reproduce", str(config_file), "--out", str(out), "fit.train.lr=fast"]) == 1
    assert "train.lr" in capsys.readouterr().err and not out.exists()
    with pytest.raises(ConfigError, match="needs a description store"):  # lga, and no teacher
        load_reproduce_config(config_file, overrides=["teacher.spec=null"])
    missing = tmp_path / "no-data"
    assert main(["reproduce", str(config_file), "--out", str(out), "--data", str(missing)]) == 1
    assert f"dataset folder not found: {missing}" in capsys.readouterr().err and not out.exists()
