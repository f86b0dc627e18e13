"""``ParkedBytes``: a model's reply waits for a core on disk, and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from processors.files import ParkedBytes
from tests.support.open_files import open_files_under


def test_the_bytes_come_back_to_every_reader_until_the_last_takes_them(tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20)
    parked = ParkedBytes(data, tmp_path / "work")

    assert parked.read() == data
    assert parked.read() == data
    assert parked.take() == data
    assert open_files_under(tmp_path) == []  # the file is closed, its space freed
    with pytest.raises(ValueError):
        parked.read()


def test_the_parked_file_has_no_name_to_leave_behind(tmp_path: Path) -> None:
    parked = ParkedBytes(b"reply", tmp_path)

    assert list(tmp_path.iterdir()) == []  # unlinked from the start: a kill -9 leaves no file
    (held,) = open_files_under(tmp_path)
    assert held.endswith("(deleted)")
    del parked
    assert open_files_under(tmp_path) == []  # dropped untaken (a redraw): freed all the same
