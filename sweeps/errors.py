"""User-facing errors, and the one-line rendering of Pydantic's validation errors."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type when empty), for one-line errors."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


_CREDENTIALS = re.compile(r"(?<=://)([^/@\s]+)@")


def redact(uri: str) -> str:
    """The URI with any ``user:password@`` replaced, for console output and params."""
    return _CREDENTIALS.sub("***@", uri)


class SweepsError(Exception):
    """A mistake the user can fix: the CLI prints it as one line and exits 2."""


class SpecError(SweepsError):
    """An invalid sweep spec, --set override or sweep name."""


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a sweep after its parent run was created: ``--resume`` continues it."""

    def __init__(self, parent_run_id: str) -> None:
        super().__init__(parent_run_id)
        self.parent_run_id = parent_run_id


def _loc(loc: tuple[Any, ...], prefix: str) -> str:
    path = ".".join(str(p) for p in loc)
    return ".".join(p for p in (prefix, path) if p) or "spec"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """``field.path: rule, but got value`` per problem, joined on one line."""
    parts = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        loc = tuple(err["loc"])
        field = getattr(err.get("ctx", {}).get("error"), "field", None)
        if field:
            loc += tuple(field.split("."))
        where = _loc(loc, prefix)
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key (allowed keys are listed in the README)")
        elif "but got" in msg:
            parts.append(f"{where}: {msg}")
        else:
            parts.append(f"{where}: {msg[0].lower() + msg[1:]}, but got {_shown(err['input'])}")
    return "; ".join(parts)
