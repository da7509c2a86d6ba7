"""One FitConfig builder: ``lga fit``, ``lga.fit_config`` and ``lga reproduce`` give equal
configurations for equal inputs, layered the same way."""

from __future__ import annotations

import pytest
import yaml

import lga
from lga.cli import build_parser
from lga.commands.fit import resolve_fit_config
from lga.errors import ConfigError
from lga.train.config import FitConfig, build_fit_config
from lga.workflows.reproduce import load_reproduce_config, run_fit_config

STUDENT = "some/clip-checkpoint"  # a spec as given (the builder neither loads nor checks it)


def _three_ways(tmp_path, method: str, run_file: str, seed: int, changes: dict) -> list[FitConfig]:
    """The CLI's, the API's and reproduce's FitConfig of one (method, run file, seed, changes)."""
    data, store = tmp_path / "data", tmp_path / "d.sqlite"
    dotted = [f"{s}.{k}={v}" for s, kv in changes.items() for k, v in kv.items()]
    cli = resolve_fit_config(
        build_parser().parse_args(
            ["fit", "--data", str(data), "--method", method, "--student", STUDENT,
             "--descriptions", str(store), "--config", run_file, "--seed", str(seed), *dotted]
        )
    )  # fmt: skip
    api = lga.fit_config(
        method,
        data,
        student=STUDENT,
        descriptions=store,
        config=run_file,
        overrides=[*dotted, f"sample.seed={seed}", f"train.seed={seed}"],
    )
    repro_file = tmp_path / "repro.yaml"
    repro_file.write_text(
        yaml.safe_dump(
            {"name": "x", "student": {"spec": STUDENT}, "methods": [method], "seeds": [seed],
             "teacher": {"store": str(store)}, "fit_base": run_file, "fit": changes}
        )
    )  # fmt: skip
    repro = run_fit_config(load_reproduce_config(repro_file), method, seed, data, store)
    return [cli, api, repro]


@pytest.mark.parametrize(
    ("method", "run_file", "seed", "changes"),
    [
        ("lga", "waterbirds-vitb32", 3, {"train": {"epochs": 1}, "lga": {"temperature": 0.2}}),
        ("spurious-aware", "waterbirds-vitl14", 0, {"sample": {"n_train": 100}}),
    ],
)
def test_cli_api_and_reproduce_give_equal_configs(tmp_path, method, run_file, seed, changes):
    cli, api, repro = _three_ways(tmp_path, method, run_file, seed, changes)
    assert cli == api == repro
    assert cli.method.value == method and cli.sample.seed == cli.train.seed == seed
    section, values = next(iter(changes.items()))
    assert all(getattr(getattr(cli, section), k) == v for k, v in values.items())


def test_layers_run_file_then_settings_then_named_then_overrides(tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({"method": "erm", "student": {"spec": "from-file"},
                                        "train": {"lr": 1e-4, "epochs": 7}}))  # fmt: skip
    cfg = build_fit_config(
        data=tmp_path,
        run_file=run_file,
        defaults={"tracking": {"group": "g"}, "train": {"epochs": 9}},
        settings={"train": {"lr": 2e-4}, "sample": {"seed": 8}},
        seed=4,
        overrides=["train.lr=3e-4"],
    )
    assert cfg.method.value == "erm" and cfg.student.spec == "from-file"  # the file's
    assert cfg.train.epochs == 7  # file over defaults
    assert cfg.tracking.group == "g"  # defaults where nothing above sets it
    assert cfg.sample.seed == cfg.train.seed == 4  # named over settings
    assert cfg.train.lr == 3e-4  # overrides last
    assert build_fit_config(data=tmp_path, run_file=run_file, method="dfr").method.value == "dfr"


def test_reproduce_gives_the_store_only_to_runs_that_read_the_teacher(tmp_path):
    repro_file = tmp_path / "repro.yaml"
    repro_file.write_text(
        yaml.safe_dump({"name": "x", "methods": ["erm", "lga"], "teacher": {"spec": "oracle"}})
    )
    cfg = load_reproduce_config(repro_file)
    store, variant = tmp_path / "d.sqlite", {"teacher": "oracle", "settings_hash": "abc"}
    lga_cfg = run_fit_config(cfg, "lga", 0, tmp_path, store, variant=variant)
    erm_cfg = run_fit_config(cfg, "erm", 0, tmp_path, store, variant=variant)
    assert lga_cfg.descriptions.store == store and lga_cfg.descriptions.teacher == "oracle"
    assert erm_cfg.descriptions.store is None and erm_cfg.descriptions.teacher is None
    assert lga_cfg.reads_teacher and not erm_cfg.reads_teacher


def test_a_bad_key_is_named_whichever_path_builds(tmp_path):
    with pytest.raises(ConfigError, match="train.lr"):
        lga.fit_config("erm", tmp_path, overrides=["train.lr=fast"])
    with pytest.raises(ConfigError, match="train.lrr"):
        build_fit_config(method="erm", data=tmp_path, settings={"train": {"lrr": 1}})


def test_drop_filter_without_the_description_head_is_refused(tmp_path):
    store = f"descriptions.store={tmp_path / 'd.sqlite'}"
    with pytest.raises(ConfigError, match="lga.filter=drop .* needs lga.head=descriptions"):
        lga.fit_config("lga", tmp_path, overrides=[store, "lga.filter=drop"])
    ok = [store, "lga.filter=drop", "lga.head=descriptions"]
    assert lga.fit_config("lga", tmp_path, overrides=ok).lga.filter == "drop"


def test_an_override_of_another_methods_settings_is_warned_about(tmp_path, caplog):
    """lga.project=background on an erm run is valid and changes nothing: a warning says so;
    the same override on an lga run, or a shared section on any, warns nothing."""
    store = f"descriptions.store={tmp_path / 'd.sqlite'}"
    with caplog.at_level("WARNING", logger="lga.train.config"):
        cfg = lga.fit_config("erm", tmp_path, overrides=["lga.project=background", "dfr.subsets=3"])
    assert cfg.lga.project == "background"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert "lga.project=background: only --method lga reads the lga settings" in warned[0]
    assert "this erm run ignores it" in warned[0] and "--method dfr" in warned[1]
    caplog.clear()
    with caplog.at_level("WARNING", logger="lga.train.config"):
        lga.fit_config(
            "lga", tmp_path, overrides=[store, "lga.project=background", "train.lr=1e-5"]
        )
    assert not caplog.records
