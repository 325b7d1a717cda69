"""Sweep overhead (issue 7 (b)): how much of a sweep's wall time is not training.

Runs ``run_sweep`` on a fixed budget (default: one family, 32 trials, 20 epochs, ASHA on, the
spec's re-evaluation; ``--families`` takes several) in a temporary directory with a temporary
sqlite MLflow store, and prints:

- wall time, the trials' summed training seconds (Σ ``time_total_s`` of their last results, as
  ``train_seconds/<family>`` on the MLflow parent run) and the pure epoch compute (Σ
  ``epoch_seconds``, counting the epochs that ride along with a result), the parallel slots,
  and the overhead share ``1 - train_seconds / (wall x slots)`` for the search alone and for
  the whole sweep. Re-evaluation runs may start in the search's tail; their seconds count only
  in the whole sweep's share, so the search's share overstates its overhead by that overlap;
- the wall time broken into phases that add up to it, timed from outside by wrapping functions
  of ``sweeps`` and ``ray.tune`` (nothing in ``sweeps/`` is edited): Ray start, data facts,
  MLflow setup, the searcher and Tuner build, Tune's controller start, the first trial actor's
  start, the trials (split into epochs, the first trial's start-up on each fresh worker,
  reporting in the worker, the results' round trips to the driver, slots idle between trials),
  the teardown after the last trial, then the wait for the re-evaluation, the report, and
  what is left after it of Ray's shutdown (which starts beside the report);
- costs inside those phases: experiment checkpoints, driver time per result (ASHA, searcher,
  checkpoint bookkeeping, the TrialLogger hooks), Optuna's suggest per trial, and the start-up
  of a fresh worker's first trial.

Medians over ``--repeats`` runs; each run starts and stops its own local Ray.

    SWEEPS_DATA_DIR=../shared/data python benchmarks/overhead.py \
        [--families fixed[,triangular...]] [--trials 32] [--epochs 20] [--repeats 3] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

import optuna
import ray
import ray.tune.impl.tuner_internal as tuner_internal
import ray.tune.tune as tune_module
from ray import tune
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

import sweeps.sweep as sweep_module
import trainables.data
from sweeps.reeval import Reevaluation
from sweeps.spec import load_spec
from sweeps.sweep import RunOptions, run_sweep
from sweeps.tracking import SweepTracker
from sweeps.trainable import EARLIER
from sweeps.tuner import TrialLogger, capacity


@dataclass
class TrialTimes:
    start: float  # Tune's on_trial_start (the actor is up), on the driver's clock
    end: float = 0.0  # on_trial_complete / on_trial_error
    total: float = 0.0  # the last result's time_total_s (measured in the worker)
    epochs: float = 0.0  # Σ epoch_seconds of its results
    pid: int = 0  # the worker process

    @property
    def life(self) -> float:
        return max(0.0, self.end - self.start)


class Clock:
    """Durations (summed per label) and first/last timestamps of events, on one monotonic clock."""

    def __init__(self) -> None:
        self.spans: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.scope = "search"  # the label of the one search's spans
        self.epoch_seconds = 0.0
        self.results: dict[str, int] = defaultdict(int)  # scope -> epoch results
        self.trials: dict[str, TrialTimes] = {}  # "scope/trial id" ->

    def trial(self, key: str) -> TrialTimes:
        return self.trials.setdefault(key, TrialTimes(start=time.monotonic()))

    def mark(self, label: str) -> None:
        now = time.monotonic()
        self.first.setdefault(label, now)
        self.last[label] = now

    def timed(self, label: Callable[..., str] | str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = label(*args, **kwargs) if callable(label) else label
            self.mark(f"{name}>")
            t0 = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spans[name] += time.monotonic() - t0
                self.calls[name] += 1
                self.mark(f"{name}<")

        return wrapper


@contextlib.contextmanager
def instrumented(clock: Clock) -> Iterator[None]:
    """Wrap the functions whose timing makes up the phases; restore them on exit."""

    def fam(label: str) -> Callable[..., str]:
        return lambda *a, **k: f"{clock.scope}:{label}"

    def trial_of(a: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        return kw["trial"] if "trial" in kw else a[2]

    def key(a: tuple[Any, ...], kw: dict[str, Any]) -> str:
        return f"{clock.scope}/{trial_of(a, kw).trial_id}"

    def on_start(self: TrialLogger, *a: Any, **kw: Any) -> None:
        clock.mark(f"{clock.scope}:trial_start")
        clock.trial(key(a, kw))
        orig["on_trial_start"](self, *a, **kw)

    def on_result(self: TrialLogger, *a: Any, **kw: Any) -> None:
        result = kw["result"] if "result" in kw else a[3]
        # A result carries the epochs since the trial's last one (trainable.EARLIER).
        seconds = sum(
            float(r.get("epoch_seconds", 0.0)) for r in (*result.get(EARLIER, ()), result)
        )
        clock.epoch_seconds += seconds
        clock.results[clock.scope] += 1
        times = clock.trial(key(a, kw))
        times.epochs += seconds
        times.pid = int(result.get("pid", 0))
        orig["on_trial_result"](self, *a, **kw)

    def ender(name: str) -> Callable[..., None]:
        def on_end(self: TrialLogger, *a: Any, **kw: Any) -> None:
            orig[name](self, *a, **kw)
            clock.mark(f"{clock.scope}:trial_end")
            trial = trial_of(a, kw)
            times = clock.trial(key(a, kw))
            times.end = time.monotonic()
            times.total = float((trial.last_result or {}).get("time_total_s", 0.0))

        return on_end

    hooks = {
        "on_trial_start": on_start,
        "on_trial_result": on_result,
        "on_trial_complete": ender("on_trial_complete"),
        "on_trial_error": ender("on_trial_error"),
    }
    orig = {name: getattr(TrialLogger, name) for name in hooks}
    targets: list[tuple[Any, str, Callable[..., str] | str]] = [
        (sweep_module, "start_ray", "ray start"),
        (sweep_module, "data_facts", "data facts"),
        (sweep_module, "check_resources", "check resources"),
        (sweep_module, "log_summary", "log summary"),
        (Reevaluation, "finish", "re-evaluation"),
        (sweep_module, "build_and_log", "report"),
        (sweep_module, "run_search", "search:run_search"),
        (SweepTracker, "__init__", "mlflow setup"),
        (SweepTracker, "check", "mlflow setup"),
        (SweepTracker, "start", "mlflow setup"),
        (SweepTracker, "finish", "mlflow finish"),
        (ray, "shutdown", "ray shutdown"),
        (tune.Tuner, "fit", fam("fit")),
        (tuner_internal, "run", fam("tune.run")),
        (TuneController, "__init__", fam("controller init")),
        (TuneController, "checkpoint", fam("experiment checkpoint")),
        (TuneController, "cleanup", fam("controller cleanup")),
        (tune_module, "ExperimentAnalysis", fam("experiment analysis")),
        (TuneController, "_on_training_result", fam("driver: result processing")),
        (ASHAScheduler, "on_trial_result", fam("driver: ASHA")),
        (ConcurrencyLimiter, "on_trial_result", fam("driver: searcher result")),
        (OptunaSearch, "suggest", fam("driver: searcher suggest")),
        (Trial, "on_checkpoint", fam("driver: checkpoint bookkeeping")),
    ]
    with contextlib.ExitStack() as stack:
        for name, hook in hooks.items():
            timed = clock.timed(fam("callback mlflow"), hook)
            stack.enter_context(mock.patch.object(TrialLogger, name, timed))
        for owner, attr, label in targets:
            fn = getattr(owner, attr)
            stack.enter_context(mock.patch.object(owner, attr, clock.timed(label, fn)))
        yield


def first_on_worker(rows: list[TrialTimes]) -> list[TrialTimes]:
    """The first trial each worker process ran (it pays the process's imports and compiles)."""
    firsts: dict[int, TrialTimes] = {}
    for t in sorted(rows, key=lambda t: t.start):
        firsts.setdefault(t.pid, t)
    return list(firsts.values())


def between_trials(rows: list[TrialTimes]) -> float:
    """Median seconds from a trial's end to the start of the next one in the same process
    (trials that sent no result, so no pid, are left out)."""
    by_pid: dict[int, list[TrialTimes]] = defaultdict(list)
    for t in sorted(rows, key=lambda t: t.start):
        if t.pid:
            by_pid[t.pid].append(t)
    gaps = [b.start - a.end for ts in by_pid.values() for a, b in itertools.pairwise(ts)]
    return statistics.median(gaps) if gaps else 0.0


def phases(clock: Clock, slots: int, t_start: float, t_end: float) -> dict[str, float]:
    """The wall time as consecutive phases (they add up to the total)."""
    s, first, last = clock.spans, clock.first, clock.last
    out: dict[str, float] = {
        "ray start": s["ray start"],
        "data facts": s["data facts"],
        "mlflow setup (client, check, parent run)": s["mlflow setup"] + s["check resources"],
    }
    fam = "search"  # the prefix of the search phase's clock keys
    entry, exit_ = first[f"{fam}:run_search>"], last[f"{fam}:run_search<"]
    fit_in = first[f"{fam}:fit>"]
    ctl_ready = last[f"{fam}:controller init<"]
    started = first.get(f"{fam}:trial_start", ctl_ready)
    ended = last.get(f"{fam}:trial_end", started)
    teardown = exit_ - ended
    out[f"{fam}: searcher + Tuner build"] = fit_in - entry
    out[f"{fam}: Tuner.fit -> controller ready"] = ctl_ready - fit_in
    out[f"{fam}: controller ready -> first trial actor up"] = started - ctl_ready
    # The trials' span in slot-seconds / slots. Each trial's life (on_trial_start to its
    # end) is its time_total_s (the worker's clock: epochs, the first trial's start-up on a
    # fresh worker, reporting and checkpoints) plus the round trips of its results: after
    # each report the trial waits for the driver's next train() call. Between trials a slot
    # is idle (actor reset, next suggestion, MLflow run creation).
    rows = [t for k, t in clock.trials.items() if k.startswith(f"{fam}/")]
    epochs = sum(t.epochs for t in rows)
    startup = sum(t.total - t.epochs for t in first_on_worker(rows))
    total = sum(t.total for t in rows)
    alive = sum(t.life for t in rows)
    span = ended - started
    out[f"{fam}: trials: epochs (Σ epoch_seconds / slots)"] = epochs / slots
    out[f"{fam}: trials: first trial on each worker: start-up before epoch 1"] = startup / slots
    out[f"{fam}: trials: reporting + checkpoints in the worker"] = (
        total - epochs - startup
    ) / slots
    out[f"{fam}: trials: result round trips (Σ (life - time_total_s) / slots)"] = (
        alive - total
    ) / slots
    out[f"{fam}: trials: slots idle between trials"] = span - alive / slots
    out[f"{fam}: teardown (last trial end -> run_search returns)"] = teardown
    out["log summary"] = s["log summary"]
    out["re-evaluation"] = s["re-evaluation"]
    out["report"] = s["report"]
    # Ray's shutdown starts beside the report; what is left of it is waited for after.
    out["after the report: finish + the rest of Ray's shutdown"] = t_end - last["report<"]
    out["other"] = (t_end - t_start) - sum(out.values())
    return out


def details(clock: Clock) -> dict[str, float]:
    """Costs inside the phases (not additive with them)."""
    s, first, last = clock.spans, clock.first, clock.last
    out: dict[str, float] = {"Ray's shutdown, all of it (beside the report)": s["ray shutdown"]}
    fam = "search"  # the prefix of the search phase's clock keys
    ended = last.get(f"{fam}:trial_end", 0.0)
    out[f"{fam}: in teardown: final experiment checkpoint (wait)"] = max(
        0.0, last[f"{fam}:experiment checkpoint<"] - max(ended, first[f"{fam}:fit>"])
    )
    out[f"{fam}: in teardown: controller cleanup"] = s[f"{fam}:controller cleanup"]
    out[f"{fam}: in teardown: ExperimentAnalysis"] = s[f"{fam}:experiment analysis"]
    out[f"{fam}: experiment checkpoints, all calls"] = s[f"{fam}:experiment checkpoint"]
    out[f"{fam}: MLflow + progress callbacks on the driver"] = s[f"{fam}:callback mlflow"]
    n = max(1, clock.results[fam])
    for part in ("result processing", "ASHA", "searcher result", "checkpoint bookkeeping"):
        spent = s[f"{fam}:driver: {part}"]
        out[f"{fam}: driver per result: {part} (ms)"] = 1000 * spent / n
    suggests = max(1, clock.calls[f"{fam}:driver: searcher suggest"])
    out[f"{fam}: driver: Optuna suggest, ms per trial"] = (
        1000 * s[f"{fam}:driver: searcher suggest"] / suggests
    )
    rows = [t for k, t in clock.trials.items() if k.startswith(f"{fam}/")]
    waits = sum(t.life - t.total for t in rows)
    firsts = first_on_worker(rows)
    out[f"{fam}: first trial on a fresh worker: start-up before epoch 1, s each"] = sum(
        t.total - t.epochs for t in firsts
    ) / max(1, len(firsts))
    out[f"{fam}: ms per result: round trip (trial waits for the driver)"] = 1000 * waits / n
    out[f"{fam}: a slot between two trials, median ms"] = 1000 * between_trials(rows)
    out[f"{fam}: ms per result: all TrialLogger hooks (MLflow, progress)"] = (
        1000 * s[f"{fam}:callback mlflow"] / n
    )
    return out


def run_once(spec_name: str, overrides: list[str], workdir: Path) -> dict[str, Any]:
    spec = load_spec(spec_name, overrides)
    trainables.data.clear_caches()  # each run loads its data facts, as the CLI does
    clock = Clock()
    quiet = Console(stderr=True, quiet=True)
    opts = RunOptions(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", storage=str(workdir))
    old = Path.cwd()
    os.chdir(workdir)  # Ray, MLflow and Tune write nothing into the checkout
    try:
        with instrumented(clock):
            t0 = time.monotonic()
            result = run_sweep(spec, opts, quiet)
            t1 = time.monotonic()
    finally:
        os.chdir(old)
    # As run_sweep computes it: the CPUs' slots, at most TPE's random start per family.
    cpus = {"CPU": float(os.cpu_count() or 1)}
    per_family = spec.sampler.startup_trials(spec.search.trials_per_family)
    slots = max(1, min(capacity(spec, cpus), per_family * len(spec.families)))
    train = sum(o.train_seconds for o in result.outcomes.values())
    search = clock.spans["search:run_search"]
    reeval = sum(r.seconds for r in result.reevals)
    wall = t1 - t0
    return {
        "wall": wall,
        "search wall": search,
        "train seconds (Σ time_total_s)": train,
        "epoch seconds (Σ epoch_seconds)": clock.epoch_seconds,
        "re-evaluation train seconds": reeval,
        "slots": slots,
        "epochs": sum(o.epochs for o in result.outcomes.values()),
        "best val_acc": max(o.best_val_acc or 0.0 for o in result.outcomes.values()),
        "overhead share, search": 1 - train / (search * slots),
        "overhead share, search (by Σ epoch_seconds)": 1 - clock.epoch_seconds / (search * slots),
        "overhead share, whole sweep": 1 - (train + reeval) / (wall * slots),
        "phases": phases(clock, slots, t0, t1),
        "results": sum(clock.results.values()),
        "details": details(clock),
    }


def med(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> float:
    return statistics.median(r[sub][key] if sub else r[key] for r in runs)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sweep", default="cardio_clr")
    p.add_argument("--families", default="fixed", help="comma-separated")
    p.add_argument("--trials", type=int, default=32)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="k=v")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overrides = [
        f"search.families=[{args.families}]",
        f"search.trials_per_family={args.trials}",
        f"train.epochs={args.epochs}",
        *args.extra,
    ]
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="sweeps-overhead-") as d:
            runs.append(run_once(args.sweep, overrides, Path(d)))
        r = runs[-1]
        print(
            f"run {i + 1}/{args.repeats}: wall {r['wall']:.1f}s, "
            f"train {r['train seconds (Σ time_total_s)']:.1f}s, "
            f"overhead share (search) {r['overhead share, search']:.0%}, "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    slots = runs[0]["slots"]
    print(f"\n{args.sweep} {' '.join(overrides)}; medians of {args.repeats} runs, {slots} slots\n")
    print("| quantity | median | runs |")
    print("|---|---|---|")
    for key in (
        "wall",
        "search wall",
        "train seconds (Σ time_total_s)",
        "epoch seconds (Σ epoch_seconds)",
        "re-evaluation train seconds",
        "epochs",
        "results",
        "best val_acc",
    ):
        each = ", ".join(f"{r[key]:.4g}" for r in runs)
        print(f"| {key} | {med(runs, key):.4g} | {each} |")
    for key in (
        "overhead share, search",
        "overhead share, search (by Σ epoch_seconds)",
        "overhead share, whole sweep",
    ):
        each = ", ".join(f"{r[key]:.1%}" for r in runs)
        print(f"| {key} | {med(runs, key):.1%} | {each} |")
    ideal = med(runs, "train seconds (Σ time_total_s)") / slots
    search = med(runs, "search wall")
    print(
        f"\nsearch wall / (train seconds / slots) = {search / ideal:.2f}x "
        "(1.00x would be no overhead)"
    )
    wall = med(runs, "wall")
    print("\n| phase | median s | share of wall |")
    print("|---|---|---|")
    for key in runs[0]["phases"]:
        v = med(runs, key, "phases")
        print(f"| {key} | {v:.2f} | {v / wall:.1%} |")
    print(f"| total | {wall:.2f} | 100% |")
    print("\n| inside the phases | median s |")
    print("|---|---|")
    for key in runs[0]["details"]:
        print(f"| {key} | {med(runs, key, 'details'):.2f} |")


if __name__ == "__main__":
    main()
