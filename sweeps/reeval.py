"""Re-evaluation: retrain each family's best configs from scratch with N seeds, score on test.

Tuning never sees the test split; each seed changes both the initialisation and the shuffling.
The runs are Ray tasks, so they spread over the cluster like the trials did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import ray

from search_spaces import FAMILIES
from sweeps.outbox import now_ms
from sweeps.progress import TaskProgress
from sweeps.retrain import retrain
from sweeps.spec import SweepSpec
from sweeps.tracking import SweepTracker
from sweeps.tuner import FamilyOutcome, error_line

# Re-evaluation seeds start here, apart from the tuning seed.
SEED_BASE = 1000


@dataclass
class ReevalRun:
    family: str
    rank: int
    seed: int
    history: list[dict[str, Any]] = field(default_factory=list)
    test_acc: float = float("nan")
    seconds: float = 0.0
    error: str = ""  # why the run failed: its exception line

    @property
    def status(self) -> str:
        return str(self.history[-1]["status"]) if self.history else "failed"


def plan(spec: SweepSpec, family: str, outcome: FamilyOutcome) -> list[tuple[ReevalRun, dict]]:
    """(run, full train_loop config) for each of ``family``'s top-k configs x seed."""
    jobs = []
    for rank, params in enumerate(outcome.top(spec.reeval.top_k), start=1):
        for i in range(spec.reeval.seeds):
            seed = SEED_BASE + i
            cfg = spec.trial_config(params, seed=seed)
            # Only the final state is needed (it scores the test split): no mid-run saves.
            cfg["train"] = {**cfg["train"], "checkpoint_every": spec.train.epochs + 1}
            jobs.append((ReevalRun(family, rank, seed), cfg))
    return jobs


class Reevaluation:
    """The plan's runs as Ray tasks, each logged as a nested MLflow run (``sweeps.role=reeval``)
    when it returns. A family's runs may ``start`` while the search still runs other families'
    last trials: Ray gives them the slots that would otherwise idle until the search ends."""

    def __init__(
        self,
        spec: SweepSpec,
        tracker: SweepTracker,
        resume: bool = False,
    ) -> None:
        self.spec, self.tracker = spec, tracker
        self.remote = ray.remote(retrain).options(
            num_cpus=spec.resources.cpu,
            num_gpus=spec.resources.gpu,
            max_retries=spec.failure.max_retries,  # Ray retries a task on a lost node only
        )
        # A resumed sweep keeps the re-evaluation runs its crashed driver already logged.
        self.logged = {
            (
                r.data.tags["sweeps.family"],
                int(r.data.tags["sweeps.rank"]),
                int(r.data.tags["sweeps.seed"]),
            )
            for r in (tracker.children("reeval") if resume else [])
            if r.info.status == "FINISHED"
        }
        self.started: set[str] = set()
        self.pending: dict[ray.ObjectRef, tuple[ReevalRun, dict[str, Any]]] = {}

    def start(self, family: str, outcome: FamilyOutcome) -> None:
        """Submit ``family``'s runs (once); its search must be over."""
        if family in self.started:
            return
        self.started.add(family)
        for run, cfg in plan(self.spec, family, outcome):
            if (run.family, run.rank, run.seed) not in self.logged:
                ref = self.remote.remote(cfg, self.spec.trainable)
                self.pending[ref] = (run, cfg)

    def finish(self, outcomes: dict[str, FamilyOutcome], progress: TaskProgress) -> list[ReevalRun]:
        """Start the families not started yet, wait for every run and log it; the runs in
        family, rank and seed order."""
        for family, outcome in outcomes.items():
            self.start(family, outcome)
        progress.skip(len(self.logged))
        done: list[ReevalRun] = []
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1)
            run, cfg = self.pending.pop(ready[0])
            try:
                run.history, run.test_acc, run.seconds = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # one run failed: log it, keep the others
                run.error = error_line(str(exc))
            _log(self.tracker, run, cfg)
            done.append(run)
            what = f"failed: {run.error}" if run.error else f"test_acc {run.test_acc:.4f}"
            progress.advance(
                f"{run.family} #{run.rank} seed {run.seed}: {what} ({run.status}, "
                f"{run.seconds:.1f}s)"
            )
        order = {f: i for i, f in enumerate(outcomes)}
        return sorted(done, key=lambda r: (order[r.family], r.rank, r.seed))

    def cancel(self) -> None:
        """Stop the runs still queued or running (the sweep failed or was interrupted)."""
        if ray.is_initialized():
            for ref in self.pending:
                ray.cancel(ref, force=True)
        self.pending.clear()


def _log(tracker: SweepTracker, run: ReevalRun, cfg: dict[str, Any]) -> None:
    params = {k: cfg[k] for k in FAMILIES[run.family].params if cfg.get(k) is not None}
    run_id = tracker.start_child(
        f"reeval-{run.family}-{run.rank}-s{run.seed}",
        "reeval",
        {
            "sweeps.family": run.family,
            "sweeps.rank": str(run.rank),
            "sweeps.seed": str(run.seed),
            "sweeps.config": json.dumps(params),  # the rates, should their params' write be lost
        },
        {"family": run.family, "seed": run.seed, "epochs": cfg["train"]["epochs"], **params},
        started_ms=now_ms() - round(run.seconds * 1000),  # it is logged once it has ended
    )
    for row in run.history:
        tracker.log_epoch(run_id, row)
    if run.error:
        tracker.set_tags(run_id, {"sweeps.error": run.error})
    tracker.end_child(
        run_id,
        run.status,
        {"test_acc": run.test_acc, "train_seconds": run.seconds, "epochs_used": len(run.history)},
    )
