"""sweeps: does a cyclical learning rate beat a tuned fixed one? Orchestration on Ray Tune."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeps.errors import SpecError, SweepsError
    from sweeps.spec import SweepSpec, load_spec

__all__ = ["SpecError", "SweepSpec", "SweepsError", "load_spec"]
# Loaded on first use: a trial's process imports sweeps.trainable, which needs neither the spec's
# models nor Optuna (~0.3 s of every trial worker's start).
_HOMES = {"SpecError": "sweeps.errors", "SweepsError": "sweeps.errors",
          "SweepSpec": "sweeps.spec", "load_spec": "sweeps.spec"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
