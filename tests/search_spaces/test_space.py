from __future__ import annotations

from typing import get_args

import optuna
import pytest
from pydantic import ValidationError

from search_spaces import (
    FAMILIES,
    FAMILY_NAMES,
    Choice,
    FamilyName,
    FloatRange,
    IntRange,
    SearchSpace,
    define_by_run,
    in_bounds,
    study_seed,
)
from trainables import LR_SCHEDULES

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(**kw: object) -> SearchSpace:
    base = dict(
        families=list(FAMILY_NAMES),
        trials_per_family=4,
        base_lr={"low": 1e-4, "high": 1.0, "log": True},
        max_lr={"low": 1e-3, "high": 3.0, "log": True},
    )
    base.update(kw)
    return SearchSpace.model_validate(base)


def test_every_family_has_an_lr_schedule() -> None:
    assert set(FAMILIES) == set(LR_SCHEDULES) == set(get_args(FamilyName))


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"low": 3.0, "high": 0.1}, "`low < high` must hold, but got (low=3.0, high=0.1)"),
        ({"low": 0.0, "high": 1.0, "log": True}, "`low > 0` must hold for a log range"),
        ({"low": -1.0, "high": 1.0, "log": True}, "low=-1.0"),
    ],
)
def test_float_range_rules(kw: dict[str, float], needle: str) -> None:
    with pytest.raises(ValidationError, match=None) as e:
        FloatRange.model_validate(kw)
    assert needle in str(e.value)


def test_int_and_choice_rules() -> None:
    with pytest.raises(ValidationError, match="low <= high"):
        IntRange(low=5, high=2)
    with pytest.raises(ValidationError, match="must be distinct"):
        Choice(values=(1, 1))
    assert IntRange(low=2, high=2).contains(2)


def test_max_lr_wholly_below_base_lr_is_refused() -> None:
    with pytest.raises(ValidationError, match="lies wholly below"):
        space(max_lr={"low": 1e-6, "high": 1e-5, "log": True})


def test_max_lr_required_only_by_families_that_use_it() -> None:
    assert space(families=["fixed"], max_lr=None).max_lr is None
    with pytest.raises(ValidationError, match="`max_lr` is required"):
        space(families=["fixed", "triangular"], max_lr=None)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_samples_lie_in_bounds_and_max_above_base(family: str) -> None:
    sp = space()
    fn = define_by_run(sp, family)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=study_seed(0, family))
    )
    for i in range(40):
        trial = study.ask()
        cfg = {**fn(trial), **trial.params}
        assert cfg["family"] == family
        assert set(trial.params) == set(FAMILIES[family].params)
        assert in_bounds(sp, cfg) == []
        study.tell(trial, float(i % 7))


def test_overlapping_ranges_still_leave_room_for_max_lr() -> None:
    # base_lr may reach above max_lr.high: cyclic families clamp it so max_lr > base_lr holds.
    sp = space(base_lr={"low": 0.5, "high": 5.0, "log": True})
    fn = define_by_run(sp, "triangular")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(200):
        trial = study.ask()
        cfg = {**fn(trial), **trial.params}
        assert cfg["base_lr"] < cfg["max_lr"] <= 3.0
        study.tell(trial, 0.0)


def test_distribution_kind_is_stable_per_name() -> None:
    sp = space()
    kinds: dict[str, set[tuple[str, bool]]] = {}
    for family in FAMILY_NAMES:
        study = optuna.create_study()
        fn = define_by_run(sp, family)
        for _ in range(10):
            t = study.ask()
            fn(t)
            for name, dist in t.distributions.items():
                kinds.setdefault(name, set()).add(
                    (type(dist).__name__, bool(getattr(dist, "log", False)))
                )
            study.tell(t, 0.0)
    assert all(len(v) == 1 for v in kinds.values()), kinds


def test_study_seed_differs_per_family_and_is_stable() -> None:
    seeds = {study_seed(0, f) for f in FAMILY_NAMES}
    assert len(seeds) == len(FAMILY_NAMES)
    assert study_seed(3, "sgdr") == study_seed(3, "sgdr")
