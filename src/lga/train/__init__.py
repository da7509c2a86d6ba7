"""Student fine-tuning and its baselines: ``fit(FitConfig, RUN)`` writes one run directory."""

from lga.train.config import FitConfig, Method
from lga.train.fit import fit

__all__ = ["FitConfig", "Method", "fit"]
