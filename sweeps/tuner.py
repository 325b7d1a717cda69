"""One Ray Tune search over every LR schedule family: per family an Optuna study (TPE) and ASHA,
under one Tuner whose trial actors are reused across families; resources, storage, resume."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

# Ray's newer console output ignores verbose=0; the legacy engine honours it.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ray saves the experiment state (what --resume restores) at most this often; its "auto" waits
# 10 s or more, and a trial that started since then restarts from scratch on resume.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
# Ray's automatic CSV and TensorBoard loggers write files on every result while the trial waits;
# MLflow is our log, so only the JSON one (result.json, Ray's own record) is kept, explicitly.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

from ray import tune
from ray.tune import ResultGrid
from ray.tune.execution import class_cache
from ray.tune.experiment import Trial
from ray.tune.logger import JsonLoggerCallback
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from search_spaces import FAMILIES, define_by_run, study_seed
from sweeps.errors import SweepsError, first_line
from sweeps.progress import SweepProgress
from sweeps.spec import SweepSpec
from sweeps.storage import saved_state_problem, storage_errors, storage_failures
from sweeps.tracking import SweepTracker
from sweeps.trainable import EARLIER, ENDS, ray_trainable, read_history

METRIC, MODE = "val_acc", "max"


def trial_status(last: dict[str, Any] | None, error: bool) -> str:
    """How a trial ended: failed, else its last report's end; still "running": ASHA stopped it."""
    if error:
        return "failed"
    if last is None:
        return "stopped"
    status = str(last.get("status", "running"))
    return status if status in ENDS else "stopped"


class PrunedAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED, not COMPLETE, for trials the scheduler stopped.

    Ray's OptunaSearch uses a NopPruner, so an ASHA-stopped trial would otherwise enter the study
    as COMPLETE with its truncated value and mislead TPE.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._told: dict[str, int] = {}  # trial_id -> the last epoch reported to Optuna

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A sweep saved by an older sweeps (before _told) still resumes; at worst Optuna warns
        # once for each epoch it had been told before the stop.
        self.__dict__.update(state)
        self.__dict__.setdefault("_told", {})

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        # Tune hands the result that ends a trial to this hook (at times to on_trial_result
        # too); the epochs that rode along with it are intermediate values, as when each epoch
        # was a result of its own.
        for row in result.get(EARLIER, ()) if result else ():
            self._report(trial_id, row)
        if not error and result is not None and trial_status(result, False) == "stopped":
            # No value: Optuna records PRUNED and TPE uses the reported intermediate values.
            super().on_trial_complete(trial_id, None, False)
            return
        super().on_trial_complete(trial_id, result, error)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        for row in (*result.get(EARLIER, ()), result):
            self._report(trial_id, row)

    def _report(self, trial_id: str, row: dict[str, Any]) -> None:
        # Tune may hand a trial's last result to both hooks, and a retried trial repeats the
        # epochs after its checkpoint: Optuna keeps a step's first value and warns on the CLI
        # for each later one, so each epoch goes once.
        epoch = int(row["epoch"])
        if epoch <= self._told.get(trial_id, 0):
            return
        self._told[trial_id] = epoch
        # Optuna's step is the epoch: Ray's would count results, which come every few epochs.
        super().on_trial_result(trial_id, {**row, TRAINING_ITERATION: epoch})

    @property
    def study(self) -> optuna.Study | None:
        return self._ot_study


def make_sampler(spec: SweepSpec, family: str) -> optuna.samplers.BaseSampler:
    seed = study_seed(spec.sampler.seed, family)
    if spec.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = spec.sampler.startup_trials(spec.search.trials_per_family)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def stops_early(spec: SweepSpec, family: str) -> bool:
    """Whether ``family``'s trials are judged before their last epoch (else nothing is left to
    judge: early stopping is off, or the grace period reaches the end)."""
    return spec.early_stopping.name != "none" and spec.grace_period(family) < spec.train.epochs


def make_scheduler(spec: SweepSpec, family: str) -> TrialScheduler:
    if not stops_early(spec, family):
        return FIFOScheduler()
    grace = spec.grace_period(family)
    return ASHAScheduler(
        time_attr="epoch",
        metric=METRIC,
        mode=MODE,
        max_t=spec.train.epochs,
        # ASHA must not judge a cyclic family mid-cycle, while its rate is still high.
        grace_period=grace,
        reduction_factor=spec.early_stopping.reduction_factor,
    )


