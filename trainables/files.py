"""Files written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(dest: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``dest`` through ``write(file)`` into a temporary file beside it, then rename it into
    place: a reader (another worker, a later run) never sees half a file, and a failed write
    leaves neither a torn ``dest`` nor the temporary file. Raises what the write raised."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
