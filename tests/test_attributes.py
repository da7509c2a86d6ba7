"""The attributes.csv contract (lga.data.attributes): written by synth and tiny_birds, read by
the oracle teacher."""

from __future__ import annotations

import pytest

from lga.data.attributes import (
    ATTRIBUTE_COLUMNS,
    ATTRIBUTE_FILE,
    attributes_path,
    read_attributes,
    write_attributes,
)
from lga.errors import LgaError
from lga.testing.tiny_birds import make_tiny_birds


def test_write_then_read_round_trips(tmp_path):
    row = {c: f"V{i}" for i, c in enumerate(ATTRIBUTE_COLUMNS)} | {"img_id": 7}
    path = write_attributes(tmp_path, [row])
    assert path == tmp_path / ATTRIBUTE_FILE == attributes_path(tmp_path)
    assert path.read_text().splitlines()[0] == ",".join(ATTRIBUTE_COLUMNS)
    assert not list(tmp_path.glob("*.tmp"))
    got = read_attributes(tmp_path, required=ATTRIBUTE_COLUMNS)
    assert got == {7: {**{c: f"v{i}" for i, c in enumerate(ATTRIBUTE_COLUMNS)}, "img_id": "7"}}


def test_tiny_birds_write_the_contract(tmp_path):
    root = make_tiny_birds(tmp_path / "birds", 4)
    rows = read_attributes(root, required=ATTRIBUTE_COLUMNS)
    assert sorted(rows) == [1, 2, 3, 4]
    assert list(rows[1]) == list(ATTRIBUTE_COLUMNS)


def test_read_reports_missing_file_column_and_bad_id(tmp_path):
    with pytest.raises(LgaError, match="not found"):
        read_attributes(tmp_path)
    (tmp_path / ATTRIBUTE_FILE).write_text("img_id,species\n1,gull\n")
    with pytest.raises(LgaError, match=r"missing column\(s\) \['bill'\]"):
        read_attributes(tmp_path, required=("img_id", "bill"))
    (tmp_path / ATTRIBUTE_FILE).write_text("img_id,species\nx,gull\n")
    with pytest.raises(LgaError, match="line 2: bad img_id 'x'"):
        read_attributes(tmp_path)
