"""The whole sweep: checks, Ray, the search over every family, MLflow, then the summary."""

from __future__ import annotations

import gc
import math
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import ray
import yaml
from rich.console import Console
from rich.table import Table

from sweeps.cluster import check_resources, start_ray
from sweeps.custom import load_trainable
from sweeps.errors import SweepInterrupted, SweepsError, redact
from sweeps.lr_find import RangeTestError, apply_range_test, log_range_test, range_test
from sweeps.preflight import check_storage, storage_path
from sweeps.progress import SweepProgress, TaskProgress
from sweeps.reeval import ReevalRun, Reevaluation
from sweeps.report import Report, build_and_log
from sweeps.spec import SweepSpec
from sweeps.tracking import TRIAL_STATUSES, SweepTracker, resolve_uri, ui_hint
from sweeps.tuner import FamilyOutcome, capacity, check_resumable, run_search
from trainables.data import load_splits
from trainables.train_loop import majority_rate

# How often a running family's search seconds are logged (and at its end), for a resume.
SECONDS_EVERY = 15.0


@dataclass(frozen=True)
class RunOptions:
    tracking_uri: str | None = None
    address: str | None = None
    storage: str | None = None
    max_concurrent: int | None = None
    resume: bool = False  # continue the newest unfinished sweep of this spec
    # The caller started the local Ray instance and leaves its shutdown, beside the report, here.
    shutdown_ray: bool = False


@dataclass
class SweepResult:
    parent_run_id: str
    tracking_uri: str
    storage: str
    outcomes: dict[str, FamilyOutcome] = field(default_factory=dict)
    reevals: list[ReevalRun] = field(default_factory=list)
    report: Report | None = None
    search_seconds: float = 0.0  # parent run start to the search's end (no re-evaluation)
    wall_seconds: float = 0.0
    resumed: bool = False  # then both count from this resume, not the parent run's start

    @property
    def lost(self) -> list[str]:
        """The families whose every trial failed: the verdict is without them."""
        return [f for f, o in self.outcomes.items() if o.best_val_acc is None]


@dataclass(frozen=True)
class DataFacts:
    iters_per_epoch: int
    chance_val_acc: float  # the majority-class rate: where a collapsed net sits


def data_facts(spec: SweepSpec) -> DataFacts:
    """Facts about the split; loading it here also fails fast on a bad file, before Ray."""
    splits = load_splits(spec.dataset)
    return DataFacts(
        math.ceil(len(splits.y_train) / spec.train.batch_size), majority_rate(splits.y_val)
    )


def experiment_name(spec: SweepSpec, parent_run_id: str) -> str:
    """Ray's experiment (folder) of the sweep whose MLflow parent run is ``parent_run_id``."""
    return f"{spec.name}-{parent_run_id[:8]}"