def decision_epochs(spec: SweepSpec, family: str) -> tuple[int, ...]:
    """The epochs at which ``make_scheduler(spec, family)`` judges a trial: ASHA's rungs,
    grace x factor^k, as many as Ray's ASHA makes below the last epoch; none without ASHA."""
    if not stops_early(spec, family):
        return ()
    grace = spec.grace_period(family)
    factor = spec.early_stopping.reduction_factor
    # Ray's ASHAScheduler counts its rungs with numpy's logs; the same formula gives the same count.
    rungs = int(np.log(spec.train.epochs / grace) / np.log(factor) + 1)
    return tuple(math.ceil(grace * factor**k) for k in range(rungs))


class FamilySearch(Searcher):
    """Every family's own Optuna study behind one searcher. Families are offered in spec order:
    the next one gets a slot only while the ones before it have nothing to suggest (budget all
    handed out, or at their concurrency limit). As when each family had a Tuner of its own, a
    study has at most ``limit`` of its trials running at once."""

    def __init__(self, spec: SweepSpec, limit: int) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.budget = {f: spec.search.trials_per_family for f in spec.families}
        self.suggested = dict.fromkeys(spec.families, 0)
        self.family_of: dict[str, str] = {}  # trial_id -> family
        self.studies: dict[str, PrunedAwareOptunaSearch] = {}
        self.limiters: dict[str, ConcurrencyLimiter] = {}
        for f in spec.families:
            self.studies[f] = PrunedAwareOptunaSearch(
                space=define_by_run(spec.search, f),
                metric=METRIC,
                mode=MODE,
                sampler=make_sampler(spec, f),
            )
            self.limiters[f] = ConcurrencyLimiter(self.studies[f], max_concurrent=limit)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        return True  # each study got its space, metric and mode when it was built

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        for family, limiter in self.limiters.items():
            if self.suggested[family] >= self.budget[family]:
                continue
            config = limiter.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                continue
            self.suggested[family] += 1
            self.family_of[trial_id] = family
            return config
        return None  # all at their limit, or all handed out (Tune stops at num_samples)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.family_of:
            self.limiters[self.family_of[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self.family_of:
            self.limiters[self.family_of[trial_id]].on_trial_complete(trial_id, result, error)

    # Tune saves this with its experiment state, so a resumed sweep keeps every study.
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class FamilyScheduler(FIFOScheduler):
    """Each family's own early stopping under one Tuner: ASHA's rungs differ per family, and a
    rung must compare trials of one family only."""

    def __init__(self, spec: SweepSpec) -> None:
        super().__init__()
        self.schedulers = {f: make_scheduler(spec, f) for f in spec.families}

    def _of(self, trial: Trial) -> TrialScheduler:
        return self.schedulers[trial.config["family"]]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return all(s.set_search_properties(metric, mode, **spec) for s in self.schedulers.values())

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{f}: {s.debug_string()}" for f, s in self.schedulers.items())


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
    # (final val_acc, status, sampled config) of every trial that reported
    trials: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the failed trials' error lines

    def add(
        self,
        name: str,
        status: str,
        config: dict[str, Any],
        last: dict[str, Any] | None,
    ) -> None:
        self.statuses[name] = status
        if last is None:
            return
        val_acc = float(last[METRIC])
        self.epochs += int(last["epoch"])
        self.train_seconds += float(last.get("time_total_s", 0.0))
        self.trials.append((val_acc, status, config))
        if status != "failed" and (self.best_val_acc is None or val_acc > self.best_val_acc):
            self.best_val_acc = val_acc

    def top(self, k: int) -> list[dict[str, Any]]:
        """The ``k`` best sampled configs by final val_acc (failed trials excluded)."""
        ranked = sorted((t for t in self.trials if t[1] != "failed"), key=lambda t: -t[0])
        return [cfg for _, _, cfg in ranked[:k]]


@dataclass
class FamilyRuns:
    """The driver-side state of one family's trials. Ray pickles callbacks into the experiment
    for ``Tuner.restore``; these live objects stay out of that pickle (see ``TrialLogger``)."""

    tracker: SweepTracker
    family: str
    iters_per_epoch: int
    progress: SweepProgress
    outcome: FamilyOutcome
    runs: dict[str, tuple[str, str]] = field(default_factory=dict)  # trial_id -> (name, run id)
    logged: dict[str, int] = field(default_factory=dict)  # run id -> last epoch in MLflow
    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial_id -> last result
    ended: set[str] = field(default_factory=set)  # trial ids whose run is ended (now or before)
    numbered: int = 0  # the highest number in a run name so far ("fixed-007": 7)

    def replay(self, run_id: str, checkpoint: tune.Checkpoint | None) -> None:
        """Resume: log the epochs a checkpoint holds that MLflow lacks. The crashed driver had
        them queued for MLflow (sent every ``outbox.SEND_EVERY`` s) when it died."""
        if checkpoint is None:
            return
        with checkpoint.as_directory() as d:
            history = read_history(Path(d))
        for row in history:
            self.log_epoch(run_id, row)

    def log_epoch(self, run_id: str, row: Mapping[str, Any]) -> None:
        """Log one reported epoch, unless it is logged already: epochs re-run after a restore
        were logged before the fault, and the restored RNGs make them identical."""
        epoch = int(row["epoch"])
        if epoch > self.logged.get(run_id, 0):
            self.tracker.log_epoch(run_id, row)
            self.logged[run_id] = epoch

    def params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A trial run's MLflow params: its family's sampled values, and the step size in
        iterations as torch's LR schedules take it."""
        params = {k: v for k, v in config.items() if k in FAMILIES[self.family].params}
        if "step_size_epochs" in params:
            params["step_size_iters"] = params["step_size_epochs"] * self.iters_per_epoch
        return {"family": self.family, **params, "iters_per_epoch": self.iters_per_epoch}

    def adopt(self, saved: set[str]) -> None:
        """Resume: take over this family's trial runs from MLflow, as the crashed driver left
        them. Ended runs count towards the outcome; open ones continue when Tune resumes them.
        A run whose trial is not among ``saved`` (Ray's restored experiment) is discarded, ended
        or not: Ray samples that trial again, and it would be counted twice."""
        for run in self.tracker.children("trial", self.family):
            trial_id = run.data.tags["sweeps.trial_id"]
            name = run.info.run_name or ""
            number = name.rpartition("-")[2]
            if number.isdigit():
                self.numbered = max(self.numbered, int(number))
            if trial_id not in saved:
                self.tracker.discard(
                    run.info.run_id, "its trial is not in the restored Ray experiment"
                )
                continue
            self.runs[trial_id] = (name, run.info.run_id)
            self.logged[run.info.run_id] = self.tracker.last_step(run.info.run_id)
            # A driver killed between a run's creation and its params' write left it without.
            config = json.loads(run.data.tags.get("sweeps.config", "{}"))
            lost = {k: v for k, v in self.params(config).items() if k not in run.data.params}
            if lost:
                self.tracker.log_params(run.info.run_id, lost)
            status = run.data.tags.get("sweeps.status")
            if run.info.status == "RUNNING" or status is None:
                self.tracker.reopen_child(run)
                continue
            self.ended.add(trial_id)
            m = run.data.metrics
            last = None
            if "final_val_acc" in m and m.get("epochs_used", 0) > 0:
                last = {
                    METRIC: m["final_val_acc"],
                    "epoch": m["epochs_used"],
                    "time_total_s": m.get("train_seconds", 0.0),
                }
            self.outcome.add(name, status, config, last)
            self.progress.trial_restored(self.family, status, last[METRIC] if last else None)


# Live FamilyRuns by search key, then family; the pickled TrialLogger holds only its key.
_LIVE: dict[str, dict[str, FamilyRuns]] = {}
# By search key: run_search's hook, called for each family whose search is over (maybe again).
_ON_COMPLETE: dict[str, Callable[[str, FamilyOutcome], None]] = {}
# By search key: called with a trial's family each time one of its trials ends.
_ON_TRIAL_END: dict[str, Callable[[str], None]] = {}


_QUALIFIED = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Z]\w*: )")


