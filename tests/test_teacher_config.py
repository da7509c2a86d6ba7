"""One TeacherConfig for `lga describe`, `lga.describe` and a reproduce config's `teacher:` block,
and one describe-run builder behind the three; the store's key unchanged by either."""

from __future__ import annotations

import inspect
import sqlite3

import pytest
import yaml

import lga
from lga.api import teacher_config as api_teacher_config
from lga.cli import build_parser, main
from lga.commands.describe import FLAGS, flag
from lga.commands.describe import teacher_config as cli_teacher_config
from lga.data.synth import SynthConfig, generate
from lga.errors import ConfigError
from lga.teacher import TeacherConfig, build_teacher
from lga.teacher.describe_run import DescribeRun
from lga.teacher.hf import HFTeacher
from lga.teacher.openai_compat import OpenAITeacher
from lga.testing.fake_chat_server import FakeChatServer
from lga.workflows.reproduce import (
    ReproduceConfig,
    TeacherRun,
    describe_samples,
    load_reproduce_config,
)

URL = "openai:http://127.0.0.1:9/v1#tiny"
# The settings hashes a describe with default settings wrote before TeacherConfig existed
# (computed on commit 91c430e): the same settings must keep reaching the same store rows.
PINNED_HASHES = {
    "openai": "7e2a9693a564",  # {"max_new_tokens": 128, "temperature": 0, "image_format": "png"}
    "openai top_k=7": "5c83d315c014",
    "oracle": "e47d41819c5b",  # {"version": 1}
    "oracle llava-like": "c2fb6159e2d9",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = SynthConfig(seed=5, n_train=12, n_val=4, n_test=4, size=32)
    return generate(tmp_path_factory.mktemp("world"), cfg, progress=False)


def _cli(*argv: str):
    return build_parser().parse_args(["describe", "--data", "D", "--store", "S", *argv])


def _hashes(store) -> set[str]:
    with sqlite3.connect(store) as db:
        return {h for (h,) in db.execute("SELECT DISTINCT settings_hash FROM descriptions")}


def _keys(store) -> set[tuple]:
    with sqlite3.connect(store) as db:
        return set(db.execute("SELECT dataset, img_id, prompt, prompt_hash, teacher, settings_hash "
                              "FROM descriptions WHERE status = 'done'"))  # fmt: skip


# -- every default written once ---------------------------------------------------------------


def test_every_setting_has_a_flag_whose_default_is_the_dataclass_default():
    args = _cli("--teacher", "oracle")
    describe = next(
        a.choices["describe"] for a in build_parser()._actions if getattr(a, "choices", None)
    )
    flags = {s for a in describe._actions for s in a.option_strings}
    for key in TeacherConfig.keys():
        assert flag(key) in flags, f"TeacherConfig.{key} has no flag"
        if key not in FLAGS:  # spec is required; request_options are KEY=VALUE pairs
            assert getattr(args, key) == TeacherConfig.default(key), key
    shown = describe.format_help()
    for key in ("max_new_tokens", "batch_size", "concurrency", "timeout", "max_retries"):
        assert f"default {TeacherConfig.default(key)}" in " ".join(shown.split()), key


def test_the_backends_defaults_are_the_dataclass_defaults():
    for cls in (HFTeacher, OpenAITeacher):
        params = inspect.signature(cls).parameters
        shared = [k for k in TeacherConfig.keys() if k in params and k != "request_options"]
        assert len(shared) >= 4
        for key in shared:
            assert params[key].default == TeacherConfig.default(key), (cls.__name__, key)


def test_api_and_reproduce_defaults_are_the_dataclass_defaults():
    assert api_teacher_config() == TeacherConfig(spec="oracle")
    assert inspect.signature(lga.describe).parameters["teacher"].default == "oracle"
    assert TeacherRun.from_mapping({"spec": "oracle"}).config == TeacherConfig(spec="oracle")
    assert ReproduceConfig(name="x", methods=["erm"]).teacher.config == TeacherConfig()


def test_the_teacher_package_names_load_lazily():
    import subprocess
    import sys

    import lga.teacher

    assert sorted(lga.teacher.__all__) == sorted(lga.teacher._WHERE)
    assert all(getattr(lga.teacher, name) is not None for name in lga.teacher.__all__)
    code = "import sys, lga.teacher.config; print('pandas' in sys.modules, 'PIL' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"], done.stderr


