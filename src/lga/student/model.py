"""The CLIP student: any transformers CLIP-family checkpoint, loaded via AutoModel/AutoProcessor.

``openai/clip-vit-large-patch14``, a local directory saved by ``save_pretrained``, or a tiny random
checkpoint built by :mod:`lga.testing.tiny_clip` all go through the same ``from_pretrained`` path.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from lga.config import StudentConfig
from lga.errors import ConfigError

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but torch sees no CUDA GPU")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """bf16 on a CUDA GPU that supports it, float32 elsewhere, unless set explicitly."""
    if dtype != "auto":
        return _DTYPES[dtype]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def pooled(output) -> torch.Tensor:
    """Embeddings from ``get_*_features``: a tensor (transformers 4) or an output object (5)."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


@dataclass
class Student:
    """A loaded CLIP-family model with its processor.

    Attributes:
        model: the transformers model (``CLIPModel`` or another CLIP-family class).
        processor: its processor (``image_processor`` + ``tokenizer``).
        spec: the hub id or directory it came from.
        fingerprint: identity of the weights (for caches).
    """

    model: torch.nn.Module
    processor: object
    spec: str
    fingerprint: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_processor(self):
        return self.processor.image_processor

    def preprocess_config(self) -> dict:
        """The image processor's settings, part of every feature-cache key."""
        return json.loads(self.image_processor.to_json_string())

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, H, W) float32 pixels, resized/cropped/normalised by the checkpoint's processor."""
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        max_len = getattr(
            self.model.config, "text_config", self.model.config
        ).max_position_embeddings
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )

    def image_features(self, pixel_values: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """(B, D) image embeddings (projected), with gradients if enabled by the caller."""
        pixel_values = pixel_values.to(self.device, self.dtype)
        feats = pooled(self.model.get_image_features(pixel_values=pixel_values))
        return F.normalize(feats.float(), dim=-1) if normalize else feats.float()

    def text_features(
        self, tokens: dict[str, torch.Tensor], *, normalize: bool = True
    ) -> torch.Tensor:
        """(B, D) text embeddings of tokenised texts."""
        tokens = {
            k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")
        }
        feats = pooled(self.model.get_text_features(**tokens))
        return F.normalize(feats.float(), dim=-1) if normalize else feats.float()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """(N, D) normalised text embeddings, batched, on CPU."""
        out = [
            self.text_features(self.tokenize(texts[i : i + batch_size])).cpu()
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, 0)

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image], *, batch_size: int = 64) -> torch.Tensor:
        """(N, D) normalised image embeddings of PIL images, batched, on CPU."""
        out = [
            self.image_features(self.pixel_values(images[i : i + batch_size])).cpu()
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out)

    def logit_scale(self) -> torch.Tensor:
        """CLIP's learned temperature, exp(logit_scale), as a scalar tensor."""
        scale = getattr(self.model, "logit_scale", None)
        return scale.exp().float() if scale is not None else torch.tensor(100.0)


def class_prompts(classes: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """The prompts of each class: ``[[t.format(c) for t in templates] for c in classes]``."""
    return [[t.format(c) for t in templates] for c in classes]


def class_text_features(
    student: Student, classes: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(C, D) class embeddings: each template embedded, normalised, averaged, renormalised (CLIP).

    Gradients flow if enabled by the caller (fine-tuning the text tower).
    """
    prompts = [p for per_class in class_prompts(classes, templates) for p in per_class]
    feats = student.text_features(student.tokenize(prompts))  # (C*T, D)
    feats = feats.view(len(classes), len(templates), -1).mean(dim=1)  # (C, D)
    return F.normalize(feats, dim=-1)


def _weights_fingerprint(spec: str, model: torch.nn.Module, revision: str | None) -> str:
    path = Path(spec)
    h = hashlib.sha256()
    h.update(model.config.to_json_string().encode())
    if path.is_dir():
        for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(str(path.resolve()).encode())
    else:
        commit = getattr(model.config, "_commit_hash", None)
        h.update(f"{spec}@{revision}@{commit}".encode())
    return h.hexdigest()[:20]


def resolve_student_spec(spec: str) -> str:
    """Where a student spec points: ``toy``, a local folder, or a hub id (checked, not fetched).

    ``toy`` names the shipped toy CLIP; a run folder names its model
    (:func:`lga.rundir.run_model_spec`: a run that has not finished is refused). A spec that
    exists on disk, or that can only be a path (:func:`lga.hub.looks_like_path`), must be a
    folder with sound weights: a missing one is reported here, before any request to the Hub.

    Raises:
        ConfigError: the spec is a path that does not exist or is not a folder, an unfinished
            run, or a folder with a damaged weights file.
    """
    from lga.hub import resolve_model_spec
    from lga.rundir import run_model_spec
    from lga.student.toy import resolve_student as resolve_toy

    return resolve_model_spec(resolve_toy(run_model_spec(spec)), what="student")[0]


def load_student(cfg: StudentConfig | str) -> Student:
    """Load a CLIP-family checkpoint (hub id or directory) through AutoModel/AutoProcessor.

    ``toy`` loads the shipped toy CLIP. Safetensors weights are preferred where the checkpoint
    has them (transformers' default); remote code runs only when ``cfg.trust_remote_code`` is set.
    """
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer

    cfg = StudentConfig(spec=cfg) if isinstance(cfg, str) else cfg
    cfg = cfg.model_copy(update={"spec": resolve_student_spec(cfg.spec)})
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    kw = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    try:
        model = AutoModel.from_pretrained(cfg.spec, dtype=dtype, **kw)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load student {cfg.spec!r}: {e}") from e
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ConfigError(f"{cfg.spec!r} loads as {type(model).__name__}, not a CLIP-family model")
    try:
        processor = AutoProcessor.from_pretrained(cfg.spec, **kw)
        if not hasattr(processor, "image_processor"):
            raise ValueError("no image processor")
    except (OSError, ValueError):
        # Some checkpoints ship the two halves without a processor config.
        processor = _Processor(
            AutoImageProcessor.from_pretrained(cfg.spec, **kw),
            AutoTokenizer.from_pretrained(cfg.spec, **kw),
        )
    model.to(device).eval()
    log.info("loaded student %s (%s) on %s, %s", cfg.spec, type(model).__name__, device, dtype)
    return Student(model, processor, cfg.spec, _weights_fingerprint(cfg.spec, model, cfg.revision))


@dataclass
class _Processor:
    image_processor: object
    tokenizer: object

    def save_pretrained(self, path) -> None:
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