def error_line(text: str | None) -> str:
    """The exception line of the latest failure in a trial's error.txt ("Failure # N" blocks of
    a Ray actor banner, an indented traceback and the exception line)."""
    lines = [
        ln.strip()
        for ln in (text or "").splitlines()
        if ln.strip() and not ln[0].isspace() and "ray::" not in ln
        and not ln.startswith(("Failure #", "Traceback"))
    ]  # fmt: skip
    # "pkg.module.SomeError: ..." reads as "SomeError: ...", like a builtin's line.
    return _QUALIFIED.sub("", lines[-1] if lines else "unknown error")[:500]


def _error_line(trial: Trial) -> str:
    # Ray appends to the driver's local error.txt at once and syncs it to storage later.
    local = Path(trial.error_file) if trial.error_file else None
    if local is not None and local.exists():
        return error_line(local.read_text())
    return error_line(str(trial.get_error() or ""))


class TrialLogger(tune.Callback):
    """Mirrors each trial into a nested MLflow run and the progress view."""

    def __init__(self, key: str) -> None:
        self.key = key

    def runs(self, trial: Trial) -> FamilyRuns:
        return _LIVE[self.key][trial.config["family"]]

    def _complete(self, live: FamilyRuns) -> None:
        """Hand each family whose search is over to the hook, once every trial has started."""
        hook = _ON_COMPLETE.get(self.key)
        if hook is not None:
            for family in live.progress.complete_families():
                hook(family, _LIVE[self.key][family].outcome)

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        live = self.runs(trial)
        if trial.trial_id in live.ended:  # finished before a crash; Ray just re-confirms it
            return
        live.progress.trial_started(live.family)
        self._complete(live)
        if trial.trial_id in live.runs:  # a retried or resumed trial continues its own run
            live.replay(live.runs[trial.trial_id][1], trial.checkpoint)
            return
        live.numbered += 1
        name = f"{live.family}-{live.numbered:03d}"
        tags = {
            "sweeps.family": live.family,
            "sweeps.trial_id": trial.trial_id,
            "sweeps.config": json.dumps(dict(trial.config)),  # typed, for a resumed driver
        }
        run_id = live.tracker.start_child(name, "trial", tags, live.params(trial.config))
        live.runs[trial.trial_id] = (name, run_id)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        live = self.runs(trial)
        if trial.trial_id in live.ended:
            return
        live.last[trial.trial_id] = result
        run_id = live.runs[trial.trial_id][1]
        rows = [*result.get(EARLIER, ()), result]  # every epoch since the trial's last result
        for row in rows:
            epoch = int(row["epoch"])
            resumed = row.get("resumed_from_epoch")
            if resumed is not None and epoch == int(resumed) + 1:
                live.tracker.set_tags(run_id, {"sweeps.resumed_from_epoch": str(resumed)})
            live.log_epoch(run_id, row)
        live.progress.trial_result(live.family)

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        live = self.runs(trial)
        name, run_id = live.runs[trial.trial_id]
        error = _error_line(trial)
        live.progress.trial_retried(live.family, name, error)
        live.tracker.set_tags(
            run_id, {"sweeps.retries": str(trial.num_failures), "sweeps.last_error": error}
        )

    def _end(self, trial: Trial, error: bool) -> None:
        live = self.runs(trial)
        if trial.trial_id in live.ended:
            return
        name, run_id = live.runs[trial.trial_id]
        last = live.last.get(trial.trial_id)
        if last is None and error is False and trial.last_result:
            last = trial.last_result  # resumed trial that ended without a new result
        status = trial_status(last, error)
        epochs = int(last["epoch"]) if last else 0
        # A trial that failed before its first epoch has no val_acc: 0 would read as chance.
        val_acc = float(last[METRIC]) if last else math.nan
        train_s = float(last.get("time_total_s", 0.0)) if last else 0.0
        note = ""
        if error:
            note = _error_line(trial)
            live.tracker.set_tags(run_id, {"sweeps.error": note})
            live.outcome.errors.append(note)
            note += f" (traceback: {trial.path}/error.txt)"
        summary = {"epochs_used": epochs, "train_seconds": train_s}
        live.tracker.end_child(
            run_id, status, summary if last is None else {**summary, "final_val_acc": val_acc}
        )
        live.ended.add(trial.trial_id)
        live.outcome.add(name, status, dict(trial.config), last)
        live.progress.trial_ended(live.family, name, status, epochs, val_acc, note)
        ended = _ON_TRIAL_END.get(self.key)
        if ended is not None:
            ended(live.family)
        self._complete(live)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._end(trial, error=False)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._end(trial, error=True)


