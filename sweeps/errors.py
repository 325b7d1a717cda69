"""User-facing errors, and the one-line rendering of Pydantic's validation errors."""

from __future__ import annotations

import argparse
import difflib
import os
import re
from typing import Any, NoReturn, TextIO, get_args

from pydantic import BaseModel, ValidationError
from rich.console import Console


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type when empty), for one-line errors."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


_CREDENTIALS = re.compile(r"(?<=://)([^/@\s]+)@")


def redact(uri: str) -> str:
    """The URI with any ``user:password@`` replaced, for console output and params."""
    return _CREDENTIALS.sub("***@", uri)


def uri_named(message: str, tracking_uri: str | None) -> str:
    """``message`` naming $MLFLOW_TRACKING_URI, not --tracking-uri, where the variable gave the
    store: the option was not passed (``tracking_uri`` None) and the message blames the option."""
    flag = "--tracking-uri:"
    if tracking_uri is None and os.environ.get("MLFLOW_TRACKING_URI") and message.startswith(flag):
        return "$MLFLOW_TRACKING_URI:" + message.removeprefix(flag)
    return message


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def fail(out: Console | TextIO, message: str) -> int:
    """Print ``error: message`` as one unwrapped, unstyled line; the user-error exit code."""
    if isinstance(out, Console):
        out.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    else:
        print(f"error: {message}", file=out)
    return EXIT_USER_ERROR


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit 2) like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


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


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The fields of the section of ``model`` at ``loc`` (None where it is not a model)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        inner = [a for a in (field.annotation, *get_args(field.annotation)) if _is_model(a)]
        if not inner:
            return None
        model = inner[0]
    return list(model.model_fields)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def format_validation_error(
    exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    """``field.path: rule, but got value`` per problem, joined on one line. With ``model`` (the
    validated class), an unknown key's error lists the keys its section allows."""
    parts = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        loc = tuple(err["loc"])
        field = getattr(err.get("ctx", {}).get("error"), "field", None)
        if field:
            loc += tuple(field.split("."))
        where = _loc(loc, prefix)
        if err["type"] == "extra_forbidden":
            keys = _keys_at(model, loc[:-1]) if model is not None else None
            allowed = f"allowed: {', '.join(keys)}" if keys else "see --dry-run for the spec's keys"
            near = difflib.get_close_matches(str(loc[-1]), keys or [], n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            parts.append(f"{where}: unknown key ({hint}{allowed})")
        elif "but got" in msg:
            parts.append(f"{where}: {msg}")
        else:
            parts.append(f"{where}: {msg[0].lower() + msg[1:]}, but got {_shown(err['input'])}")
    return "; ".join(parts)
