"""One Ray Tune search per LR schedule family: OptunaSearch (TPE), ASHA, resources, storage."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import optuna

# Ray's newer console output ignores verbose=0; the legacy engine honours it.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from search_spaces import FAMILIES, define_by_run, study_seed
from sweeps.progress import SweepProgress
from sweeps.spec import SweepSpec
from sweeps.tracking import SweepTracker
from sweeps.trainable import ray_trainable

METRIC, MODE = "val_acc", "max"
# Statuses the trainable itself ends with; a last result still "running" was stopped by ASHA.
_TRAINABLE_ENDS = ("completed", "diverged", "collapsed")


def trial_status(last: dict[str, Any] | None, error: bool) -> str:
    if error:
        return "failed"
    if last is None:
        return "stopped"
    status = str(last.get("status", "running"))
    return status if status in _TRAINABLE_ENDS else "stopped"


class PrunedAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED, not COMPLETE, for trials the scheduler stopped.

    Ray's OptunaSearch uses a NopPruner, so an ASHA-stopped trial would otherwise enter the study
    as COMPLETE with its truncated value and mislead TPE.
    """

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if not error and result is not None and trial_status(result, False) == "stopped":
            # No value: Optuna records PRUNED and TPE uses the reported intermediate values.
            super().on_trial_complete(trial_id, None, False)
            return
        super().on_trial_complete(trial_id, result, error)

    @property
    def study(self) -> optuna.Study | None:
        return self._ot_study


def make_sampler(spec: SweepSpec, family: str) -> optuna.samplers.BaseSampler:
    seed = study_seed(spec.sampler.seed, family)
    if spec.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = spec.sampler.startup_trials(spec.search.trials_per_family)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def make_scheduler(spec: SweepSpec, family: str) -> TrialScheduler:
    grace = spec.grace_period(family)
    if spec.early_stopping.name == "none" or grace >= spec.train.epochs:
        return FIFOScheduler()  # nothing left to judge before the end
    return ASHAScheduler(
        time_attr="epoch",
        metric=METRIC,
        mode=MODE,
        max_t=spec.train.epochs,
        # ASHA must not judge a cyclic family mid-cycle, while its rate is still high.
        grace_period=grace,
        reduction_factor=spec.early_stopping.reduction_factor,
    )


def capacity(spec: SweepSpec, resources: dict[str, float]) -> int:
    """How many trials the cluster's resources hold at once."""
    slots = math.floor(resources.get("CPU", 1) / spec.resources.cpu)
    if spec.resources.gpu > 0:
        slots = min(slots, math.floor(resources.get("GPU", 0) / spec.resources.gpu))
    return max(1, slots)


@dataclass
class FamilyOutcome:
    family: str
    statuses: dict[str, str] = field(default_factory=dict)  # run name -> status
    best_val_acc: float | None = None
    epochs: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    study: optuna.Study | None = None
    # (final val_acc, status, sampled config, MLflow run id) of every trial that reported
    trials: list[tuple[float, str, dict[str, Any], str]] = field(default_factory=list)

    def top(self, k: int) -> list[dict[str, Any]]:
        """The ``k`` best sampled configs by final val_acc (failed trials excluded)."""
        ranked = sorted((t for t in self.trials if t[1] != "failed"), key=lambda t: -t[0])
        return [cfg for _, _, cfg, _ in ranked[:k]]


class TrialLogger(tune.Callback):
    """Mirrors each trial into a nested MLflow run and the progress view."""

    def __init__(
        self,
        tracker: SweepTracker,
        family: str,
        iters_per_epoch: int,
        progress: SweepProgress,
        outcome: FamilyOutcome,
    ) -> None:
        self.tracker, self.family, self.iters = tracker, family, iters_per_epoch
        self.progress, self.outcome = progress, outcome
        self.runs: dict[str, tuple[str, str]] = {}  # trial_id -> (run name, run id)
        self.last: dict[str, dict[str, Any]] = {}

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        if trial.trial_id in self.runs:  # a retried trial continues its own run
            return
        name = f"{self.family}-{len(self.runs) + 1:03d}"
        params = {k: v for k, v in trial.config.items() if k in FAMILIES[self.family].params}
        if "step_size_epochs" in params:
            params["step_size_iters"] = params["step_size_epochs"] * self.iters
        params["iters_per_epoch"] = self.iters
        run_id = self.tracker.start_child(
            name,
            "trial",
            {"sweeps.family": self.family, "sweeps.trial_id": trial.trial_id},
            {"family": self.family, **params},
        )
        self.runs[trial.trial_id] = (name, run_id)
        self.progress.trial_started(self.family)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        self.last[trial.trial_id] = result
        self.tracker.log_epoch(self.runs[trial.trial_id][1], result)
        self.progress.trial_result(self.family, float(result[METRIC]))

    def _end(self, trial: Trial, error: bool) -> None:
        name, run_id = self.runs[trial.trial_id]
        last = self.last.get(trial.trial_id)
        status = trial_status(last, error)
        epochs = int(last["epoch"]) if last else 0
        val_acc = float(last[METRIC]) if last else 0.0
        train_s = float(last.get("time_total_s", 0.0)) if last else 0.0
        self.tracker.end_child(
            run_id,
            status,
            {"epochs_used": epochs, "final_val_acc": val_acc, "train_seconds": train_s},
        )
        out = self.outcome
        out.statuses[name] = status
        out.epochs += epochs
        out.train_seconds += train_s
        if last is not None:
            out.trials.append((val_acc, status, dict(trial.config), run_id))
        if (
            last is not None
            and status != "failed"
            and (out.best_val_acc is None or val_acc > out.best_val_acc)
        ):
            out.best_val_acc = val_acc
        self.progress.trial_ended(self.family, name, status, epochs, val_acc)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._end(trial, error=False)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._end(trial, error=True)


def run_family(
    spec: SweepSpec,
    family: str,
    *,
    tracker: SweepTracker,
    progress: SweepProgress,
    storage: str,
    experiment: str,
    max_concurrent: int,
    iters_per_epoch: int,
) -> FamilyOutcome:
    """Run one family's search to the end of its budget."""
    searcher = PrunedAwareOptunaSearch(
        space=define_by_run(spec.search, family),
        metric=METRIC,
        mode=MODE,
        sampler=make_sampler(spec, family),
    )
    outcome = FamilyOutcome(family)
    trainable = tune.with_resources(
        tune.with_parameters(ray_trainable, shared=spec.trial_config({}, seed=spec.sampler.seed)),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            scheduler=make_scheduler(spec, family),
            num_samples=spec.search.trials_per_family,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=family,
            storage_path=f"{storage.rstrip('/')}/{experiment}",
            callbacks=[TrialLogger(tracker, family, iters_per_epoch, progress, outcome)],
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=spec.failure.max_retries),
        ),
    )
    progress.family_started(family)
    tuner.fit()
    progress.family_ended(family)
    outcome.wall_seconds = progress.families[family].elapsed()
    outcome.study = searcher.study
    return outcome
