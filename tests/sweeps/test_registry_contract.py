"""Contract tests over every registered sweep: validate, translate, sample in bounds. No Ray."""

from __future__ import annotations

import math

import optuna
import pytest

from search_spaces import FAMILIES, define_by_run, in_bounds, study_seed
from sweeps.registry import builtin_names, describe
from sweeps.spec import load_spec
from sweeps.tuner import decision_epochs, make_scheduler
from trainables import TrialConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_built_in_sweeps_are_registered() -> None:
    assert {"cardio_clr", "digits_lr"} <= set(builtin_names())
    assert all(desc for _, desc in describe())


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_sweep_validates_translates_and_samples(name: str) -> None:
    spec = load_spec(name)
    assert spec.name == name
    for family in spec.families:
        fn = define_by_run(spec.search, family)
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=study_seed(spec.sampler.seed, family)),
        )
        for i in range(12):
            trial = study.ask()
            constants = fn(trial)
            params = {**trial.params, **constants}
            assert set(trial.params) == set(FAMILIES[family].params)
            assert in_bounds(spec.search, params) == []
            if "max_lr" in params:
                assert params["max_lr"] > params["base_lr"]
            # The sampled point plus the spec is a valid train_loop config.
            TrialConfig.model_validate(spec.trial_config(params, seed=i))
            study.tell(trial, 0.5 + 0.01 * i)


@pytest.mark.parametrize("name", builtin_names())
def test_cyclic_families_are_not_judged_mid_cycle(name: str) -> None:
    spec = load_spec(name)
    for family in spec.families:
        grace = spec.grace_period(family)
        assert spec.early_stopping.grace_period <= grace <= spec.train.epochs
        if FAMILIES[family].cyclic:
            high = spec.search.step_size_epochs.high
            first_cycle = {"sgdr": high, "one_cycle": spec.train.epochs}.get(family, 2 * high)
            assert grace >= min(first_cycle, spec.train.epochs)


@pytest.mark.parametrize("name", builtin_names())
@pytest.mark.parametrize(
    "overrides",
    [[], ["early_stopping.reduction_factor=2.5"], ["early_stopping.reduction_factor=4",
     "train.epochs=64", "early_stopping.grace_period=4"], ["early_stopping.name=none"]],
)  # fmt: skip
def test_trials_report_at_every_epoch_where_their_scheduler_decides(
    name: str, overrides: list[str]
) -> None:
    """A trial sends Tune a result at ``decision_epochs`` (and holds the epochs between), so
    they must be the rungs of the ASHA that ``make_scheduler`` builds for that family."""
    spec = load_spec(name, overrides)
    for family in spec.families:
        scheduler = make_scheduler(spec, family)
        brackets = getattr(scheduler, "_brackets", [])
        rungs = sorted(math.ceil(m) for m, _ in brackets[0]._rungs) if brackets else []
        assert list(decision_epochs(spec, family)) == rungs, family