def run_sweep(spec: SweepSpec, opts: RunOptions, console: Console | None = None) -> SweepResult:
    console = console or Console(stderr=True)
    uri = resolve_uri(opts.tracking_uri)
    load_trainable(spec.trainable)  # a bad custom trainable fails here, before Ray
    facts = data_facts(spec)

    given = storage_path(opts.storage) if opts.storage else None
    if not opts.resume or given:
        check_storage(given or storage_path(spec.storage), "--storage" if given else "storage")

    def open_tracker() -> tuple[SweepTracker, str, str]:
        tracker = SweepTracker(uri, spec)
        tracker.check()
        if opts.resume:
            return tracker, *tracker.find_resumable(given)
        return tracker, "", given or storage_path(spec.storage)

    # MLflow's client (its store's schema check) and Ray's start take seconds each, mostly
    # waiting on other processes and files: side by side, not one after the other.
    with ThreadPoolExecutor(1, thread_name_prefix="sweeps-mlflow") as pool:
        opening = pool.submit(open_tracker)
        started_ray = False
        try:
            started_ray = start_ray(opts.address)
            tracker, resumed, storage = opening.result()
            check_resources(spec, [n["Resources"] for n in ray.nodes() if n["Alive"]])
            if resumed:  # before it is reopened: a refused resume leaves it as it was
                check_resumable(tracker, resumed, storage, experiment_name(spec, resumed))
        except BaseException:
            if started_ray:
                ray.shutdown()
            raise
    stop_ray = started_ray or opts.shutdown_ray  # ours to shut down when the sweep ends
    t0 = time.monotonic()
    if resumed:
        tracker.reopen(resumed)
        parent = resumed
    else:
        parent = tracker.start({"sweeps.storage": storage})
    tracker.outbox.start_sender()  # so that trials' results never wait for MLflow's writes
    result = SweepResult(parent, uri, storage, resumed=bool(resumed))
    experiment = experiment_name(spec, parent)
    status = "FAILED"
    reeval: Reevaluation | None = None
    stopping: Future[None] | None = None
    gc_was_on = False
    try:
        if spec.search.bounds == "range_test":
            derived = resolved_spec(tracker) if resumed else None
            spec = derived or derive_bounds(spec, tracker, console)
        slots = opts.max_concurrent or capacity(spec, ray.cluster_resources())
        # More parallel trials than TPE's random start would sample blind past it.
        limit = max(1, min(slots, spec.sampler.startup_trials(spec.search.trials_per_family)))
        console.print(
            f"sweep {spec.name}: {len(spec.families)} families x "
            f"{spec.search.trials_per_family} trials, up to {spec.train.epochs} epochs each, "
            f"{slots} at a time (at most {limit} of one family); MLflow parent run {parent}"
            + (" (resumed: finished trials are kept, unfinished ones continue)" if resumed else ""),
            highlight=False,
        )
        budgets = {f: spec.search.trials_per_family for f in spec.families}
        reeval = Reevaluation(spec, tracker, bool(resumed))
        # A resumed sweep's search seconds add to those its earlier runs logged.
        earlier = tracker.client.get_run(parent).data.metrics if resumed else {}
        with SweepProgress(budgets, console) as progress:
            logged_at: dict[str, float] = {}

            def trial_ended(family: str) -> None:
                # Logged as trials end, not only at the search's end: a sweep killed later and
                # resumed would count 0 s for a family whose trials had all ended. At most every
                # SECONDS_EVERY s and at the family's end: each write costs the driver's CPU,
                # which the trials share on a small machine.
                fp = progress.families[family]
                now = time.monotonic()
                if fp.done < fp.budget and now - logged_at.get(family, -1e9) < SECONDS_EVERY:
                    return
                logged_at[family] = now
                key = f"search_seconds/{family}"
                tracker.log_metrics(parent, {key: earlier.get(key, 0.0) + fp.elapsed()})

            result.outcomes = run_search(
                spec,
                tracker=tracker,
                progress=progress,
                storage=storage,
                experiment=experiment,
                slots=slots,
                limit=limit,
                iters_per_epoch=facts.iters_per_epoch,
                resume=bool(resumed),
                on_complete=reeval.start,
                on_trial_end=trial_ended,
            )
        result.search_seconds = time.monotonic() - t0
        log_summary(tracker, result, facts, earlier)
        jobs = len(spec.families) * spec.reeval.top_k * spec.reeval.seeds
        with TaskProgress("re-evaluation", jobs, console) as bar:
            result.reevals = reeval.finish(result.outcomes, bar)
        if stop_ray:
            # The report needs no Ray, and Ray's shutdown is ~1.5 s of waiting for its processes
            # to exit: side by side. An error of it is raised at the end. Python's
            # GC stays off until it is over: a Ray handle freed while Ray's core worker is torn
            # down ends the whole process, and cyclic garbage still holds some of Tune's.
            gc_was_on = gc.isenabled()
            gc.disable()
            stopper = ThreadPoolExecutor(1, thread_name_prefix="sweeps-ray-shutdown")
            stopping = stopper.submit(ray.shutdown)
            stopper.shutdown(wait=False)  # its one thread ends with Ray's shutdown
        console.print("building the report from MLflow ...", highlight=False)
        result.report = build_and_log(tracker.client, parent)
        result.wall_seconds = time.monotonic() - t0
        # This leg's: a leg that was killed never logged its own, so there is no sum to make.
        tracker.log_metrics(parent, {"wall_seconds": result.wall_seconds})
        # A failed re-evaluation run leaves the sweep to finish: --resume redoes only those. A
        # family whose every trial failed leaves the verdict without it.
        status = "FAILED" if result.lost or any(r.error for r in result.reevals) else "FINISHED"
    except KeyboardInterrupt as exc:
        status = "KILLED"
        raise SweepInterrupted(parent) from exc
    finally:
        if reeval is not None:
            reeval.cancel()
        tracker.finish(status)
        try:
            if stopping is not None:
                stopping.result()
            elif stop_ray:
                ray.shutdown()
        finally:
            if gc_was_on:
                gc.enable()  # Ray is down: its handles are safe to free now
    return result


def resolved_spec(tracker: SweepTracker) -> SweepSpec | None:
    """The range-tested spec an interrupted run logged, so a resume keeps its ranges."""
    with tempfile.TemporaryDirectory() as d:
        try:
            path = tracker.client.download_artifacts(tracker.parent_id, "spec_resolved.yaml", d)
        except Exception:  # MLflow raises its own types for a missing artifact
            return None
        return SweepSpec.model_validate(yaml.safe_load(Path(path).read_text()))


