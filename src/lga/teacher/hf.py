"""The transformers teacher: LLaVA (or any image-text-to-text model) on a local GPU or CPU.

``AutoProcessor`` + ``LlavaForConditionalGeneration`` (``AutoModelForImageTextToText`` for other
architectures), the processor's chat template, left padding, batched greedy generation, bf16 on
CUDA. ``llava-hf/llava-1.5-7b-hf`` is the documented default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lga.data.images import ImageLoadError
from lga.errors import ConfigError, LgaError
from lga.teacher.base import FailureKind, Outcome, Results, WorkItem

log = logging.getLogger(__name__)

DEFAULT_MODEL = "llava-hf/llava-1.5-7b-hf"


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
        max_new_tokens: the answer length limit.
        batch_size: items per ``generate`` call.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        trust_remote_code: allow the checkpoint's own Python code (off: only code in
            transformers runs).

    Raises:
        LgaError: the checkpoint cannot be loaded (the message says why).
    """

    def __init__(
        self,
        model: str,
        *,
        max_new_tokens: int = 128,
        batch_size: int = 8,
        device: str = "auto",
        trust_remote_code: bool = False,
    ):
        if batch_size < 1 or max_new_tokens < 1:
            raise ConfigError("batch_size and max_new_tokens must be at least 1")
        self.id = f"hf:{model.rstrip('/')}"
        self.settings: dict[str, Any] = {"max_new_tokens": max_new_tokens, "decoding": "greedy"}
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device, self.dtype = _resolve_device(device)
        self.processor, self.model = _load(model, self.dtype, trust_remote_code)
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

        chats = [
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}]
            for p in prompts
        ]
        texts = [self.processor.apply_chat_template(c, add_generation_prompt=True) for c in chats]
        inputs = self.processor(images=images, text=texts, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self._pad_id(),
            )
        new = out[:, inputs["input_ids"].shape[1] :]  # (B, T_new): only the generated tokens
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def _pad_id(self) -> int | None:
        tok = self.processor.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _load(model: str, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    import transformers
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
        raise LgaError(f"teacher checkpoint folder not found: {model}")
    kw = {"trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(model, **kw)
        processor = AutoProcessor.from_pretrained(model, **kw)
        cls = (
            transformers.LlavaForConditionalGeneration
            if config.model_type == "llava"
            else AutoModelForImageTextToText
        )
        dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        net = cls.from_pretrained(model, **{dtype_kw: dtype}, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise LgaError(f"cannot load teacher model {model!r}: {e}") from e
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or not hasattr(processor, "apply_chat_template"):
        raise LgaError(
            f"{model!r}: the processor has no tokenizer/chat template; not a "
            "chat vision-language checkpoint"
        )
    if getattr(processor, "chat_template", None) is None:
        raise LgaError(f"{model!r}: the processor has no chat template (chat_template.jinja)")
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    return processor, net
