"""The oracle teacher with a real teacher's faults, and the audit that checks answers against the
synthetic attributes (lga.teacher.faults, lga.teacher.audit)."""

from __future__ import annotations

import pytest

from lga.data.attributes import read_attributes
from lga.data.synth import SynthConfig, generate
from lga.data.synth.species import BACKGROUNDS, CLASSES, SPECIES
from lga.errors import ConfigError
from lga.teacher import TeacherConfig, build_teacher
from lga.teacher.audit import audit_answers, named_species, read_place
from lga.teacher.base import WorkItem
from lga.teacher.faults import PRESETS, FaultRates, fault_rates
from lga.teacher.prompts import Target, load_prompt_set

PLACE_OF = {bg: p for p, kinds in BACKGROUNDS.items() for bg in kinds}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # 400 training images at 0.6 correlation: many images in every group
    cfg = SynthConfig(seed=11, n_train=400, n_val=8, n_test=8, size=32, correlation=0.6)
    return generate(tmp_path_factory.mktemp("faults") / "data", cfg)


@pytest.fixture(scope="module")
def prompts():
    return load_prompt_set("waterbirds").prompts


def answers(root, prompts, **options):
    teacher = build_teacher(TeacherConfig(spec="oracle", request_options=options), data_root=root)
    attrs = read_attributes(root, ("img_id",))
    out = {}
    for img_id in sorted(attrs):
        for p in prompts:
            out[(img_id, p.name)] = teacher.answer(WorkItem(img_id, p, lambda: None)).text
    return teacher, out


def object_names(prompts):
    return [p.name for p in prompts if Target(p.target) is Target.OBJECT]


def background_names(prompts):
    return [p.name for p in prompts if Target(p.target) is Target.BACKGROUND]


def test_rate_zero_is_the_perfect_oracle_with_its_old_settings(world, prompts):
    perfect, a = answers(world, prompts)
    zero, b = answers(world, prompts, species_error=0, background_bias=0, object_leak=0,
                      background_error=0)  # fmt: skip
    scaled, c = answers(world, prompts, faults="llava-like", fault_scale=0)
    assert a == b == c
    assert perfect.settings == zero.settings == scaled.settings == {"version": 1}


def test_species_error_one_names_a_wrong_species_in_every_object_answer(world, prompts):
    attrs = read_attributes(world, ("img_id", "species"))
    _, a = answers(world, prompts, species_error=1)
    names = tuple(SPECIES)
    for (img_id, prompt), text in a.items():
        if prompt in object_names(prompts):
            named = named_species(text, names)
            assert named is not None and named != attrs[img_id]["species"], text
    _, ok = answers(world, prompts)
    assert all(
        named_species(t, names) == attrs[i]["species"]
        for (i, p), t in ok.items()
        if p in object_names(prompts)
    )


def test_background_bias_one_follows_the_background_only_where_it_disagrees(world, prompts):
    attrs = read_attributes(world, ("img_id", "y", "species", "background"))
    _, biased = answers(world, prompts, background_bias=1)
    _, perfect = answers(world, prompts)
    minority = 0
    for (img_id, prompt), text in biased.items():
        if prompt not in object_names(prompts):
            assert text == perfect[(img_id, prompt)]
            continue
        a = attrs[img_id]
        place = PLACE_OF[a["background"]]
        if place == int(a["y"]):
            assert text == perfect[(img_id, prompt)]  # the bias agrees with the truth
        else:
            minority += 1
            named = named_species(text, tuple(SPECIES))
            assert SPECIES[named].y == place, (text, a)  # a waterbird on land: a landbird
    assert minority > 50


def test_object_leak_one_describes_the_true_background_in_every_object_answer(world, prompts):
    attrs = read_attributes(world, ("img_id", "background"))
    _, leaky = answers(world, prompts, object_leak=1)
    _, perfect = answers(world, prompts)
    for (img_id, prompt), text in leaky.items():
        if prompt in object_names(prompts):
            assert text.startswith(perfect[(img_id, prompt)].rstrip())
            place = "land" if PLACE_OF[attrs[img_id]["background"]] == 0 else "water"
            assert read_place(text) == place, text
            assert read_place(perfect[(img_id, prompt)]) == "ambiguous"  # no place words
        else:
            assert text == perfect[(img_id, prompt)]