# -- the three entry points agree ---------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {
            "max_new_tokens": 64,
            "concurrency": 3,
            "timeout": 5.0,
            "max_retries": 0,
            "backoff": 0.5,
            "api_key_env": "MY_KEY",
            "request_options": {"top_k": 3, "stop": ["\n"]},
        },
        {"batch_size": 2, "device": "cpu", "trust_remote_code": True, "max_new_tokens": 9},
    ],
)
def test_equal_inputs_give_equal_configs(settings):
    argv = ["--teacher", URL]
    for key, value in settings.items():
        if key == "request_options":
            argv += [a for k, v in value.items() for a in ("--teacher-option", f"{k}={v!r}")]
            argv = [a.replace("'", '"') for a in argv]  # JSON strings
        elif value is True:
            argv.append(flag(key))
        else:
            argv += [flag(key), str(value)]
    from_cli = cli_teacher_config(_cli(*argv))
    from_api = api_teacher_config(URL, **settings)
    block = {"spec": URL, **settings}
    if "request_options" in block:  # the block's older name still reads the same
        block["options"] = block.pop("request_options")
    from_yaml = TeacherRun.from_mapping(yaml.safe_load(yaml.safe_dump(block))).config
    assert from_cli == from_api == from_yaml
    assert TeacherConfig.from_mapping(from_cli.to_mapping()) == from_cli
    for key, value in settings.items():
        assert getattr(from_cli, key) == value


def test_cli_api_and_reproduce_build_their_runs_alike(world, tmp_path, monkeypatch):
    runs: list[DescribeRun] = []
    original = DescribeRun.run

    def recorded(self, *args, **kw):
        runs.append(self)
        return original(self, *args, **kw)

    monkeypatch.setattr(DescribeRun, "run", recorded)
    store = tmp_path / "d.sqlite"
    opt = {"faults": "llava-like"}
    argv = ["describe", "--data", str(world), "--store", str(store), "--teacher", "oracle",
            "--teacher-option", "faults=llava-like", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    lga.describe(world, teacher="oracle", store=store, request_options=opt)
    cfg = ReproduceConfig.model_validate({
        "name": "t", "teacher": {"spec": "oracle", "options": opt}, "student": {"spec": "toy"},
        "methods": ["lga"], "fit": {"sample": {"n_train": 8}},
    })  # fmt: skip
    describe_samples(cfg, world, store, progress=False)
    cli, api, repro = runs
    assert cli.teacher == api.teacher == repro.teacher
    assert cli.teacher == TeacherConfig("oracle", request_options=opt)
    assert cli.prompts == api.prompts == repro.prompts and len(cli.prompts) == 4
    assert cli.store == api.store == repro.store and cli.data_root == api.data_root
    assert list(cli.images.img_ids) == list(api.images.img_ids)
    assert set(repro.images.img_ids) < set(cli.images.img_ids)  # the union of the samples
    assert cli.progress is False and api.progress is False
    assert _hashes(store) == {PINNED_HASHES["oracle llava-like"]}  # one variant: rows reused
    assert len(_keys(store)) == len(cli.images) * 4


# -- the store's key is what it was --------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "settings", "pin"),
    [
        ("oracle", {}, "oracle"),
        ("oracle", {"request_options": {"faults": "llava-like"}}, "oracle llava-like"),
        (URL, {}, "openai"),
        (URL, {"request_options": {"top_k": 7}}, "openai top_k=7"),
    ],
)
def test_default_settings_keep_their_settings_hash(world, spec, settings, pin):
    from lga.store.keys import settings_key

    teacher = build_teacher(api_teacher_config(spec, **settings), data_root=world)
    assert settings_key(teacher.settings, "none")[0] == PINNED_HASHES[pin]


