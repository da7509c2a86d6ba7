"""Tests of lga.student.export: the exported text encoder is the fine-tuned CLIP's text tower."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lga.cli import main
from lga.errors import LgaError
from lga.student.export import export_text_encoder

TEXTS = ["a photo of a waterbird .", "the bird has webbed feet long neck", "lake"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_clip_dir) -> Path:
    """A fine-tuned run: model/ is the tiny CLIP with its text tower perturbed."""
    from transformers import CLIPModel

    run = tmp_path_factory.mktemp("export") / "run"
    model = CLIPModel.from_pretrained(tiny_clip_dir)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.text_model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(run / "model")
    for f in tiny_clip_dir.iterdir():
        if f.name.startswith(("tokenizer", "processor", "preprocessor", "special")):
            shutil.copy(f, run / "model")
    (run / "metrics.json").write_text("{}")
    return run


def _outputs(model, tokenizer):
    tokens = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])


def test_round_trip_equals_fine_tuned_text_tower(run, tmp_path, tiny_clip_dir):
    from transformers import AutoTokenizer, CLIPModel, CLIPTextModel

    out = export_text_encoder(run, tmp_path / "te")
    text = CLIPTextModel.from_pretrained(out).eval()
    clip = CLIPModel.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(out)
    ref_tok = AutoTokenizer.from_pretrained(run / "model")
    assert tok(TEXTS)["input_ids"] == ref_tok(TEXTS)["input_ids"]
    got, ref = _outputs(text, tok), _outputs(clip.text_model, ref_tok)
    assert torch.equal(got.last_hidden_state, ref.last_hidden_state)
    assert torch.equal(got.pooler_output, ref.pooler_output)
    # ... and it is the fine-tuned tower, not the base one.
    base = _outputs(CLIPModel.from_pretrained(tiny_clip_dir).text_model.eval(), ref_tok)
    assert not torch.allclose(got.last_hidden_state, base.last_hidden_state)


def test_exported_files_get_the_mode_of_the_umask(run, tmp_path):
    import os
    import stat

    old = os.umask(0o027)
    try:
        out = export_text_encoder(run, tmp_path / "te")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o640}


def test_with_projection_gives_clip_text_features(run, tmp_path):
    from transformers import AutoTokenizer, CLIPModel, CLIPTextModelWithProjection

    out = export_text_encoder(run / "model", tmp_path / "tep", with_projection=True)
    text = CLIPTextModelWithProjection.from_pretrained(out).eval()
    clip = CLIPModel.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(out)
    tokens = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = clip.get_text_features(**tokens).pooler_output
        got = text(**tokens).text_embeds
    assert torch.allclose(got, ref, atol=1e-6)


def test_zero_shot_run_has_nothing_to_export(tmp_path):
    (tmp_path / "zs").mkdir()
    (tmp_path / "zs" / "metrics.json").write_text('{"method": "zero-shot"}')
    with pytest.raises(LgaError, match=r"no model/ folder: the run \(zero-shot\) changed no"):
        export_text_encoder(tmp_path / "zs", tmp_path / "out")
    with pytest.raises(LgaError, match="neither"):
        export_text_encoder(tmp_path / "nothing", tmp_path / "out")


def test_cli(run, tmp_path, capsys):
    assert main(["export-text-encoder", str(run), str(tmp_path / "te")]) == 0
    assert "CLIPTextModel.from_pretrained" in capsys.readouterr().out
    assert (tmp_path / "te" / "config.json").is_file()
    assert (tmp_path / "te" / "lga_export.json").is_file()
