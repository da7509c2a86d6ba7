"""The description store's public names, in one place for callers (``from lga.store.core import
DescriptionStore, dataset_key``).

The store is split by job, and each name lives in the module of its job:

- :mod:`lga.store.schema`: the tables, schema versions and :class:`Row`; opening a file
  (connection settings, integrity check, migration); :class:`StoreCorruptError`.
- :mod:`lga.store.descriptions`: :class:`DescriptionStore`, reading and writing rows.
- :mod:`lga.store.claims`: several describe processes sharing one store, and resuming.
- :mod:`lga.store.keys`: the hashed parts of the store key (dataset, prompt text, settings).
- :mod:`lga.store.keywords`: keyword answers parsed into lists.
- :mod:`lga.store.transfer`: ``lga store export`` and ``lga store merge``.
- :mod:`lga.store.recover`: ``lga store recover``.
- :mod:`lga.store.files`: a store's files on disk (temporary stores of a killed job).
- :mod:`lga.store.importing`: ``lga store import``.

The modules import each other, never this one: it only re-exports them (a module they imported
could not import them back without a circle, which the import contracts refuse).
"""

from __future__ import annotations

from lga.store.claims import ClaimState, LeaseRenewer, claim_owner
from lga.store.descriptions import FILTERS, DescriptionStore, StoreStats, Variant
from lga.store.keys import dataset_key
from lga.store.keywords import parse_keywords
from lga.store.recover import recover_store
from lga.store.schema import (
    COLUMNS,
    DONE,
    FAILED,
    KEY_COLUMNS,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    VALUE_COLUMNS,
    Row,
    StoreCorruptError,
)
from lga.store.transfer import EXPORT_FORMATS, export_store, merge_stores

__all__ = [
    "COLUMNS",
    "DONE",
    "EXPORT_FORMATS",
    "FAILED",
    "FILTERS",
    "KEY_COLUMNS",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "VALUE_COLUMNS",
    "ClaimState",
    "DescriptionStore",
    "LeaseRenewer",
    "Row",
    "StoreCorruptError",
    "StoreStats",
    "Variant",
    "claim_owner",
    "dataset_key",
    "export_store",
    "merge_stores",
    "parse_keywords",
    "recover_store",
]
