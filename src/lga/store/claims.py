"""Claims: several describe processes sharing one store, and a killed run resuming.

An item is claimed (owner id and lease expiry, in one ``BEGIN IMMEDIATE`` transaction) before it
is asked, and released when its outcome is written (:meth:`DescriptionStore.put` with
``release=``); the lease of a process that died expires and another one takes the item. A
process of this machine known to be gone loses its claims at once, so a run killed with SIGKILL
and restarted resumes everything. :class:`LeaseRenewer` keeps a live owner's leases fresh.

The functions take the store's connection; :class:`lga.store.core.DescriptionStore` calls them
(``claim``, ``release``, ``renew``, ``put``).
"""

from __future__ import annotations

import enum
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from lga.store.files import pid_alive
from lga.store.schema import DONE, KEY_MATCH, Row, Transaction, connect, key_values

log = logging.getLogger(__name__)


class ClaimState(enum.Enum):
    """What :meth:`DescriptionStore.claim` did with an item."""

    CLAIMED = "claimed"  # ours now, until the lease expires
    DONE = "done"  # answered already (by another process since this run started)
    TAKEN = "taken"  # claimed by another process whose lease has not expired


def claim_items(
    con: sqlite3.Connection,
    items: Sequence[tuple[int, str, str]],
    *,
    dataset: str,
    teacher: str,
    settings_hash: str,
    owner: str,
    lease_s: float,
) -> list[ClaimState]:
    """:meth:`DescriptionStore.claim` on the store's connection ``con``, in one transaction."""
    now = time.time()
    states = []
    dead: dict[str, bool] = {}
    with Transaction(con):
        for img_id, prompt, prompt_hash in items:
            key = (dataset, int(img_id), prompt, prompt_hash, teacher, settings_hash)
            done = con.execute(
                f"SELECT 1 FROM descriptions WHERE {KEY_MATCH} AND status=?", (*key, DONE)
            ).fetchone()
            if done:
                states.append(ClaimState.DONE)
                continue
            held = con.execute(
                f"SELECT owner, expires FROM claims WHERE {KEY_MATCH}", key
            ).fetchone()
            if held and held[0] != owner and held[1] > now:
                if held[0] not in dead:
                    dead[held[0]] = _owner_is_dead(held[0])
                if not dead[held[0]]:
                    states.append(ClaimState.TAKEN)
                    continue
            if held and held[0] != owner:
                log.info(
                    "taking over %s from %s (lease expired or process gone)", key[1:4], held[0]
                )
            con.execute(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, owner, now + lease_s),
            )
            states.append(ClaimState.CLAIMED)
    return states


def release_claims(con: sqlite3.Connection, owner: str) -> int:
    """End every claim of ``owner``, in one transaction; returns how many."""
    with Transaction(con):
        return con.execute("DELETE FROM claims WHERE owner=?", (owner,)).rowcount


def release_rows(con: sqlite3.Connection, rows: Sequence[Row], owner: str) -> None:
    """End ``owner``'s claims on the items of ``rows``, inside the caller's transaction."""
    con.executemany(
        f"DELETE FROM claims WHERE {KEY_MATCH} AND owner=?",
        [(*key_values(r), owner) for r in rows],
    )


def renew_claims(con: sqlite3.Connection, owner: str, lease_s: float) -> int:
    """Push the expiry of ``owner``'s claims to now + ``lease_s``; returns how many."""
    with Transaction(con):
        return con.execute(
            "UPDATE claims SET expires=? WHERE owner=?", (time.time() + lease_s, owner)
        ).rowcount


def _process_space() -> str:
    """This host and PID namespace: where a process id names one process."""
    import socket

    try:
        namespace = os.readlink("/proc/self/ns/pid")  # containers on one host differ here
    except OSError:
        namespace = "-"
    return f"{socket.gethostname()}|{namespace}"


def claim_owner() -> str:
    """A new owner id for claims: host, PID namespace, process id and a random part."""
    import uuid

    return f"{_process_space()}|{os.getpid()}|{uuid.uuid4().hex[:8]}"


def _owner_is_dead(owner: str) -> bool:
    """True when ``owner`` is a process of this host and PID namespace that no longer runs.

    Its claims are then taken over at once instead of after their lease (a run killed with
    SIGKILL and restarted on the same machine resumes everything). Owners elsewhere, or not
    known to be dead, keep their lease.
    """
    try:
        space, pid, _ = owner.rsplit("|", 2)
        pid_n = int(pid)
    except ValueError:
        return False
    if space != _process_space() or pid_n == os.getpid():
        return False
    return not pid_alive(pid_n)


class LeaseRenewer:
    """Renews an owner's claims every ``lease_s / 3`` seconds, from its own thread and connection.

    A process that dies stops renewing; its leases then expire within ``lease_s``.
    Use as a context manager around the work.
    """

    def __init__(self, path: str | Path, owner: str, lease_s: float):
        self.path, self.owner, self.lease_s = Path(path), owner, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lga-lease", daemon=True)

    def __enter__(self) -> LeaseRenewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        con = connect(self.path)
        try:
            while not self._stop.wait(self.lease_s / 3):
                try:
                    renew_claims(con, self.owner, self.lease_s)
                except sqlite3.Error as e:  # the next beat tries again; the lease may lapse
                    log.warning("%s: could not renew claims: %s", self.path, e)
        finally:
            con.close()
