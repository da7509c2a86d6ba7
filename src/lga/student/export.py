"""Export a fine-tuned student's text encoder as a stand-alone transformers text model.

The output directory loads with ``CLIPTextModel.from_pretrained(OUT)`` and
``CLIPTokenizer.from_pretrained(OUT)`` (or ``AutoTokenizer``), like the ``text_encoder`` and
``tokenizer`` folders of a Stable Diffusion pipeline, which can take it in their place:

    pipe.text_encoder = CLIPTextModel.from_pretrained(OUT, torch_dtype=pipe.dtype)

A pipeline's text encoder can only be replaced by one of the same width: Stable Diffusion 1.x
conditions on CLIP ViT-L/14's 768-wide text states, so only a student fine-tuned from ViT-L/14
fits it. ``with_projection`` exports ``CLIPTextModelWithProjection`` (the text tower plus the
projection into the joint space), as SDXL's second text encoder is.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch

from lga.errors import LgaError
from lga.outputs import honour_umask, make_output_dir
from lga.rundir import RunDir

log = logging.getLogger(__name__)

EXPORT_INFO = "lga_export.json"


def resolve_model_dir(source: str | Path) -> Path:
    """``RUN/model`` for a run directory, or ``source`` itself when it is a model directory.

    Raises:
        LgaError: neither (e.g. a zero-shot run, which saves no model).
    """
    src = Path(source)
    rd = RunDir(src)
    if rd.model_dir is not None:
        return rd.model_dir
    if (src / "config.json").is_file():
        return src
    if rd.finished:
        raise LgaError(
            f"{src} has no model/ folder: the run ({rd.read_metrics().get('method', '?')}) "
            "changed no weights; pass a fine-tuned run or a model directory"
        )
    raise LgaError(f"{src} is neither a run directory with model/ nor a model directory")


def _load_clip(model_dir: Path) -> torch.nn.Module:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir)
    if not hasattr(model, "text_model") or not hasattr(model.text_model, "save_pretrained"):
        raise LgaError(
            f"{model_dir} loads as {type(model).__name__}, which has no text tower to export"
        )
    return model


def _with_projection(model: torch.nn.Module) -> torch.nn.Module:
    from transformers import CLIPTextModelWithProjection

    if not hasattr(model, "text_projection"):
        raise LgaError(f"{type(model).__name__} has no text projection to export")
    config = copy.deepcopy(model.config.text_config)
    config.projection_dim = model.config.projection_dim
    config.architectures = ["CLIPTextModelWithProjection"]
    out = CLIPTextModelWithProjection(config).to(model.dtype)
    state = {f"text_model.{k}": v for k, v in model.text_model.state_dict().items()}
    state.update({f"text_projection.{k}": v for k, v in model.text_projection.state_dict().items()})
    out.load_state_dict(state, strict=True)
    return out


def export_text_encoder(
    source: str | Path, out: str | Path, *, with_projection: bool = False
) -> Path:
    """Write the text encoder (+ tokenizer) of a fine-tuned student to ``out``.

    Args:
        source: a run directory (its ``model/`` is used) or a model directory.
        out: the output directory (created; files in it are overwritten).
        with_projection: export ``CLIPTextModelWithProjection`` instead of ``CLIPTextModel``.

    Returns:
        ``out``.
    """
    from transformers import AutoTokenizer

    model_dir = resolve_model_dir(source)
    model = _load_clip(model_dir)
    text = _with_projection(model) if with_projection else model.text_model
    out = Path(out)
    make_output_dir(out, what="export folder")
    text.eval().save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    info = {
        "source": str(Path(source).resolve()),
        "model_dir": str(model_dir.resolve()),
        "class": type(text).__name__,
        "hidden_size": int(text.config.hidden_size),
    }
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    honour_umask(out)
    log.info("exported %s from %s to %s", type(text).__name__, model_dir, out)
    return out
