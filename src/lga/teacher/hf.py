"""The transformers teacher: LLaVA (or any image-text-to-text model) on a local GPU or CPU.

``AutoProcessor`` + ``AutoModelForImageTextToText``, left padding, batched greedy generation,
bf16 on CUDA. How a family's prompts are written, its images laid out and what it needs installed
is its entry in :mod:`lga.teacher.families` (LLaVA 1.5 / NeXT / OneVision, Qwen2-VL, Qwen2.5-VL,
Qwen3-VL, Idefics3, SmolVLM, Gemma 3, PaliGemma, InternVL). ``llava-hf/llava-1.5-7b-hf`` is the
documented default.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lga.data.images import ImageLoadError
from lga.errors import ConfigError, LgaError
from lga.hub import resolve_model_spec
from lga.teacher.base import FailureKind, Outcome, Results, WorkItem
from lga.teacher.config import TeacherConfig
from lga.teacher.families import FAMILIES, Family, PromptStyle, family_for

log = logging.getLogger(__name__)

DEFAULT_MODEL = "llava-hf/llava-1.5-7b-hf"
_DEFAULT = TeacherConfig()  # the settings' defaults, written once there


def _batches(items: Iterable[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    batch: list[WorkItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _resolve_device(device: str) -> tuple[Any, Any]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return torch.device(device), dtype


class HFTeacher:
    """A transformers image-text-to-text model answering in batches.

    Args:
        model: a hub id (``llava-hf/llava-1.5-7b-hf``) or a local checkpoint folder.
        max_new_tokens, batch_size, device, trust_remote_code: the settings of
            :class:`lga.teacher.config.TeacherConfig` (its defaults; checked by it).

    Raises:
        ConfigError: a setting out of range.
        LgaError: the checkpoint cannot be loaded (the message says why).
    """

    def __init__(
        self,
        model: str,
        *,
        max_new_tokens: int = _DEFAULT.max_new_tokens,
        batch_size: int = _DEFAULT.batch_size,
        device: str = _DEFAULT.device,
        trust_remote_code: bool = _DEFAULT.trust_remote_code,
    ):
        cfg = TeacherConfig(  # the one place the settings are checked
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            device=device,
            trust_remote_code=trust_remote_code,
        )
        self.id = f"hf:{model.rstrip('/')}"
        self.settings: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "decoding": "greedy"}
        self.batch_size = cfg.batch_size
        self.max_new_tokens = cfg.max_new_tokens
        self.device, self.dtype = _resolve_device(cfg.device)
        self.family, self.processor, self.model = _load(model, self.dtype, cfg.trust_remote_code)
        if self.family.prompt is PromptStyle.PLAIN:  # the prompt's frame changes the answers
            self.settings["prompt_format"] = self.family.plain_format
        self.model.to(self.device).eval()
        log.info("teacher %s on %s (%s)", self.id, self.device, self.dtype)

    def describe(self, items: Iterable[WorkItem]) -> Results:
        for batch in _batches(items, self.batch_size):
            yield self._run_batch(batch)

    def close(self) -> None:
        del self.model
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    def _run_batch(self, batch: list[WorkItem]) -> list[tuple[WorkItem, Outcome]]:
        results: list[tuple[WorkItem, Outcome]] = []
        ready, images = [], []
        for item in batch:
            try:
                images.append(item.load_image())
                ready.append(item)
            except (ImageLoadError, OSError, LgaError) as e:
                results.append((item, Outcome(error=f"image: {e}", kind=FailureKind.IMAGE)))
        if ready:
            results.extend(self._answer(ready, images))
        return results

    def _answer(self, items: list[WorkItem], images: list) -> list[tuple[WorkItem, Outcome]]:
        start = time.perf_counter()
        try:
            texts = self.generate(images, [it.prompt.text for it in items])
        except Exception as e:  # noqa: BLE001 - one bad batch must not end a 47k-item run
            if len(items) > 1:
                log.warning("batch of %d failed (%s); retrying one by one", len(items), e)
                return [
                    r
                    for it, im in zip(items, images, strict=True)
                    for r in self._answer([it], [im])
                ]
            log.warning("img_id %s / %s failed: %s", items[0].img_id, items[0].prompt.name, e)
            return [(items[0], Outcome(error=f"{type(e).__name__}: {e}", kind=FailureKind.MODEL))]
        latency = (time.perf_counter() - start) / len(items)
        return [
            (it, Outcome(text=t, latency_s=latency)) for it, t in zip(items, texts, strict=True)
        ]

    def generate(self, images: list, prompts: list[str]) -> list[str]:
        """Greedy answers to (image, prompt) pairs, one ``generate`` call."""
        import torch

        inputs = self.encode(images, prompts).to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self._pad_id(),
            )
        new = out[:, inputs["input_ids"].shape[1] :]  # (B, T_new): only the generated tokens
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def encode(self, images: list, prompts: list[str]):
        """The processor's left-padded batch for (image, prompt) pairs, in the family's way."""
        return self.family.encode(self.processor, images, prompts)

    def _pad_id(self) -> int | None:
        tok = self.processor.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _load(model: str, dtype: Any, trust_remote_code: bool) -> tuple[Family, Any, Any]:
    """(family, processor, model) of a checkpoint; every failure one LgaError line."""
    source, _ = resolve_model_spec(model, what="teacher checkpoint")
    kw = {"trust_remote_code": trust_remote_code}
    family = _family(model, source, kw)
    processor = _load_processor(model, source, family, kw)
    net = _load_model(model, source, dtype, kw)
    processor.tokenizer.padding_side = "left"  # generation continues from every row's right end
    return family, processor, net


def _family(model: str, source: str, kw: dict) -> Family:
    """The checkpoint's family, its modules checked; an image-text-to-text model or refused."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(source, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise LgaError(f"cannot load teacher {model}: {_first_line(e)}") from e
    model_type = getattr(config, "model_type", "?")
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and not kw["trust_remote_code"]:
        arch = ", ".join(getattr(config, "architectures", None) or []) or model_type
        raise LgaError(
            f"teacher {model} is a {model_type} checkpoint ({arch}), not an image-text-to-text "
            f"model; teachers are {', '.join(f.name for f in FAMILIES.values())}"
        )
    family = family_for(model_type)
    family.check_installed(model)
    return family


