"""lga: language-guided abstractions against spurious correlations in CLIP.

The public Python API (imported lazily: ``import lga`` loads none of torch, transformers or
matplotlib until a name is used)::

    lga.make_synthetic(out, **settings)      Waterbirds in miniature            -> folder
    lga.load_dataset(root)                   a dataset folder, checked          -> GroupDataset
    lga.describe(data, teacher=, store=)     teacher descriptions into a store  -> summary
    lga.fit_config(method, data, ...)        one run's validated configuration  -> FitConfig
    lga.fit(cfg, out)                        one method, one run directory      -> FitResult
    lga.evaluate(data, student, out)         score a checkpoint on a split      -> metrics
    lga.make_report(runs, out)               tables, plots, diagnostics         -> Report
    lga.explain(students, images, ...)       saliency maps                      -> maps
    lga.write_saliency_figures(...)          saliency figures as PNG            -> paths
    lga.load_student(spec)                   a CLIP-family checkpoint (or "toy") -> Student
    lga.RunDir(path)                         read a run directory               -> RunDir
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_API = {
    "make_synthetic": "lga.api",
    "load_dataset": "lga.data.dataset",
    "describe": "lga.api",
    "fit_config": "lga.api",
    "evaluate": "lga.api",
    "make_report": "lga.api",
    "fit": "lga.train.fit",
    "FitConfig": "lga.train.config",
    "FitResult": "lga.train.fit",
    "Method": "lga.train.config",
    "ReportOptions": "lga.report.model",
    "explain": "lga.report.explain",
    "write_saliency_figures": "lga.report.explain",
    "load_student": "lga.student.model",
    "RunDir": "lga.rundir",
    "LgaError": "lga.errors",
}

__all__ = [
    "__version__",
    "make_synthetic",
    "load_dataset",
    "describe",
    "fit_config",
    "evaluate",
    "make_report",
    "fit",
    "FitConfig",
    "FitResult",
    "Method",
    "ReportOptions",
    "explain",
    "write_saliency_figures",
    "load_student",
    "RunDir",
    "LgaError",
]
assert set(__all__) == {"__version__", *_API}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from lga.api import describe, evaluate, fit_config, make_report, make_synthetic
    from lga.data.dataset import load_dataset
    from lga.errors import LgaError
    from lga.report.explain import explain, write_saliency_figures
    from lga.report.model import ReportOptions
    from lga.rundir import RunDir
    from lga.student.model import load_student
    from lga.train.config import FitConfig, Method
    from lga.train.fit import FitResult, fit


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'lga' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
