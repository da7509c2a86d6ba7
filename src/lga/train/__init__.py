"""Student fine-tuning and its baselines: ``fit(FitConfig, RUN)`` writes one run directory.

The names load on first use, so importing :mod:`lga.train.config` or :mod:`lga.train.method`
(the CLI's parsers do) does not import torch through :mod:`lga.train.fit`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

_NAMES = {"FitConfig": "lga.train.config", "Method": "lga.train.config", "fit": "lga.train.fit"}
__all__ = ["FitConfig", "Method", "fit"]

if TYPE_CHECKING:
    from lga.train.config import FitConfig, Method
    from lga.train.fit import fit


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'lga.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


class _Package(types.ModuleType):
    """``lga.train.fit`` names the function, as when this package imported it eagerly.

    Importing the submodule :mod:`lga.train.fit` binds it on its package under the same name;
    that binding is dropped (the module stays in ``sys.modules``), so the attribute keeps
    resolving to the function through ``__getattr__`` whichever import came first.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "fit" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