def _load_processor(model: str, source: str, family: Family, kw: dict) -> Any:
    from transformers import AutoProcessor

    folder = Path(source)
    if (
        (folder / "tokenizer.model").is_file()
        and not (folder / "tokenizer.json").is_file()
        and importlib.util.find_spec("sentencepiece") is None
    ):
        raise LgaError(
            f"teacher {model} ships only a sentencepiece tokenizer.model, and sentencepiece is "
            "not installed; pip install 'lga[sentencepiece]'"
        )
    try:
        processor = AutoProcessor.from_pretrained(source, **kw)
    except ImportError as e:
        hint = f"; pip install 'lga[{family.extra}]'" if family.extra else ""
        raise LgaError(f"teacher {model}: its processor needs {_first_line(e)}{hint}") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LgaError(f"cannot load the processor of teacher {model}: {_first_line(e)}") from e
    _check_processor(model, family, processor)
    return processor


def _load_model(model: str, source: str, dtype: Any, kw: dict) -> Any:
    import transformers
    from safetensors import SafetensorError
    from transformers import AutoModelForImageTextToText

    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        return AutoModelForImageTextToText.from_pretrained(source, **{dtype_kw: dtype}, **kw)
    except SafetensorError as e:  # damage the header check cannot see (a file in the hub cache)
        raise LgaError(f"damaged weights file in teacher {model}: {_first_line(e)}") from e
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise LgaError(f"cannot load teacher {model}: {_first_line(e)}") from e


def _check_processor(model: str, family: Family, processor: Any) -> None:
    if getattr(processor, "tokenizer", None) is None:
        raise LgaError(f"teacher {model}: the processor has no tokenizer")
    if family.prompt is PromptStyle.CHAT and getattr(processor, "chat_template", None) is None:
        raise LgaError(
            f"teacher {model}: the processor has no chat template (chat_template.jinja); "
            "a base model needs a plain prompt format in lga.teacher.families"
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0]
    return line if len(line) <= 300 else line[:297] + "..."
