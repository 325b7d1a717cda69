"""Which process drives a sweep: the tag its parent run carries, and whether that process still
runs on this machine (``--resume`` and ``sweeps.report`` refuse a sweep that is still driven)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

DRIVER_TAG = "sweeps.driver"  # "HOST PID START": the process that runs the sweep now


def _proc_stat(pid: int) -> list[str]:
    """The fields of Linux's /proc/PID/stat after the command name (which may hold spaces):
    [0] the state, [19] the start time since boot; none where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat.rpartition(")")[2].split()


def _process_start(pid: int) -> str:
    """The process's start time since boot ('' without /proc): tells a live driver from a later
    process that took its id."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def driver_id() -> str:
    return f"{socket.gethostname()} {os.getpid()} {_process_start(os.getpid())}".strip()


def live_driver(tag: str | None) -> int | None:
    """The id of the process ``tag`` (a ``DRIVER_TAG`` value) names, if it runs on this machine
    still; None when it has ended, or runs elsewhere (which cannot be told from here)."""
    host, pid, started = [*(tag or "").split(), "", "", ""][:3]
    # A tag no driver wrote (hand-edited, cut short) names no live process.
    if host != socket.gethostname() or not (pid.isdigit() and 0 < int(pid) < 2**22):
        return None
    if int(pid) == os.getpid():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    fields = _proc_stat(int(pid))
    if fields and fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return None
    if started and (fields[19] if len(fields) > 19 else "") != started:
        return None
    return int(pid)


def driver_host(tag: str | None) -> str | None:
    """The machine a ``DRIVER_TAG`` names, when it is not this one (its driver cannot be seen)."""
    host = (tag or "").split(" ", 1)[0]
    return host if host and host != socket.gethostname() else None
