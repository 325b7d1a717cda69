"""Custom trainables: a spec may name its own ``module:function`` in place of ``train_loop``.

This imports and runs the user's code, on the driver and on every Ray worker. Nothing else in a
spec can name code: YAML is read with a safe loader and every other field is data.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, cast

from sweeps.errors import SweepsError, first_line
from trainables import train_loop

TrainFn = Callable[..., Any]
PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


def trainable_name(ref: str | None) -> str:
    """How messages name the trainable: the spec's ``module:function``, else ``train_loop``."""
    return ref or "train_loop"


def load_trainable(ref: str | None) -> TrainFn:
    """``train_loop`` for None, else the function ``ref`` names, imported."""
    if ref is None:
        return train_loop
    module, _, name = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except Exception as exc:  # any import-time error of the user's module means the same
        raise SweepsError(
            f"trainable: {ref!r} must name an importable module:function, but "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from None
    if not callable(fn):
        raise SweepsError(f"trainable: {ref!r} must be a function, but it is {type(fn).__name__}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none to read: left to the call
        return cast(TrainFn, fn)
    try:  # else every trial fails with a TypeError, retried
        signature.bind({}, None, checkpoint=None)
    except TypeError:
        raise SweepsError(
            f"trainable: {ref!r} must take (config, report, checkpoint=None), but its "
            f"signature is {name}{signature}"
        ) from None
    return cast(TrainFn, fn)
