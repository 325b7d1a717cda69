"""Typed parameter ranges. Pure Pydantic: no Ray, no torch, no Optuna."""

from __future__ import annotations

import math
from typing import Any, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator


class RuleError(ValueError):
    """A cross-field rule broken at ``field`` (relative to the model that checks it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _numeric(annotation: Any) -> bool:
    return any(a in (int, float) for a in (annotation, *get_args(annotation)))


def _numbers(annotation: Any) -> bool:
    """A sequence of numbers, e.g. ``tuple[int, ...]``."""
    return get_origin(annotation) in (tuple, list) and _numeric(annotation)


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return f"[{', '.join(_yaml(v) for v in value)}]"
    return repr(value)


class SpecModel(BaseModel):
    """The base of every spec section: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        # Pydantic's lax mode reads YAML's true as 1: `trials_per_family: true` would run 1.
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if field is None:
                    continue
                if isinstance(value, bool) and _numeric(field.annotation):
                    raise RuleError(name, f"`{name}` must be a number, but got {_yaml(value)}")
                if (
                    isinstance(value, list | tuple)
                    and any(isinstance(v, bool) for v in value)
                    and _numbers(field.annotation)
                ):
                    raise RuleError(name, f"`{name}` must be numbers, but got {_yaml(value)}")
        return data


class FloatRange(SpecModel):
    """A float sampled from [low, high], log-uniformly when ``log`` is set."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(
                f"`low` and `high` must be finite, but got (low={self.low}, high={self.high})"
            )
        if not self.low < self.high:
            raise ValueError(f"`low < high` must hold, but got (low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"`low > 0` must hold for a log range, but got (low={self.low})")
        return self

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


class IntRange(SpecModel):
    """An integer sampled from [low, high], both ends included."""

    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.low <= self.high:
            raise ValueError(f"`low <= high` must hold, but got (low={self.low}, high={self.high})")
        if self.low < 1:
            raise ValueError(f"`low >= 1` must hold, but got (low={self.low})")
        return self

    def contains(self, value: int) -> bool:
        return self.low <= value <= self.high


class Choice(SpecModel):
    """One of a fixed list of values."""

    values: tuple[int, ...]

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.values:
            raise ValueError("`values` must not be empty, but got ()")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"`values` must be distinct, but got {self.values}")
        return self

    def contains(self, value: int) -> bool:
        return value in self.values
