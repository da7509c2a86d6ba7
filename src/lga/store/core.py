"""The description store: teacher answers in SQLite (WAL), one row per item, crash-safe.

A row is keyed by (dataset, img_id, prompt name, prompt-text hash, teacher id, generation-settings
hash) and holds the answer ``text``, its parsed ``keywords`` (keyword prompts), ``status``
(``done`` or ``failed``), the ``error`` of a failed item, ``latency_s``, ``attempts`` and
``created_at`` and ``truncated`` (the answer was cut to the teacher's length cap). Rows are
written in short transactions as results arrive: a killed writer loses at most the results it had
not committed and never leaves a partial row (SQLite transactions are atomic). A ``done`` row is
never overwritten.

Several describe processes share one store through ``claims``: an item is claimed (owner id and
lease expiry, in one ``BEGIN IMMEDIATE`` transaction) before it is asked, and released when its
outcome is written; the lease of a process that died expires and another one takes the item.

Schema versions: 1 (no ``truncated`` column, no claims) is migrated to 2 when a store is opened
for writing; read-only opens read both.

The trainer reads it with :meth:`DescriptionStore.texts` / :meth:`DescriptionStore.keywords`
(img_id -> answer for one prompt) and checks coverage with :meth:`DescriptionStore.missing`.
"""

from __future__ import annotations

import logging

from lga.store.claims import (
    ClaimState,
    LeaseRenewer,
    claim_owner,
)
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

log = logging.getLogger(__name__)
