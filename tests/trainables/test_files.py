from pathlib import Path
from typing import BinaryIO

import pytest

from trainables.files import write_atomically


def test_writes_the_whole_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "entry.json"
    write_atomically(dest, lambda f: f.write(b"first"))
    write_atomically(dest, lambda f: f.write(b"second"))
    assert dest.read_bytes() == b"second"
    assert [p.name for p in dest.parent.iterdir()] == ["entry.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "entry.pt"
    dest.write_bytes(b"old")

    def half(f: BinaryIO) -> None:
        f.write(b"half of it")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(dest, half)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["entry.pt"]
