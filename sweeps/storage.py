"""Ray's storage failing mid-search: full, over quota or read-only. Tune ends the search with
an OSError or an EOFError of a file cut short, or only fails trials; these say so in one line,
and whether a resume can go on from what Ray saved."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sweeps.errors import SweepsError, first_line

# Below this a storage counts as full: Ray's state files and checkpoints need a few MiB.
STORAGE_FLOOR_BYTES = 8 * 2**20
STORAGE_FLOOR_INODES = 64
# What an error number says of a storage, and what the user can do about it.
_FULL = "free space there (or pass --storage)"
_LOCKED = "make it writable (or pass --storage)"
_STORAGE_ERRNOS = {
    errno.ENOSPC: ("is full", _FULL),
    errno.EDQUOT: ("is over its quota", _FULL),
    errno.EROFS: ("is read-only", _LOCKED),
    errno.EACCES: ("refused a write (permission denied)", _LOCKED),
}
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")  # pyarrow's OSErrors carry it only in the text


def _errnos(exc: BaseException) -> Iterator[int]:
    """The error numbers of ``exc`` and of the exceptions it was raised from or during."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            yield e.errno
        yield from (int(n) for n in _ERRNO_IN_TEXT.findall(str(e)))
        e = e.__cause__ or e.__context__


def storage_trouble(storage: str, exc: BaseException) -> tuple[str, str] | None:
    """(what is wrong with the storage, what to do) when ``exc`` came from Ray's storage being
    full, over quota or read-only; None for any other error, which keeps its traceback. Ray's
    last error is often an EOFError of a file cut short, so a local storage is also measured."""
    for n in _errnos(exc):
        if n in _STORAGE_ERRNOS:
            return _STORAGE_ERRNOS[n]
    scheme, sep, rest = storage.partition("://")
    if sep and scheme != "file":
        return None  # a remote storage cannot be measured from here
    path = Path(rest if sep else storage)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        fs = os.statvfs(path)
        if fs.f_flag & os.ST_RDONLY or not os.access(path, os.W_OK):
            return "is read-only", _LOCKED
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    if free < STORAGE_FLOOR_BYTES:
        return f"is full ({free / 2**20:.1f} MiB free)", _FULL
    if fs.f_files and fs.f_favail < STORAGE_FLOOR_INODES:  # f_files 0: no inode limit
        return f"is full ({fs.f_favail} inodes free)", _FULL
    return None


def saved_state_problem(path: str) -> str | None:
    """Why nothing can be resumed from Ray's newest saved experiment state in ``path`` (none was
    saved, or a disk that filled cut it short), or None when it parses. Raises the OSError of a
    state that is there but cannot be read."""
    states = sorted(Path(path).glob("experiment_state-*.json"))
    if not states:
        return "no experiment_state-*.json was saved"
    try:
        json.loads(states[-1].read_text())
    except ValueError as exc:
        return f"{type(exc).__name__}: {first_line(exc)}"
    return None


def storage_error(storage: str, path: str, exc: BaseException) -> SweepsError | None:
    """The one-line error for a search that Ray's storage ended, or None (see storage_trouble);
    ``path``: the experiment's folder, which says whether a resume can go on from it."""
    trouble = storage_trouble(storage, exc)
    if trouble is None:
        return None
    what, remedy = trouble
    try:
        resumable = saved_state_problem(path) is None
    except OSError:
        resumable = False
    then = (
        "then --resume"
        if resumable
        else "then run the sweep again without --resume (Ray's saved state of it was cut short)"
    )
    return SweepsError(
        f"storage: Ray's storage {storage!r} must take the search's state and checkpoints, but "
        f"it {what} ({type(exc).__name__}: {first_line(exc)}); {remedy}, {then}"
    )


@contextmanager
def storage_errors(storage: str, path: str) -> Iterator[None]:
    """Ray's own files: a full or read-only storage ends the search with one line. Any other
    such error is not the user's to fix here, so its traceback stays."""
    try:
        yield
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        error = storage_error(storage, path, exc)
        if error is None:
            raise
        raise error from None


def storage_failures(storage: str, errors: Sequence[str]) -> str | None:
    """A warning when trials failed for Ray's storage (full, read-only) without ending the
    search (``errors``: the failed trials' error lines): Tune then only logs that its state
    could not be saved."""
    numbers = [int(m[0]) for m in map(_ERRNO_IN_TEXT.findall, errors) if m]
    troubles = [_STORAGE_ERRNOS[n] for n in numbers if n in _STORAGE_ERRNOS]
    if not troubles:
        return None
    what, remedy = troubles[0]
    return (
        f"warning: {len(troubles)} of the failed trials failed because Ray's storage "
        f"{storage!r} {what}; {remedy}, then run the sweep again"
    )
