"""What each teacher family needs from lga: one table entry per ``config.model_type``.

Families differ in three ways that matter to a batched teacher, each a field of :class:`Family`:

- how a prompt is written: through the processor's chat template (chat models), or as a plain
  text in the processor's own convention (PaliGemma, a base model: ``<image>answer en ...``);
- how the images of a batch are laid out for the processor: one flat list (one image per prompt,
  in order) or one list per prompt (Gemma 3, Idefics3, SmolVLM: SmolVLM's processor refuses a
  flat list for a batch of prompts; Idefics3's splits one by counting ``<image>`` in each text);
- what the processor imports beyond lga's dependencies (torchvision for the processors that hold
  a video processor, num2words for SmolVLM), and the extra that installs it.

Special tokens are written once: a chat template that already writes the BOS token (Gemma 3,
Idefics3) is tokenized without adding special tokens again; one that does not (LLaVA) is
tokenized with them. A family not in the table is served by :data:`GENERIC` (chat template, flat
images), as any image-text-to-text model was before.

A new family is one entry of :data:`FAMILIES`, and one tiny checkpoint builder in
:data:`lga.testing.teacher_families.TINY_TEACHERS` for the shared tester suite
(``tests/test_teacher_families.py``).
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from lga.errors import LgaError


class PromptStyle(str, enum.Enum):
    CHAT = "chat"  # the processor's chat template, with a generation prompt
    PLAIN = "plain"  # Family.plain_format, e.g. a base model's task prefix


class ImageLayout(str, enum.Enum):
    FLAT = "flat"  # [img_1, ..., img_B]
    PER_PROMPT = "per-prompt"  # [[img_1], ..., [img_B]]


@dataclass(frozen=True)
class Family:
    """A teacher family's conventions.

    Attributes:
        name: the family as users know it (messages).
        prompt: chat template or plain prompt.
        images: the image layout the processor expects for a batch.
        plain_format: the text of a PLAIN prompt; ``{prompt}`` is the prompt's text.
        needs: modules the family's processor imports, beyond lga's dependencies.
        extra: the lga extra that installs them (``pip install 'lga[<extra>]'``).
    """

    name: str
    prompt: PromptStyle = PromptStyle.CHAT
    images: ImageLayout = ImageLayout.FLAT
    plain_format: str = "{prompt}"
    needs: tuple[str, ...] = ()
    extra: str | None = None

    def check_installed(self, model: str) -> None:
        """Raise a one-line LgaError naming the extra when a module the family needs is missing,
        or is installed but does not import (a torchvision built for another torch).

        Raises:
            LgaError: a module of :attr:`needs` cannot be imported.
        """
        missing = [m for m in self.needs if importlib.util.find_spec(m) is None]
        if missing:
            raise LgaError(
                f"teacher {model}: {self.name} needs {' and '.join(missing)}, not "
                f"installed; pip install 'lga[{self.extra}]'"
                + (" (a torchvision build matching your torch)" if "torchvision" in missing else "")
            )
        for name in self.needs:
            try:
                importlib.import_module(name)
            except Exception as e:  # noqa: BLE001 - a mismatched build raises RuntimeError, OSError...
                raise LgaError(
                    f"teacher {model}: {self.name} needs {name}, which is installed but does not "
                    f"import ({type(e).__name__}: {_first_line(e)}); {_reinstall_hint(name)}"
                ) from e

    def texts(self, processor: Any, prompts: Sequence[str]) -> list[str]:
        """The text the processor gets for each prompt (one image each)."""
        if self.prompt is PromptStyle.PLAIN:
            return [self.plain_format.format(prompt=p) for p in prompts]
        chats = [
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}]
            for p in prompts
        ]
        return [
            processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
            for c in chats
        ]

    def layout(self, images: Sequence[Image.Image]) -> list:
        """The batch's images as the processor wants them (one image per prompt)."""
        if self.images is ImageLayout.PER_PROMPT:
            return [[im] for im in images]
        return list(images)

    def encode(self, processor: Any, images: Sequence[Image.Image], prompts: Sequence[str]):
        """The processor's batch (``input_ids``, ``attention_mask``, pixels...), left padded.

        Special tokens are added only where the rendered text does not already hold them: a
        chat template that writes the BOS token itself is tokenized without adding it again;
        a PLAIN prompt is framed by the processor (PaliGemma writes its BOS after the image).
        """
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
        texts = self.texts(processor, prompts)
        return processor(
            images=self.layout(images),
            text=texts,
            padding=True,
            padding_side="left",
            add_special_tokens=self.add_special_tokens(processor, texts),
            return_tensors="pt",
        )

    def add_special_tokens(self, processor: Any, texts: list[str]) -> bool:
        """Whether the tokenizer is to add its special tokens to these rendered texts."""
        if self.prompt is PromptStyle.PLAIN:
            return False  # the processor frames the prompt itself
        bos = getattr(processor.tokenizer, "bos_token", None)
        return not (bos and texts and texts[0].startswith(bos))


def _first_line(e: BaseException) -> str:
    line = (str(e).strip() or type(e).__name__).splitlines()[0]
    return line if len(line) <= 200 else line[:197] + "..."


def _reinstall_hint(module: str) -> str:
    if module != "torchvision":
        return f"reinstall it: pip install --force-reinstall {module}"
    import torch

    return f"install the torchvision build made for torch {torch.__version__}"


_QWEN = dict(needs=("torchvision",), extra="qwen")

FAMILIES: dict[str, Family] = {
    "llava": Family("LLaVA 1.5"),
    "llava_next": Family("LLaVA-NeXT"),
    "llava_onevision": Family("LLaVA-OneVision", needs=("torchvision",), extra="onevision"),
    "qwen2_vl": Family("Qwen2-VL", **_QWEN),
    "qwen2_5_vl": Family("Qwen2.5-VL", **_QWEN),
    "qwen3_vl": Family("Qwen3-VL", **_QWEN),
    "idefics3": Family("Idefics3", images=ImageLayout.PER_PROMPT),
    "smolvlm": Family(
        "SmolVLM",
        images=ImageLayout.PER_PROMPT,
        needs=("torchvision", "num2words"),
        extra="smolvlm",
    ),
    "gemma3": Family("Gemma 3", images=ImageLayout.PER_PROMPT),
    "paligemma": Family(
        "PaliGemma", prompt=PromptStyle.PLAIN, plain_format="<image>answer en {prompt}"
    ),
    "internvl": Family("InternVL", needs=("torchvision",), extra="internvl"),
}

GENERIC = Family("image-text-to-text model")


def family_for(model_type: str) -> Family:
    """The family of a checkpoint's ``config.model_type`` (:data:`GENERIC` if not listed)."""
    return FAMILIES.get(model_type, GENERIC)
