"""The student: any transformers dual encoder, loaded via AutoModel/AutoProcessor.

``openai/clip-vit-large-patch14``, ``google/siglip-base-patch16-224``, a local directory saved by
``save_pretrained``, or a tiny random checkpoint built by :mod:`lga.testing.families` all go
through the same ``from_pretrained`` path. How each family pads its texts, which image inputs it
takes and how it scores a pair (its own scale and bias) is :mod:`lga.student.families`' table;
:class:`Student` applies it, so callers never branch on the family.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from lga.config import StudentConfig
from lga.errors import ConfigError
from lga.student.families import Family, family_of, select_image_inputs

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
    """A loaded dual encoder with its processor, used with its family's conventions.

    Attributes:
        model: the transformers model (``CLIPModel``, ``SiglipModel``, ``AlignModel``...).
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

    @property
    def family(self) -> Family:
        """The model family's conventions (text padding, scale and bias, towers)."""
        return family_of(self.model)

    @property
    def max_text_length(self) -> int:
        """Tokens the text tower takes (special tokens included); longer texts are truncated."""
        return self.family.max_text_length(self.model, self.tokenizer)

    def preprocess_config(self) -> dict:
        """The image processor's settings, part of every feature-cache key."""
        return json.loads(self.image_processor.to_json_string())

    def image_inputs(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """What ``get_image_features`` takes for ``images``, made by the checkpoint's processor:
        ``pixel_values`` (B, 3, H, W) float32, and for SigLIP 2 NaFlex also
        ``pixel_attention_mask`` (B, P) and ``spatial_shapes`` (B, 2)."""
        processed = self.image_processor(images=list(images), return_tensors="pt")
        return select_image_inputs(self.model, processed)

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, H, W) float32 pixels, resized/cropped/normalised by the checkpoint's processor."""
        return self.image_inputs(images)["pixel_values"]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask of ``texts``, padded and truncated as the family was
        trained: to the longest text, or to a fixed length (SigLIP), always on the right.

        A text's tokens do not depend on the other texts of the batch beyond right padding,
        which the family's pooling and attention mask make irrelevant.
        """
        fixed = self.family.padding == "max_length"
        return self.tokenizer(
            list(texts),
            padding="max_length" if fixed else True,
            padding_side="right",
            truncation=True,
            max_length=self.max_text_length,
            return_tensors="pt",
            return_attention_mask=True,
        )

    def image_features(
        self, pixels: torch.Tensor | Mapping[str, torch.Tensor], *, normalize: bool = True
    ) -> torch.Tensor:
        """(B, D) image embeddings (projected), with gradients if enabled by the caller.

        Args:
            pixels: ``pixel_values`` (B, 3, H, W), or the dict of :meth:`image_inputs`.
            normalize: L2-normalise the embeddings.
        """
        inputs = image_inputs_to(pixels, self.device, self.dtype)
        feats = pooled(self.model.get_image_features(**inputs))
        return F.normalize(feats.float(), dim=-1) if normalize else feats.float()

    def text_features(
        self, tokens: Mapping[str, torch.Tensor], *, normalize: bool = True
    ) -> torch.Tensor:
        """(B, D) text embeddings of tokenised texts (the family's inputs only)."""
        tokens = {k: tokens[k].to(self.device) for k in self.family.text_inputs if k in tokens}
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
            self.image_features(self.image_inputs(images[i : i + batch_size])).cpu()
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out)

    def logit_scale(self) -> torch.Tensor:
        """The model's own scale of cos(image, text), a detached float32 scalar: CLIP's
        exp(logit_scale), ALIGN's 1 / temperature (100 for a model without one)."""
        return self.family.logit_scale(self.model).detach()

    def logit_bias(self) -> torch.Tensor:
        """The model's own logit bias (SigLIP's ``logit_bias``; 0 for families without one)."""
        return self.family.logit_bias(self.model).detach()

    def logits(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """(N, T) ``scale * cos + bias`` of normalised embeddings: the model's
        ``logits_per_image``, with its own scale and bias."""
        scale, bias = self.logit_scale().to(image_feats), self.logit_bias().to(image_feats)
        return scale * image_feats @ text_feats.T + bias

    def pair_probs(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """(N, T) probabilities as the family defines them: a sigmoid per pair (SigLIP: "this
        image matches this text", independent across texts) or a softmax over the texts (CLIP)."""
        logits = self.logits(image_feats, text_feats)
        return logits.sigmoid() if self.family.loss == "sigmoid" else logits.softmax(dim=-1)


def image_inputs_to(
    pixels: torch.Tensor | Mapping[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """``get_image_features`` keyword arguments on ``device``; floating tensors in ``dtype``
    (masks and shapes keep theirs). A bare tensor is ``pixel_values``."""
    items = {"pixel_values": pixels} if isinstance(pixels, torch.Tensor) else dict(pixels)
    return {
        k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in items.items()
    }


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
            run, a folder with a damaged weights file, or one that lacks a part
            (:func:`check_saved_model`).
    """
    from lga.hub import resolve_model_spec
    from lga.rundir import run_model_spec
    from lga.student.toy import resolve_student as resolve_toy

    spec, local = resolve_model_spec(resolve_toy(run_model_spec(spec)), what="student")
    if local:
        check_saved_model(spec)
    return spec


# What a saved folder needs to be scored as it was saved: each part and the files that give it.
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _has_image_processor(path: Path) -> bool:
    if (path / "preprocessor_config.json").is_file():
        return True
    try:
        return "image_processor" in json.loads((path / "processor_config.json").read_text())
    except (OSError, ValueError):
        return False


def check_saved_model(path: str | Path) -> None:
    """Refuse a local checkpoint folder that lacks a part it needs to be scored as saved.

    transformers loads a folder without its tokenizer files as a tokenizer of two tokens, and
    scores every prompt alike; without weights or an image processor it fails deep inside.

    Raises:
        ConfigError: naming the folder and every missing part (config.json, weights, tokenizer,
            image processor) with the files that would give it.
    """
    path = Path(path)
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        missing.append(f"weights ({' or '.join(_WEIGHT_FILES[::2])})")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        missing.append(f"tokenizer ({', '.join(_TOKENIZER_FILES[:3])} ...)")
    if not _has_image_processor(path):
        missing.append("image processor (preprocessor_config.json or processor_config.json)")
    if missing:
        raise ConfigError(
            f"student folder {path} cannot be scored as saved: no {'; no '.join(missing)}"
        )


def load_student(cfg: StudentConfig | str) -> Student:
    """Load a CLIP-family checkpoint (hub id or directory) through AutoModel/AutoProcessor.

    ``toy`` loads the shipped toy CLIP. Safetensors weights are preferred where the checkpoint
    has them (transformers' default); remote code runs only when ``cfg.trust_remote_code`` is set.
    """
    from transformers import AutoModel

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
        raise ConfigError(
            f"{cfg.spec!r} loads as {type(model).__name__}, not a dual encoder "
            "(no get_image_features / get_text_features)"
        )
    processor = _load_processor(cfg.spec, kw)
    model.to(device).eval()
    log.info("loaded student %s (%s) on %s, %s", cfg.spec, type(model).__name__, device, dtype)
    return Student(model, processor, cfg.spec, _weights_fingerprint(cfg.spec, model, cfg.revision))


def _load_processor(spec: str, kw: dict):
    """The checkpoint's processor, or its image processor and tokenizer when it has none.

    Raises:
        ConfigError: they cannot be loaded; when the tokenizer is a SentencePiece model and the
            sentencepiece package is missing, the message names the extra that installs it.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        try:
            processor = AutoProcessor.from_pretrained(spec, **kw)
            if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
                raise ValueError("no image processor and tokenizer")
            return processor
        except (OSError, ValueError, TypeError):
            # Some checkpoints ship the two halves without a processor config.
            image_processor = AutoImageProcessor.from_pretrained(spec, **kw)
            return _Processor(image_processor, AutoTokenizer.from_pretrained(spec, **kw))
    except (ImportError, OSError, ValueError, TypeError) as e:
        if _needs_sentencepiece(spec, e):
            raise ConfigError(
                f"student {spec!r}: its tokenizer is a SentencePiece model, which needs the "
                f"sentencepiece package: pip install 'lga[{SENTENCEPIECE_EXTRA}]'"
            ) from e
        what = "needs a package that is not installed" if isinstance(e, ImportError) else "failed"
        raise ConfigError(f"student {spec!r}: loading its processor {what}: {e}") from e


SENTENCEPIECE_EXTRA = "sentencepiece"
_SENTENCEPIECE_FILES = ("spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


def _needs_sentencepiece(spec: str, error: Exception) -> bool:
    """sentencepiece is not installed, and the tokenizer is a SentencePiece model: a local
    folder shipping one (and no tokenizer.json), or a hub checkpoint whose tokenizer asked for
    a missing library."""
    if importlib.util.find_spec("sentencepiece") is not None:
        return False
    folder = Path(spec)
    if folder.is_dir():
        has_model = any((folder / name).is_file() for name in _SENTENCEPIECE_FILES)
        return has_model and not (folder / "tokenizer.json").is_file()
    return isinstance(error, ImportError)


@dataclass
class _Processor:
    image_processor: object
    tokenizer: object

    def save_pretrained(self, path) -> None:
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
