"""Sweeps against a plain in-process Optuna script (issue 7 (c)), same trainable, same budget.

Both sides search one family of a sweep spec (default: ``fixed`` of ``cardio_clr``, 32 trials,
20 epochs) with the same search space (``search_spaces.define_by_run`` works on an Optuna trial
as it is), the same TPE sampler and seed as ``sweeps.tuner.make_sampler``, and the same early
stopping rule: Ray's ASHA in the sweep, Optuna's ``SuccessiveHalvingPruner`` with the same
grace period (first rung) and reduction factor in the script. Both train with
``trainables.train_loop``.

- sweep: ``run_sweep`` as the CLI runs it (its own local Ray, a temporary sqlite MLflow, the
  re-evaluation reduced to ``reeval.seeds=1`` by default, the report), timed from the call to its
  return; its search phase (``SweepResult.search_seconds``) is shown too.
- plain: ``optuna.create_study(direction="maximize", sampler=TPESampler(seed),
  pruner=SuccessiveHalvingPruner(...))``; the objective calls ``train_loop(config, report)``,
  ``report`` calls ``trial.report(val_acc, epoch)`` and raises ``optuna.TrialPruned`` when
  ``trial.should_prune()``. One process, no Ray, no MLflow. ``--n-jobs 1`` trains one trial at a
  time with torch on 2 threads; ``--n-jobs 2`` trains two trials at once in two threads of the
  process with torch on 1 thread each (the GIL is shared). Both run by default and the ratio is
  taken against the faster.

Everything is imported before the clocks start (the sweep's Ray workers still import theirs).
"Best val_acc" is, on both sides, the highest final val_acc of any trial, stopped ones included
(as ``FamilyOutcome.best_val_acc``). Medians over ``--repeats`` rounds; in each round the three
runs go one after the other.

    SWEEPS_DATA_DIR=../shared/data python benchmarks/vs_plain_optuna.py \
        [--family fixed] [--trials 32] [--epochs 20] [--n-jobs 1,2] [--repeats 3] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

import optuna
from rich.console import Console

import trainables.data
from search_spaces import define_by_run
from sweeps.spec import SweepSpec, load_spec
from sweeps.sweep import RunOptions, run_sweep
from sweeps.tuner import make_sampler, stops_early
from trainables import train_loop


def pruner(spec: SweepSpec, family: str) -> optuna.pruners.BasePruner:
    """Successive halving with ASHA's rungs: grace period, then x reduction factor."""
    if not stops_early(spec, family):
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=spec.grace_period(family),
        reduction_factor=int(spec.early_stopping.reduction_factor),
        min_early_stopping_rate=0,
    )


def run_plain(spec: SweepSpec, family: str, n_jobs: int) -> dict[str, float]:
    trainables.data.clear_caches()  # the script pays its one data load, as a user's would
    space = define_by_run(spec.search, family)
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    finals: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        constants = space(trial)  # suggests into trial.params; returns {"family": ...}
        cfg = spec.trial_config({**trial.params, **constants}, seed=spec.sampler.seed)
        cfg["threads"] = threads
        last: dict[str, Any] = {}

        def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
            last.update(metrics)
            trial.report(float(metrics["val_acc"]), int(metrics["epoch"]))
            if trial.should_prune():
                finals.append(float(metrics["val_acc"]))
                raise optuna.TrialPruned()

        train_loop(cfg, report)
        finals.append(float(last["val_acc"]))
        return float(last["val_acc"])

    t0 = time.monotonic()
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(spec, family), pruner=pruner(spec, family)
    )
    study.optimize(objective, n_trials=spec.search.trials_per_family, n_jobs=n_jobs)
    wall = time.monotonic() - t0
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    return {"wall": wall, "best": max(finals), "epochs": epochs, "search": wall}


def run_ray_sweep(spec: SweepSpec, family: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sweeps-vs-optuna-") as d:
        work = Path(d)
        opts = RunOptions(tracking_uri=f"sqlite:///{work / 'mlflow.db'}", storage=str(work))
        old = Path.cwd()
        os.chdir(work)
        try:
            t0 = time.monotonic()
            result = run_sweep(spec, opts, Console(stderr=True, quiet=True))
            wall = time.monotonic() - t0
        finally:
            os.chdir(old)
    out = result.outcomes[family]
    return {
        "wall": wall,
        "best": out.best_val_acc or 0.0,
        "epochs": out.epochs,
        "search": result.search_seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sweep", default="cardio_clr")
    p.add_argument("--family", default="fixed")
    p.add_argument("--trials", type=int, default=32)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--n-jobs", default="1,2", help="the plain script's n_jobs to run, e.g. 1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="k=v")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(
        args.sweep,
        [
            f"search.families=[{args.family}]",
            f"search.trials_per_family={args.trials}",
            f"train.epochs={args.epochs}",
            "reeval.seeds=1",
            *args.extra,
        ],
    )
    jobs = [int(j) for j in args.n_jobs.split(",")]
    labels = ["sweep", *(f"plain n_jobs={j}" for j in jobs)]
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in labels}
    for i in range(args.repeats):
        runs["sweep"].append(run_ray_sweep(spec, args.family))
        for j in jobs:
            runs[f"plain n_jobs={j}"].append(run_plain(spec, args.family, j))
        shown = ", ".join(f"{k} {v[-1]['wall']:.1f}s" for k, v in runs.items())
        print(f"round {i + 1}/{args.repeats}: {shown} (load {os.getloadavg()[0]:.1f})", flush=True)

    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[label])

    print(
        f"\n{args.sweep}, family {args.family}: {args.trials} trials, up to {args.epochs} epochs, "
        f"{spec.early_stopping.name} (first rung {spec.grace_period(args.family)}, factor "
        f"{spec.early_stopping.reduction_factor:g}); medians of {args.repeats} rounds\n"
    )
    print("| run | wall s | search s | runs (wall) | best val_acc | runs (best) | epochs |")
    print("|---|---|---|---|---|---|---|")
    for k in labels:
        walls = ", ".join(f"{r['wall']:.1f}" for r in runs[k])
        bests = ", ".join(f"{r['best']:.4f}" for r in runs[k])
        print(
            f"| {k} | {med(k, 'wall'):.1f} | {med(k, 'search'):.1f} | {walls} | "
            f"{med(k, 'best'):.4f} | {bests} | {med(k, 'epochs'):.0f} |"
        )
    plain = min(labels[1:], key=lambda k: med(k, "wall"))
    ratio = med(plain, "wall") / med("sweep", "wall")
    search_ratio = med(plain, "wall") / med("sweep", "search")
    delta = (med("sweep", "best") - med(plain, "best")) * 100
    print(
        f"\nfaster plain script: {plain}. Sweep speed-up {ratio:.2f}x on the whole run_sweep "
        f"(target >= 1.7x), {search_ratio:.2f}x on its search phase alone; best val_acc "
        f"sweep - plain = {delta:+.2f} pp (target >= 0)"
    )
    if len(jobs) > 1:
        plain_walls = {k: med(k, "wall") for k in labels[1:]}
        print("plain script, n_jobs: " + ", ".join(f"{k} {v:.1f}s" for k, v in plain_walls.items()))


if __name__ == "__main__":
    main()