def test_background_error_one_misreads_every_background(world, prompts):
    attrs = read_attributes(world, ("img_id", "background"))
    _, wrong = answers(world, prompts, background_error=1)
    kinds = {"flipped": 0, "ambiguous": 0}
    for (img_id, prompt), text in wrong.items():
        if prompt not in background_names(prompts):
            continue
        truth = "land" if PLACE_OF[attrs[img_id]["background"]] == 0 else "water"
        seen = read_place(text)
        assert seen != truth, text
        kinds["ambiguous" if seen == "ambiguous" else "flipped"] += 1
    assert min(kinds.values()) > 0.3 * sum(kinds.values()), kinds  # about half each


def test_the_same_image_gets_the_same_answer_twice_and_one_species_per_image(world, prompts):
    _, a = answers(world, prompts, faults="llava-like")
    _, b = answers(world, prompts, faults="llava-like")
    assert a == b
    objects = object_names(prompts)
    ids = {i for i, _ in a}
    for i in ids:
        named = {named_species(a[(i, p)], tuple(SPECIES)) for p in objects}
        assert len(named) == 1


def test_options_resolve_presets_scales_and_refuse_bad_values():
    llava = PRESETS["llava-like"]
    assert fault_rates({"faults": "llava-like"}) == llava
    double = fault_rates({"faults": "llava-like", "fault_scale": 2})
    assert double.species_error == pytest.approx(min(1, 2 * llava.species_error))
    assert double.object_leak == 1.0  # capped
    assert fault_rates({"faults": "llava-like", "object_leak": 0}).object_leak == 0
    assert fault_rates({}) == FaultRates()
    for bad in ({"species_error": 1.5}, {"species_error": "x"}, {"faults": "gpt"},
                {"fault_scale": -1}, {"top_k": 3}, {"species_error": float("nan")}):  # fmt: skip
        with pytest.raises(ConfigError):
            fault_rates(bad)
    with pytest.raises(ConfigError) as e:  # the field and pydantic's words, not its help link
        fault_rates({"species_error": 1.5})
    assert "(species_error: Input should be less than or equal to 1)" in str(e.value)
    assert "pydantic.dev" not in str(e.value)


def test_other_rates_are_other_generation_settings(world):
    a = build_teacher(TeacherConfig(spec="oracle", request_options={"species_error": 0.2}),
                      data_root=world)  # fmt: skip
    b = build_teacher(TeacherConfig(spec="oracle", request_options={"species_error": 0.3}),
                      data_root=world)  # fmt: skip
    assert a.settings != b.settings and a.settings["faults"] == {"species_error": 0.2}


def test_audit_measures_the_rates_the_oracle_was_given(world, prompts):
    import pandas as pd

    rates = {"species_error": 0.3, "object_leak": 0.5, "background_error": 0.2}
    _, a = answers(world, prompts, **rates)
    frame = pd.DataFrame([(i, p, t) for (i, p), t in a.items()], columns=["img_id", "prompt",
                                                                           "text"])  # fmt: skip
    table = audit_answers(frame, world, object_names(prompts), background_names(prompts))
    total = table.set_index("group").loc["all"]
    assert total["images"] == 416
    assert total["wrong_species"] == pytest.approx(0.3, abs=0.06)
    assert total["leak"] == pytest.approx(0.5, abs=0.07)
    assert total["wrong_place"] + total["ambiguous"] == pytest.approx(0.2, abs=0.06)
    # about half of the wrong species are of the other class (4 of the 7 other species)
    assert total["wrong_class"] == pytest.approx(0.3 * 4 / 7, abs=0.06)
    groups = set(table["group"]) - {"all"}
    assert groups == {f"{c}/{p}" for c in CLASSES for p in ("land", "water")}


def test_store_stats_with_data_prints_the_audit(world, tmp_path, capsys):
    from lga.cli import main

    store = tmp_path / "s.sqlite"
    args = ["describe", "--data", str(world), "--teacher", "oracle", "--store", str(store),
            "--no-progress", "--teacher-option", "background_bias=1"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["store", "stats", str(store), "--data", str(world)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if "bird/" in line}
    # columns: group images wrong_species wrong_class leak wrong_place ambiguous
    assert float(rows["waterbird/land"][3]) == 100.0 and float(rows["landbird/water"][3]) == 100.0
    assert float(rows["waterbird/water"][3]) == 0.0 and float(rows["landbird/land"][3]) == 0.0
