"""sweeps: does a cyclical learning rate beat a tuned fixed one? Orchestration on Ray Tune."""

from sweeps.errors import SpecError, SweepsError
from sweeps.spec import SweepSpec, load_spec

__all__ = ["SpecError", "SweepSpec", "SweepsError", "load_spec"]