def _reconcile(families: dict[str, FamilyRuns], grid: ResultGrid) -> None:
    """After a resumed search: runs the crashed driver left open are ended from Ray's results,
    or discarded when Ray's restored experiment no longer holds their trial."""
    results = {}
    for i in range(len(grid)):
        res = grid[i]
        if res.metrics and "epoch" in res.metrics:
            results[res.metrics["trial_id"]] = (
                res.metrics, res.config or {}, res.error, res.checkpoint
            )  # fmt: skip
    for live in families.values():
        for trial_id, (name, run_id) in live.runs.items():
            if trial_id in live.ended:
                continue
            if trial_id not in results:  # in the saved experiment, but it never reported
                live.tracker.discard(run_id, "its trial has no result in the Ray experiment")
                continue
            last, config, error, checkpoint = results[trial_id]
            live.replay(run_id, checkpoint)
            status = trial_status(last, error is not None)
            live.tracker.end_child(
                run_id,
                status,
                {
                    "epochs_used": int(last["epoch"]),
                    "final_val_acc": float(last[METRIC]),
                    "train_seconds": float(last.get("time_total_s", 0.0)),
                },
            )
            live.outcome.add(name, status, dict(config), dict(last))
            live.progress.trial_restored(live.family, status, float(last[METRIC]))