def test_a_default_openai_describe_hits_the_pinned_rows(world, tmp_path):
    store = tmp_path / "d.sqlite"
    with FakeChatServer() as server:
        spec = f"openai:{server.base_url}#tiny"
        argv = ["describe", "--data", str(world), "--store", str(store), "--teacher", spec,
                "--no-progress", "--limit", "2"]  # fmt: skip
        assert main(argv) == 0
        rows = _keys(store)
        asked = len(server.requests)
        summary = lga.describe(world, teacher=spec, store=store, split="train")
    assert _hashes(store) == {PINNED_HASHES["openai"]} and len(rows) == 8
    assert rows <= _keys(store) and summary.skipped >= 8  # the API reused the CLI's rows
    assert asked >= 8


# -- bad settings are named, with their file -----------------------------------------------------


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ({"spec": "oracle", "max_new_token": 5}, "teacher.max_new_token: unknown teacher setting"),
        ({"spec": "oracle", "max_new_tokens": "many"}, "teacher.max_new_tokens: 'many' is not an"),
        ({"spec": "oracle", "batch_size": 0}, "teacher.batch_size: 0 is below 1"),
        ({"spec": "oracle", "timeout": True}, "teacher.timeout: True is not a number"),
        ({"spec": "oracle", "timeout": 0}, "teacher.timeout: 0 must be above 0"),
        ({"spec": "gpt"}, "teacher.spec: bad teacher spec 'gpt'"),
        ({"spec": "oracle", "options": {"n": 3}}, "teacher.request_options: teacher option 'n'"),
        ({"spec": "oracle", "options": [1]}, "teacher.request_options: [1] is not a mapping"),
        ({"options": {}, "request_options": {}}, "teacher: give options or request_options"),
        ({"spec": "oracle", "store": 3}, "teacher.store: 3 is not a path"),
        ("oracle", "teacher: must be a mapping"),
    ],
)
def test_a_bad_teacher_block_is_named_with_its_file(tmp_path, block, words):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "methods": ["erm"], "teacher": block}))
    with pytest.raises(ConfigError) as e:
        load_reproduce_config(path)
    assert str(e.value).startswith(f"{path}: {words}")
    assert "\n" not in str(e.value)


def test_a_bad_override_is_named_by_its_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "methods": ["erm"]}))
    with pytest.raises(ConfigError, match="teacher: concurrency: -1 is below 1"):
        load_reproduce_config(path, overrides=["teacher.concurrency=-1"])


def test_bad_api_and_cli_settings_are_named_as_given(world, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^lga.describe\(\): max_new_token: unknown teacher"):
        lga.describe(world, store=tmp_path / "d.sqlite", max_new_token=5)
    with pytest.raises(ConfigError, match=r"^lga.describe\(\): teacher: bad teacher spec"):
        lga.describe(world, teacher="gpt", store=tmp_path / "d.sqlite")
    argv = ["describe", "--data", str(world), "--store", str(tmp_path / "d.sqlite"),
            "--teacher", "oracle", "--batch-size", "0"]  # fmt: skip
    assert main(argv) == 1
    assert "error: --batch-size: 0 is below 1" in capsys.readouterr().err
    assert not (tmp_path / "d.sqlite").exists()  # refused before any work


def test_backends_check_their_settings_through_the_config():
    with pytest.raises(ConfigError, match="teacher.concurrency: 0 is below 1"):
        OpenAITeacher("http://127.0.0.1:9/v1", "m", concurrency=0)
    with pytest.raises(ConfigError, match="teacher.max_retries: -1 is below 0"):
        TeacherConfig(spec=URL).replace(max_retries=-1)
    with pytest.raises(ConfigError, match="the hf teacher takes none"):
        build_teacher(TeacherConfig(spec="hf:x", request_options={"top_k": 1}))
