"""The store figure: description rows committed per second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lga.bench.common import PROMPTS, figure, timed
from lga.offline.bench_data import random_words


def store_writes_per_s(
    workdir: str | Path, *, n_rows: int = 20_000, chunk: int = 16, text_words: int = 40
) -> dict[str, Any]:
    """Description rows committed per second by :meth:`DescriptionStore.put`.

    Rows are committed ``chunk`` per transaction, as the describe loop commits a teacher batch;
    the same is measured one row per transaction (the worst case: a server teacher answering
    one item at a time) for the record.
    """
    from lga.store.core import DONE, DescriptionStore, Row

    workdir = Path(workdir)
    rng = np.random.default_rng(0)
    texts = [random_words(rng, text_words) for _ in range(256)]

    def rows(offset: int, n: int) -> list[Row]:
        return [
            Row("bench@0", offset + i // 4, PROMPTS[i % 4], "h", "bench", "s", DONE, texts[i % 256])
            for i in range(n)
        ]

    def write(name: str, size: int, n: int) -> float:
        data = rows(0, n)
        with DescriptionStore(workdir / f"store-{name}.sqlite") as store:
            return timed(lambda: [store.put(data[i : i + size]) for i in range(0, n, size)])

    t_chunk = write(f"chunk{chunk}", chunk, n_rows)
    n_single = max(1, n_rows // 4)
    t_single = write("chunk1", 1, n_single)
    return figure(
        "store_writes_per_s",
        n_rows / t_chunk,
        unit="rows/s",
        command=f"DescriptionStore.put, {chunk} rows per transaction (lga describe's commits)",
        sizes={"rows": n_rows, "rows_per_transaction": chunk, "text_words": text_words},
        seconds=round(t_chunk, 3),
        one_row_per_transaction={
            "rows": n_single,
            "rows_per_s": round(n_single / t_single, 1),
        },
    )