def derive_bounds(spec: SweepSpec, tracker: SweepTracker, console: Console) -> SweepSpec:
    """Smith's LR range test sets the base_lr and max_lr ranges before any sampling."""
    console.print("LR range test (search.bounds: range_test) ...", highlight=False)
    try:
        test = range_test(spec)
        derived = apply_range_test(spec, test.suggestion)
    except RangeTestError as exc:  # its advice names lr_find's options, which a spec lacks
        message = (
            f"search.bounds: the LR range test must suggest the rate ranges, but {exc.rule}; "
            f"see the curve with `python -m sweeps.lr_find {spec.name}` (its --min-lr, "
            "--max-lr and --steps), or set search.bounds=spec with your own search.base_lr "
            "and search.max_lr"
        )
        tracker.set_tags(tracker.parent_id, {"sweeps.error": message})
        raise SweepsError(message) from None
    log_range_test(tracker, test, spec, tracker.parent_id)
    ranges = {"base_lr": derived.search.base_lr, "max_lr": derived.search.max_lr}
    shown = {
        f"range_test.{name}.{end}": getattr(rng, end)
        for name, rng in ranges.items()
        if rng is not None
        for end in ("low", "high")
    }
    tracker.log_params(tracker.parent_id, shown)
    tracker.client.log_text(tracker.parent_id, derived.to_yaml(), "spec_resolved.yaml")
    console.print(
        "range test: "
        + ", ".join(f"{k.removeprefix('range_test.')}={v:.3g}" for k, v in shown.items()),
        highlight=False,
    )
    return derived


def log_summary(
    tracker: SweepTracker,
    result: SweepResult,
    facts: DataFacts,
    earlier: Mapping[str, float] | None = None,
) -> None:
    """The parent run's per-family metrics. ``earlier``: the parent's metrics before a resume;
    wall seconds are added to theirs (the rest is counted over every trial again)."""
    before = earlier or {}
    counts: Counter[str] = Counter()
    metrics: dict[str, float] = {
        "search_wall_seconds": before.get("search_wall_seconds", 0.0) + result.search_seconds,
        "data/chance_val_acc": facts.chance_val_acc,
    }
    for fam, out in result.outcomes.items():
        counts.update(out.statuses.values())
        if out.best_val_acc is not None:
            metrics[f"best_val_acc/{fam}"] = out.best_val_acc
        metrics[f"search_epochs/{fam}"] = out.epochs
        metrics[f"search_seconds/{fam}"] = before.get(f"search_seconds/{fam}", 0.0) + (
            out.wall_seconds
        )
        metrics[f"train_seconds/{fam}"] = out.train_seconds
    for status in TRIAL_STATUSES:
        metrics[f"trials/{status}"] = counts.get(status, 0)
    tracker.log_metrics(tracker.parent_id, metrics)


def print_summary(result: SweepResult, console: Console) -> None:
    table = Table(title="best trial per family", title_justify="left")
    for col in ("family", "best val_acc", *TRIAL_STATUSES, "epochs", "wall s"):
        table.add_column(col, justify="left" if col == "family" else "right")
    for fam, out in result.outcomes.items():
        c = Counter(out.statuses.values())
        best = f"{out.best_val_acc:.4f}" if out.best_val_acc is not None else "-"
        table.add_row(
            fam,
            best,
            *(str(c.get(s, 0)) for s in TRIAL_STATUSES),
            str(out.epochs),
            f"{out.wall_seconds:.0f}",
        )
    console.print(table)
    console.print(
        f"results: MLflow {redact(result.tracking_uri)} (parent run {result.parent_run_id}); "
        f"Ray trial results under {result.storage}",
        highlight=False,
    )
    if result.report is not None:
        console.print(result.report.table(), highlight=False, markup=False)
        console.print(f"\nverdict: {result.report.headline}", highlight=False, markup=False)
        for sentence in result.report.sentences:
            console.print(f"  - {sentence}", highlight=False, markup=False)
        for line in result.report.failures():
            console.print(f"failed run: {line}", highlight=False, markup=False)
        console.print(
            f"report: artifacts report/report.md and report/report.html of run "
            f"{result.parent_run_id}",
            highlight=False,
        )
    console.print(f"see them: {ui_hint(result.tracking_uri)}", highlight=False)
    console.print(
        f"wall time: {result.wall_seconds:.0f} s since the parent run "
        f"{'was resumed' if result.resumed else 'started'} (Ray's and MLflow's start before it "
        "not counted)",
        highlight=False,
    )
