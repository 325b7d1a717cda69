"""The search block of a sweep spec and its translation to Optuna define-by-run functions."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self, TypeAlias

from pydantic import Field, field_validator, model_validator

from search_spaces.families import FAMILIES, FamilyName
from search_spaces.params import Choice, FloatRange, IntRange, RuleError, SpecModel

if TYPE_CHECKING:  # only the trial's type: a trial's process needs no Optuna (~0.3 s to import)
    import optuna

# max_lr must be strictly above base_lr; a relative margin keeps the sampled pair distinct.
_STRICTLY_ABOVE = 1.0 + 1e-6

DefineByRun: TypeAlias = "Callable[[optuna.trial.BaseTrial], dict[str, Any]]"


class SearchSpace(SpecModel):
    families: tuple[FamilyName, ...] = Field(min_length=1)
    trials_per_family: int = Field(ge=1)
    base_lr: FloatRange
    max_lr: FloatRange | None = None
    step_size_epochs: IntRange = IntRange(low=2, high=10)
    gamma: FloatRange = FloatRange(low=0.999, high=0.99999)
    t_mult: Choice = Choice(values=(1, 2))
    # "range_test" derives base_lr and max_lr from an LR range test before sampling.
    bounds: Literal["spec", "range_test"] = "spec"

    @field_validator("families")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        dupes = sorted({f for f in v if v.count(f) > 1})
        if dupes:
            raise ValueError(f"each family may appear once, but got duplicates {dupes}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        for name, rates in (("base_lr", self.base_lr), ("max_lr", self.max_lr)):
            if rates is not None and rates.low <= 0:
                raise RuleError(
                    name, f"`low > 0` must hold for a learning rate, but got (low={rates.low})"
                )
        needs_max = [f for f in self.families if "max_lr" in FAMILIES[f].params]
        if needs_max and self.max_lr is None:
            raise RuleError(
                "max_lr", f"`max_lr` is required by the families {needs_max}, but got None"
            )
        if self.max_lr is not None and self.max_lr.high <= self.base_lr.low:
            raise RuleError(
                "max_lr",
                "`max_lr.high > base_lr.low` must hold (the max_lr range lies wholly below "
                f"base_lr), but got (base_lr.low={self.base_lr.low}, "
                f"max_lr.high={self.max_lr.high})",
            )
        for f in self.families:
            if "gamma" in FAMILIES[f].params and not (self.gamma.low > 0 and self.gamma.high <= 1):
                raise RuleError(
                    "gamma",
                    "`0 < gamma.low` and `gamma.high <= 1` must hold, but got "
                    f"(low={self.gamma.low}, high={self.gamma.high})",
                )
        bad_t = [t for t in self.t_mult.values if t < 1]
        if bad_t:
            raise RuleError("t_mult", f"`t_mult >= 1` must hold, but got {bad_t}")
        return self


def study_seed(seed: int, family: str) -> int:
    """A stable per-family seed, so families draw independent sequences from one spec seed."""
    return zlib.crc32(f"{seed}:{family}".encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class FamilySpace:
    """The Optuna define-by-run function of one family (a class, so Ray can pickle it).

    It only suggests; every parameter name always gets the same (float/int/categorical, log) kind.
    """

    space: SearchSpace
    family: str

    def __call__(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        params = FAMILIES[self.family].params
        base, top = self.space.base_lr, self.space.max_lr
        base_high = base.high
        if top is not None and "max_lr" in params:
            base_high = min(base.high, top.high / _STRICTLY_ABOVE)  # leave room for max_lr
        base_lr = trial.suggest_float("base_lr", base.low, base_high, log=base.log)
        if "max_lr" in params and top is not None:
            low = max(top.low, base_lr * _STRICTLY_ABOVE)
            trial.suggest_float("max_lr", low, top.high, log=top.log)
        if "step_size_epochs" in params:
            step = self.space.step_size_epochs
            trial.suggest_int("step_size_epochs", step.low, step.high, log=step.log)
        if "gamma" in params:
            gamma = self.space.gamma
            trial.suggest_float("gamma", gamma.low, gamma.high, log=gamma.log)
        if "t_mult" in params:
            trial.suggest_categorical("t_mult", list(self.space.t_mult.values))
        return {"family": self.family}


def define_by_run(space: SearchSpace, family: str) -> DefineByRun:
    """The define-by-run function of ``family`` over ``space``."""
    return FamilySpace(space, family)


def in_bounds(space: SearchSpace, config: dict[str, Any]) -> list[str]:
    """Why a sampled config breaks the space (empty when it does not)."""
    family = config["family"]
    problems = []
    checks: dict[str, FloatRange | IntRange | Choice] = {
        "base_lr": space.base_lr,
        "step_size_epochs": space.step_size_epochs,
        "gamma": space.gamma,
        "t_mult": space.t_mult,
    }
    if space.max_lr is not None:
        checks["max_lr"] = space.max_lr
    for name in FAMILIES[family].params:
        if name not in config:
            problems.append(f"{name} missing")
        elif not checks[name].contains(config[name]):
            problems.append(f"{name}={config[name]} outside {checks[name]}")
    if "max_lr" in FAMILIES[family].params and not config["max_lr"] > config["base_lr"]:
        problems.append(f"max_lr={config['max_lr']} not above base_lr={config['base_lr']}")
    return problems
