"""The store package split by job keeps its public names: what callers import from
``lga.store.core`` is still there, and each job's names are the same objects in their module."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import lga.store.core as core

# Every public name of lga.store.core before the split (callers import these).
PUBLIC = [
    "COLUMNS", "DONE", "EXPORT_FORMATS", "FAILED", "FILTERS", "KEY_COLUMNS", "READABLE_VERSIONS",
    "SCHEMA_VERSION", "VALUE_COLUMNS", "ClaimState", "DescriptionStore", "LeaseRenewer", "Row",
    "StoreCorruptError", "StoreStats", "Variant", "claim_owner", "dataset_key", "export_store",
    "merge_stores", "parse_keywords", "recover_store",
]  # fmt: skip


def test_core_keeps_every_public_name():
    assert sorted(core.__all__) == sorted(PUBLIC)
    missing = [name for name in PUBLIC if not hasattr(core, name)]
    assert not missing


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("lga.store.keys", ["dataset_key", "prompt_key", "settings_key"]),
        ("lga.store.keywords", ["parse_keywords"]),
        ("lga.store.claims", ["ClaimState", "LeaseRenewer", "claim_owner"]),
        ("lga.store.descriptions", ["DescriptionStore", "Variant", "StoreStats", "FILTERS"]),
        ("lga.store.transfer", ["EXPORT_FORMATS", "export_store", "merge_stores"]),
        ("lga.store.recover", ["recover_store"]),
        (
            "lga.store.schema",
            ["DONE", "FAILED", "KEY_COLUMNS", "COLUMNS", "Row", "StoreCorruptError"],
        ),
    ],
)
def test_each_job_lives_in_its_module(module, names):
    mod = importlib.import_module(module)
    for name in names:
        obj = getattr(mod, name)
        if callable(obj):  # a class or function defined there, not imported from elsewhere
            assert obj.__module__ == module, name
        if name in PUBLIC:
            assert getattr(core, name) is obj, name


def test_no_module_of_the_store_imports_the_facade():
    # core re-exports every module; one importing core back would be a circle in waiting.
    package = Path(core.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert path.name == "core.py" or "lga.store.core" not in imported, path.name
