"""A teacher's faults, for the oracle: the errors real multimodal LLMs make, at chosen rates.

The oracle answers from the true attributes of ``lga data synth`` images. A real teacher
(LLaVA-1.5, Qwen-VL, ...) does not: it misnames fine-grained species, shares the spurious bias it
is asked to remove, lets the background leak into the object description, and misreads ambiguous
backgrounds. :class:`FaultRates` gives each of these a probability; the oracle applies them
deterministically per image (a hash of the image id and the fault's name, the same for every
prompt of the image), so the same image gets the same answer twice and other rates are other
store rows (the rates are part of the generation settings).

Rates (each a probability in [0, 1]):

- ``species_error``: the object answers name a wrong species, drawn from all the other species
  (so about half the time of the other class), and describe that species' traits.
- ``background_bias``: for an image whose background belongs to the other class (a waterbird on
  land, a landbird on water), the object answers name a species of the class the background
  suggests: the teacher's own spurious bias. It changes nothing where background and class agree.
- ``object_leak``: the object answers also describe the background, in the slides' style ("It
  is standing near the edge of a lake").
- ``background_error``: the background answers describe the other kind of place (half of these)
  or an ambiguous scene that names both (the other half).

``faults=llava-like`` is a preset (:data:`PRESETS`); ``fault_scale`` multiplies every rate
(capped at 1), so a curve can run from a perfect teacher (0) to twice the preset (2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError

from lga.config import Strict, validation_lines
from lga.errors import ConfigError

KINDS = ("species_error", "background_bias", "object_leak", "background_error")


class FaultRates(Strict):
    """Probabilities of each fault kind (see the module docstring)."""

    species_error: float = Field(default=0.0, ge=0.0, le=1.0)
    background_bias: float = Field(default=0.0, ge=0.0, le=1.0)
    object_leak: float = Field(default=0.0, ge=0.0, le=1.0)
    background_error: float = Field(default=0.0, ge=0.0, le=1.0)

    @property
    def any(self) -> bool:
        return any(getattr(self, k) > 0 for k in KINDS)

    def scaled(self, factor: float) -> FaultRates:
        """Every rate times ``factor``, capped at 1."""
        return FaultRates(**{k: min(1.0, getattr(self, k) * factor) for k in KINDS})

    def settings(self) -> dict[str, float]:
        """The non-zero rates, rounded (the store's generation settings)."""
        return {k: round(getattr(self, k), 6) for k in KINDS if getattr(self, k) > 0}


# The llava-like preset. Sources and assumptions (docs/toy-world.md, session 5, says more):
# - species_error 0.3: LVLMs name fine-grained species poorly (Finer, Kim & Ji 2024,
#   arXiv:2402.16315; FOCI, Geigle et al. 2024, arXiv:2406.14496: LLaVA-1.5 far below CLIP on
#   bird species). On CUB's 200 species open-ended naming mostly fails; the toy has 4 distinct
#   species per class, so we ASSUME 0.3.
# - background_bias 0.25: SpurLens (Hosseini et al. 2025, arXiv:2503.08884) measures MLLM object
#   recognition falling when the spurious cue is absent and hallucination amplified over 10x
#   when it is present; the rate for a waterbird on land is our ASSUMPTION.
# - object_leak 0.5: the slides' own LLaVA object answer describes the pool the bird flies over;
#   half of the object answers doing so is an ASSUMPTION.
# - background_error 0.1: an ASSUMPTION of the order of LLaVA-1.5's yes/no object-existence
#   errors on POPE (Li et al. 2023, arXiv:2305.10355; LLaVA-1.5 reports F1 about 86).
PRESETS: dict[str, FaultRates] = {
    "none": FaultRates(),
    "llava-like": FaultRates(
        species_error=0.3, background_bias=0.25, object_leak=0.5, background_error=0.1
    ),
}
OPTION_KEYS = ("faults", "fault_scale", *KINDS)


def fault_rates(options: Mapping[str, Any]) -> FaultRates:
    """The rates that teacher options ask for: ``faults`` (a preset name, default ``none``),
    then each rate given by name, then ``fault_scale``.

    Raises:
        ConfigError: an unknown option or preset, or a value that is not a probability.
    """
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ConfigError(
            f"the oracle teacher takes the options {', '.join(OPTION_KEYS)}; not {unknown}"
        )
    preset = options.get("faults", "none")
    if preset not in PRESETS:
        raise ConfigError(f"unknown faults preset {preset!r}; choose one of {sorted(PRESETS)}")
    rates = PRESETS[preset].model_dump()
    try:
        rates.update({k: float(options[k]) for k in KINDS if k in options})
        scale = float(options.get("fault_scale", 1.0))
        result = FaultRates(**rates)
    except (TypeError, ValueError, ValidationError) as e:
        bad = {k: options[k] for k in options if k != "faults"}
        raise ConfigError(
            f"oracle fault options {bad}: each rate must be a number in [0, 1] "
            f"and fault_scale a number >= 0 ({_first_line(e)})"
        ) from None
    if not scale >= 0 or scale == float("inf"):
        raise ConfigError(f"fault_scale must be a finite number >= 0, got {scale!r}")
    return result.scaled(scale)


def _first_line(e: Exception) -> str:
    """What was wrong, in a line: pydantic's first error (field and message), or the message."""
    if isinstance(e, ValidationError):
        return validation_lines(e)[0]
    return str(e).strip().splitlines()[-1].strip()


def draw(img_id: int, kind: str) -> float:
    """A uniform number in [0, 1) fixed by the image and the fault kind (not by the prompt: a
    teacher that misnames a bird does so in both object prompts)."""
    digest = hashlib.sha256(f"fault|{img_id}|{kind}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def fires(rates: FaultRates, img_id: int, kind: str) -> bool:
    return draw(img_id, kind) < getattr(rates, kind)