def experiment_path(storage: str, experiment: str) -> str:
    return f"{storage.rstrip('/')}/{experiment}"


def check_resumable(tracker: SweepTracker, parent: str, storage: str, experiment: str) -> None:
    """A resumed sweep whose Ray experiment is gone would run its finished trials again (Ray
    keeps their checkpoints): refuse it, unless no trial had ended (Ray saved nothing yet)."""
    path = experiment_path(storage, experiment)
    if tune.Tuner.can_restore(path):
        return
    trials = tracker.children("trial", parent=parent)
    ended = [r for r in trials if r.data.tags.get("sweeps.status")]
    if ended:
        raise SweepsError(
            f"--resume: Ray's saved search {path!r} must exist to continue this sweep, but it "
            f"does not, and its {len(ended)} ended trials would run again; pass the --storage "
            "the sweep ran with, or run without --resume to start a new sweep"
        )


@contextmanager
def trial_actors_without_runtime_env() -> Iterator[None]:
    """Tune's trial actors get no runtime env (``ray_trainable`` sets its variables itself):
    Ray places an actor that has one only in a new process, never in an idle worker started
    ahead (``cluster.start_ray``'s, with torch imported), so each first trial actor would
    wait ~3 s for its imports."""
    env = dict(class_cache.DEFAULT_ENV_VARS)
    class_cache.DEFAULT_ENV_VARS.clear()
    try:
        yield
    finally:
        class_cache.DEFAULT_ENV_VARS.update(env)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def ctrl_c_ends_the_sweep() -> Iterator[None]:
    """Raise KeyboardInterrupt after a search that Ctrl-C ended.

    Tune catches the first Ctrl-C in ``fit()`` itself: it saves the experiment's state and
    returns as if the search were over, and the sweep would go on to a verdict on part of it.
    Tune hands SIGINT back to the handler it found once it has caught one (so that a second
    Ctrl-C skips its final save): that handler raising is how the sweep learns of it. Tune's
    handlers are taken off afterwards, or a later Ctrl-C would only set Tune's spent flag."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
        caught = signal.getsignal(signal.SIGINT) is _raise_interrupt and _tune_takes_sigint()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt


def _tune_takes_sigint() -> bool:
    """Whether Tune installed its SIGINT handler in ``fit()`` (read as Tune reads it; a value
    Tune cannot read has failed ``fit()`` before this is asked)."""
    return not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))


def restore(path: str, trainable: Any) -> tuple[set[str], tune.Tuner]:
    """Resume: the ids of the trials Ray's saved experiment holds, and its restored Tuner."""
    try:
        torn = saved_state_problem(path)
        if torn is None:
            saved = {t.trial_id for t in tune.ExperimentAnalysis(path).trials}
            return saved, tune.Tuner.restore(path, trainable, resume_unfinished=True)
    except (EOFError, pickle.UnpicklingError) as exc:  # tuner.pkl cut short by a full disk
        torn = f"{type(exc).__name__}: {first_line(exc)}"
    except OSError as exc:  # not torn: the search can go on once the files can be read
        raise SweepsError(
            f"--resume: Ray's saved state of the search in {path!r} must be readable, but "
            f"{type(exc).__name__}: {first_line(exc)}; make it readable, then --resume again"
        ) from None
    raise SweepsError(
        f"--resume: Ray's saved state of the search in {path!r} must be readable, but {torn}; "
        "the search cannot go on from it, so start the sweep afresh (without --resume)"
    )


def run_search(
    spec: SweepSpec,
    *,
    tracker: SweepTracker,
    progress: SweepProgress,
    storage: str,
    experiment: str,
    slots: int,
    limit: int,
    iters_per_epoch: int,
    resume: bool = False,
    on_complete: Callable[[str, FamilyOutcome], None] | None = None,
    on_trial_end: Callable[[str], None] | None = None,
) -> dict[str, FamilyOutcome]:
    """Run every family's search to the end of its budget, ``slots`` trials at a time and at
    most ``limit`` of one family; with ``resume``, continue an interrupted search from Ray's
    experiment state (finished trials are not run again). ``on_complete(family, outcome)`` is
    called (maybe more than once) for each family whose trials have all ended, from the moment
    no trial waits to start: its top configs are final, and the slots it frees would otherwise
    idle until the search ends.

    One Tuner for all families: its trial actors are reused across families, so the worker
    start-up (imports, the compiled step) is paid once per worker, not once per family."""
    outcomes = {f: FamilyOutcome(f) for f in spec.families}
    families = {
        f: FamilyRuns(tracker, f, iters_per_epoch, progress, outcomes[f]) for f in spec.families
    }
    key = experiment
    _LIVE[key] = families
    if on_complete is not None:
        _ON_COMPLETE[key] = on_complete
    if on_trial_end is not None:
        _ON_TRIAL_END[key] = on_trial_end
    path = experiment_path(storage, experiment)
    trainable = tune.with_resources(
        tune.with_parameters(
            ray_trainable,
            shared=spec.trial_config({}, seed=spec.sampler.seed),
            entry=spec.trainable,
            env=dict(class_cache.DEFAULT_ENV_VARS),
            decide_at={f: decision_epochs(spec, f) for f in spec.families},
        ),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    restoring = resume and tune.Tuner.can_restore(path)
    searcher = None
    if restoring:
        saved, tuner = restore(path, trainable)
        for live in families.values():
            live.adopt(saved)
    else:
        if resume:  # Ray saved nothing of this search: it starts afresh, so drop its runs
            for run in tracker.children("trial"):
                tracker.discard(run.info.run_id, "the sweep's Ray experiment was never saved")
        searcher = FamilySearch(spec, limit)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=slots),
                scheduler=FamilyScheduler(spec),
                num_samples=spec.search.trials_per_family * len(spec.families),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=experiment,
                storage_path=storage,
                callbacks=[TrialLogger(key), JsonLoggerCallback()],
                verbose=0,
                # Every checkpoint is kept (a cardio trial's are 26 KB each). With num_to_keep,
                # Ray deletes the one before as it registers a new one, but saves the
                # experiment state (what --resume restores) only later: a driver killed in
                # between leaves a state whose checkpoint is gone, and that trial cannot resume.
                checkpoint_config=tune.CheckpointConfig(),
                failure_config=tune.FailureConfig(max_failures=spec.failure.max_retries),
            ),
        )
    # A failing trial's traceback would flood the console; its error line is in the progress
    # output, the trial's MLflow run and the report, and the whole of it in its error.txt.
    quiet = [logging.getLogger(n) for n in ("ray.tune.execution.tune_controller", "ray.tune.tune")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    try:
        with (
            ctrl_c_ends_the_sweep(),
            trial_actors_without_runtime_env(),
            storage_errors(storage, path),
        ):
            grid = tuner.fit()
        warning = storage_failures(storage, [e for o in outcomes.values() for e in o.errors])
        if warning is not None:
            progress.console.print(warning, highlight=False, markup=False, soft_wrap=True)
        if restoring:
            _reconcile(families, grid)
    finally:
        _LIVE.pop(key, None)
        _ON_COMPLETE.pop(key, None)
        _ON_TRIAL_END.pop(key, None)
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    for f, outcome in outcomes.items():
        outcome.wall_seconds = progress.families[f].elapsed()
        outcome.study = searcher.studies[f].study if searcher is not None else None
    return outcomes
