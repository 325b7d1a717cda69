"""Tuner pieces without a Ray cluster: the searcher and scheduler over families, Optuna states,
statuses, capacity, and the resumed driver's replay of epochs MLflow lacks."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from rich.console import Console

from search_spaces import define_by_run
from sweeps.driver import DRIVER_TAG, _proc_stat, _process_start, live_driver
from sweeps.errors import SweepsError
from sweeps.progress import SweepProgress
from sweeps.report import main as report_main
from sweeps.report import run_params
from sweeps.spec import load_spec
from sweeps.storage import storage_error, storage_errors, storage_failures, storage_trouble
from sweeps.tracking import SweepTracker
from sweeps.trainable import EARLIER, HISTORY_FILE
from sweeps.tuner import (
    _LIVE,
    FamilyOutcome,
    FamilyRuns,
    FamilyScheduler,
    FamilySearch,
    PrunedAwareOptunaSearch,
    TrialLogger,
    capacity,
    ctrl_c_ends_the_sweep,
    make_scheduler,
    restore,
    trial_status,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def searcher() -> PrunedAwareOptunaSearch:
    spec = load_spec("digits_lr")
    return PrunedAwareOptunaSearch(
        space=define_by_run(spec.search, "triangular"),
        metric="val_acc",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )


def test_asha_stopped_trials_reach_optuna_as_pruned() -> None:
    s = searcher()
    for tid in ("stopped", "completed", "diverged", "errored"):
        assert s.suggest(tid)["family"] == "triangular"
    s.on_trial_result("stopped", {"val_acc": 0.51, "epoch": 1})
    # Epochs ride along with the next result the trainable sends (where ASHA decides); Tune
    # hands the result that stops a trial to on_trial_complete alone.
    s.on_trial_result(
        "stopped", {"val_acc": 0.53, "epoch": 3, EARLIER: [{"val_acc": 0.52, "epoch": 2}]}
    )
    s.on_trial_complete(
        "stopped",
        {
            "val_acc": 0.55,
            "status": "running",
            "epoch": 5,
            EARLIER: [{"val_acc": 0.54, "epoch": 4}],
        },
    )
    s.on_trial_complete("completed", {"val_acc": 0.91, "status": "completed", "epoch": 30})
    s.on_trial_complete("diverged", {"val_acc": 0.0, "status": "diverged", "epoch": 2})
    s.on_trial_complete("errored", None, error=True)
    assert s.study is not None
    states = [t.state for t in s.study.trials]
    assert states == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    pruned, done, diverged = s.study.trials[:3]
    # Optuna keeps a pruned trial's last intermediate value; TPE ranks it as pruned at step 4,
    # the epoch before ASHA's rung, as when every epoch was a result of its own.
    assert pruned.intermediate_values == {1: 0.51, 2: 0.52, 3: 0.53, 4: 0.54}
    assert done.value == 0.91
    assert diverged.value == 0.0  # the finite worst value teaches TPE that the rate failed


def test_each_epoch_reaches_optuna_once(recwarn: pytest.WarningsRecorder) -> None:
    """Tune may hand a trial's last result to on_trial_result and then to on_trial_complete, and a
    retried trial repeats the epochs after its checkpoint: Optuna would warn for each repeated
    step (on the CLI's stderr), so each epoch is reported once, with its first value."""
    s = searcher()
    s.suggest("t")
    last = {"val_acc": 0.6, "status": "completed", "epoch": 4, EARLIER: [
        {"val_acc": 0.52, "epoch": 2}, {"val_acc": 0.55, "epoch": 3},
    ]}  # fmt: skip
    s.on_trial_result("t", {"val_acc": 0.5, "epoch": 1})
    s.on_trial_result("t", {"val_acc": 0.49, "epoch": 1})  # the retry's epoch 1
    s.on_trial_result("t", last)
    s.on_trial_complete("t", last)
    assert not [w for w in recwarn if "already reported" in str(w.message)]
    assert s.study is not None
    (trial,) = s.study.trials
    assert trial.state == TrialState.COMPLETE and trial.value == 0.6
    assert trial.intermediate_values == {1: 0.5, 2: 0.52, 3: 0.55, 4: 0.6}


def test_searcher_pickles_for_tuner_restore() -> None:
    s = searcher()
    s.suggest("a")
    again = pickle.loads(pickle.dumps(s))
    assert again.suggest("b")["family"] == "triangular"


def test_searcher_saved_before_the_epoch_dedup_still_resumes() -> None:
    """A sweep stopped under an older sweeps pickled its searchers without ``_told``; --resume
    with this one must go on reporting, not fail on the missing attribute."""
    s = searcher()
    s.suggest("a")
    del s.__dict__["_told"]
    old = pickle.dumps(s)
    again = pickle.loads(old)
    again.on_trial_result("a", {"val_acc": 0.5, "epoch": 1})
    again.on_trial_result("a", {"val_acc": 0.4, "epoch": 1})
    assert again.study is not None
    assert again.study.trials[0].intermediate_values == {1: 0.5}


@pytest.mark.parametrize(
    ("last", "error", "want"),
    [
        ({"status": "running"}, False, "stopped"),
        ({"status": "completed"}, False, "completed"),
        ({"status": "diverged"}, False, "diverged"),
        ({"status": "collapsed"}, False, "collapsed"),
        ({"status": "running"}, True, "failed"),
        (None, False, "stopped"),
    ],
)
def test_trial_status(last: dict[str, str] | None, error: bool, want: str) -> None:
    assert trial_status(last, error) == want


def rungs(s: object) -> list[int]:
    assert isinstance(s, ASHAScheduler)
    return sorted(milestone for b in s._brackets for milestone, _ in b._rungs)


def test_scheduler_per_family_waits_for_the_first_cycle() -> None:
    spec = load_spec("cardio_clr")  # 50 epochs, grace 5, reduction factor 3
    assert rungs(make_scheduler(spec, "fixed")) == [5, 15, 45]
    assert rungs(make_scheduler(spec, "triangular")) == [20]  # 2 x the largest step size (10)
    assert rungs(make_scheduler(spec, "sgdr")) == [10, 30]  # T_0 is the whole first period
    # 1cycle's single cycle is the whole run: judged mid-warm-up it would always lose.
    assert isinstance(make_scheduler(spec, "one_cycle"), FIFOScheduler)
    none = load_spec("cardio_clr", ["early_stopping.name=none"])
    assert isinstance(make_scheduler(none, "fixed"), FIFOScheduler)


def test_capacity_from_resources() -> None:
    spec = load_spec("cardio_clr")
    assert capacity(spec, {"CPU": 2.0}) == 2
    assert capacity(spec, {"CPU": 0.5}) == 1
    gpu = load_spec("cardio_clr", ["resources.gpu=0.25"])
    assert capacity(gpu, {"CPU": 16.0, "GPU": 1.0}) == 4


def test_family_search_offers_families_in_order_within_budget_and_limit(tmp_path: Path) -> None:
    spec = load_spec(
        "digits_lr", ["search.trials_per_family=3", "search.families=[fixed,triangular,sgdr]"]
    )
    s = FamilySearch(spec, limit=2)
    got = {tid: s.suggest(tid) for tid in ("t1", "t2", "t3")}
    # fixed takes its limit of 2; triangular gets the slot fixed cannot use.
    assert [c["family"] if c else None for c in got.values()] == ["fixed", "fixed", "triangular"]
    s.on_trial_result("t1", {"val_acc": 0.5, "epoch": 1})
    s.on_trial_complete("t1", {"val_acc": 0.9, "status": "completed", "epoch": 30})
    assert s.suggest("t4")["family"] == "fixed"  # fixed's third and last trial
    assert s.suggest("t5")["family"] == "triangular"
    assert s.suggest("t6")["family"] == "sgdr"  # fixed handed out, triangular at its limit
    assert s.suggested == {"fixed": 3, "triangular": 2, "sgdr": 1}
    # Results reach their own family's study only.
    fixed_study = s.studies["fixed"].study
    assert fixed_study is not None
    assert [t.state for t in fixed_study.trials] == [TrialState.COMPLETE] + [TrialState.RUNNING] * 2
    assert s.studies["triangular"].study is not None
    assert all(t.state == TrialState.RUNNING for t in s.studies["triangular"].study.trials)

    # Tune saves the searcher with its experiment; a restored one goes on where it stopped.
    s.save(str(tmp_path / "searcher.pkl"))
    again = FamilySearch(spec, limit=2)
    again.restore(str(tmp_path / "searcher.pkl"))
    assert again.suggested == s.suggested and again.family_of == s.family_of
    for tid in ("t2", "t3", "t4", "t5"):
        again.on_trial_complete(tid, {"val_acc": 0.8, "status": "completed", "epoch": 30})
    left = [again.suggest(f"r{i}") for i in range(3)]
    assert [c["family"] if c else None for c in left] == ["triangular", "sgdr", None]  # t6 live
    again.on_trial_complete("t6", {"val_acc": 0.8, "status": "completed", "epoch": 30})
    assert again.suggest("r3")["family"] == "sgdr"
    assert again.suggest("r4") is None  # every budget handed out
    assert again.suggested == dict.fromkeys(spec.families, 3)


def test_family_scheduler_judges_each_family_on_its_own_rungs() -> None:
    spec = load_spec("cardio_clr")  # fixed: rungs 5, 15, 45; triangular: 20
    sched = FamilyScheduler(spec)
    assert sched.set_search_properties(None, None)
    good, bad = (SimpleNamespace(trial_id=t, config={"family": "fixed"}) for t in ("a", "b"))
    cyclic = SimpleNamespace(trial_id="c", config={"family": "triangular"})
    for t in (good, bad, cyclic):
        sched.on_trial_add(None, t)  # type: ignore[arg-type]

    def at5(t: SimpleNamespace, acc: float) -> str:
        return sched.on_trial_result(None, t, {"epoch": 5, "val_acc": acc})  # type: ignore[arg-type]

    assert at5(good, 0.73) == TrialScheduler.CONTINUE
    assert at5(bad, 0.60) == TrialScheduler.STOP  # below fixed's rung at epoch 5
    # Worse still, but triangular has no rung before its first full cycle (epoch 20).
    assert at5(cyclic, 0.50) == TrialScheduler.CONTINUE


@pytest.fixture()
def fixed_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: Callable[[Path], str]
) -> SweepTracker:
    """The started tracker of a digits_lr sweep of the fixed family alone, in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    spec = load_spec("digits_lr", ["search.families=[fixed]"])
    tracker = SweepTracker(mlflow_store(tmp_path / "mlflow.db"), spec)
    tracker.start()
    return tracker


def test_a_resumed_driver_logs_what_the_checkpoint_holds_and_mlflow_lacks(
    tmp_path: Path, fixed_sweep: SweepTracker
) -> None:
    tracker = fixed_sweep
    tags = {"sweeps.family": "fixed", "sweeps.trial_id": "t1"}
    run = tracker.start_child("fixed-001", "trial", tags, {"base_lr": 0.1})
    rows = [
        {"epoch": n, "val_acc": 0.5 + n / 100, "train_loss": 1.0 / n, "status": "running"}
        for n in range(1, 7)
    ]
    for row in rows[:2]:  # what reached MLflow before the driver was killed
        tracker.log_epoch(run, row)
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / HISTORY_FILE).write_text(json.dumps(rows[:4]))  # the trial's checkpoint at epoch 4

    progress = SweepProgress({"fixed": 1}, Console(quiet=True))
    live = FamilyRuns(tracker, "fixed", 10, progress, FamilyOutcome("fixed"))
    live.adopt({"t1"})
    assert live.logged == {run: 2}
    live.replay(run, tune.Checkpoint.from_directory(str(ckpt)))
    live.replay(run, tune.Checkpoint.from_directory(str(ckpt)))  # a second restore: no doubles
    assert tracker.outbox.flush()
    hist = MlflowClient(tracker.uri).get_metric_history(run, "val_acc")
    assert sorted((m.step, m.value) for m in hist) == [(n, 0.5 + n / 100) for n in range(1, 5)]
    assert live.logged == {run: 4}  # epochs 5 and 6 come when the restored trial reports them


def test_a_trial_that_ended_after_rays_last_save_is_discarded_not_counted_twice(
    fixed_sweep: SweepTracker,
) -> None:
    # Ray's restored experiment lacks t3, which finished after Ray's last save: its searcher
    # samples that trial again, so the run MLflow holds for it must not count as well.
    tracker = fixed_sweep
    ids = {}
    for n, ended in ((1, True), (2, False), (3, True)):
        tags = {"sweeps.family": "fixed", "sweeps.trial_id": f"t{n}"}
        ids[n] = tracker.start_child(f"fixed-{n:03d}", "trial", tags, {"base_lr": 0.1})
        tracker.log_epoch(ids[n], {"epoch": 1, "val_acc": 0.6, "status": "running"})
        if ended:
            tracker.end_child(ids[n], "completed", {"epochs_used": 1, "final_val_acc": 0.6})
    assert tracker.outbox.flush()

    progress = SweepProgress({"fixed": 4}, Console(quiet=True))
    live = FamilyRuns(tracker, "fixed", 10, progress, FamilyOutcome("fixed"))
    live.adopt({"t1", "t2"})
    assert sorted(live.runs) == ["t1", "t2"] and live.ended == {"t1"}
    assert live.outcome.statuses == {"fixed-001": "completed"}
    assert progress.families["fixed"].done == 1
    client = MlflowClient(tracker.uri)
    gone = client.get_run(ids[3])
    assert gone.info.lifecycle_stage == "deleted" and gone.info.status == "KILLED"
    assert "not in the restored Ray experiment" in gone.data.tags["sweeps.discarded"]
    # The trial sampled again is named after the highest number, never reusing a kept name.
    trial = SimpleNamespace(trial_id="t9", config={"family": "fixed", "base_lr": 0.1},
                            checkpoint=None)  # fmt: skip
    _LIVE["k"] = {"fixed": live}
    try:
        TrialLogger("k").on_trial_start(0, [], trial)  # type: ignore[arg-type]
    finally:
        _LIVE.pop("k")
    assert live.runs["t9"][0] == "fixed-004"


def test_a_run_whose_params_the_killed_driver_never_sent_gets_them_on_resume(
    fixed_sweep: SweepTracker,
) -> None:
    # The run's creation reached MLflow, its params' write did not: the report then failed on
    # the missing base_lr, for good.
    tracker = fixed_sweep
    config = {"family": "fixed", "base_lr": 0.02, "seed": 0}
    tags = {"sweeps.family": "fixed", "sweeps.trial_id": "t1", "sweeps.config": json.dumps(config)}
    run_id = tracker.start_child("fixed-001", "trial", tags, {})
    assert tracker.outbox.flush()
    client = MlflowClient(tracker.uri)
    assert client.get_run(run_id).data.params == {}
    # A store an older version left so: the report takes the rate from the run's config tag.
    assert run_params(client.get_run(run_id)) == {"base_lr": "0.02"}
    live = FamilyRuns(tracker, "fixed", 10, SweepProgress({"fixed": 1}, Console(quiet=True)),
                      FamilyOutcome("fixed"))  # fmt: skip
    live.adopt({"t1"})
    assert tracker.outbox.flush()
    assert client.get_run(run_id).data.params == {
        "family": "fixed", "base_lr": "0.02", "iters_per_epoch": "10"
    }  # fmt: skip
    live.adopt({"t1"})  # a second resume finds them all and logs nothing
    assert tracker.outbox.flush()


def test_a_report_of_a_killed_sweep_whose_reevaluation_runs_lost_their_params(
    tmp_path: Path, fixed_sweep: SweepTracker, capsys: pytest.CaptureFixture[str]
) -> None:
    # The report of an unfinished sweep ended in a ValidationError: the best config's
    # re-evaluation run had no base_lr to draw its LR curve from.
    tracker = fixed_sweep
    config = json.dumps({"family": "fixed", "base_lr": 0.02})
    tags = {"sweeps.family": "fixed", "sweeps.trial_id": "t1", "sweeps.config": config}
    trial = tracker.start_child("fixed-001", "trial", tags, {})
    tracker.set_tags(trial, {"sweeps.status": "completed"})
    tracker.end_child(trial, "completed", {"final_val_acc": 0.9, "epochs_used": 3})
    for seed, kept in ((0, False), (1, True)):  # an older version's run, then this one's
        extra = {"sweeps.config": json.dumps({"base_lr": 0.02})} if kept else {}
        reeval = tracker.start_child(
            f"reeval-fixed-1-s{seed}", "reeval",
            {"sweeps.family": "fixed", "sweeps.rank": "1", "sweeps.seed": str(seed), **extra},
            {},
        )  # fmt: skip
        tracker.set_tags(reeval, {"sweeps.status": "completed"})
        tracker.end_child(reeval, "completed", {"test_acc": 0.9 + seed / 100})
    tracker.set_tags(tracker.parent_id, {DRIVER_TAG: "elsewhere 1 1"})  # a driver that is gone
    assert tracker.outbox.flush()
    assert report_main(["digits_lr", "--tracking-uri", tracker.uri, "--out", "r"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # Its driver ran on another machine, where it may still run: the warning says to wait.
    assert "(if its driver on elsewhere still runs, wait for it; else --resume finishes it)" in err
    client = MlflowClient(tracker.uri)
    runs = {r.info.run_name: r for r in tracker.children("reeval")}
    assert run_params(client.get_run(runs["reeval-fixed-1-s1"].info.run_id)) == {"base_lr": "0.02"}
    assert (tmp_path / "r" / "lr_curves.png").stat().st_size > 0  # drawn from the kept run


def test_resume_refuses_a_sweep_whose_driver_still_runs_it(
    tmp_path: Path, fixed_sweep: SweepTracker, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both drivers ran the one sweep: twice the trials and re-evaluations, a mixed-up report.
    tracker = fixed_sweep
    driver = subprocess.Popen(["sleep", "60"])
    try:
        tag = f"{socket.gethostname()} {driver.pid} {_process_start(driver.pid)}".strip()
        tracker.set_tags(tracker.parent_id, {DRIVER_TAG: tag})
        assert tracker.outbox.flush()
        again = SweepTracker(tracker.uri, tracker.spec)
        rule = rf"^--resume: sweep run {tracker.parent_id} must have stopped, but its driver"
        with pytest.raises(SweepsError, match=rf"{rule} \(process {driver.pid} on this"):
            again.find_resumable(str(tmp_path))
        # Nor is a report made of it: the running trials would count as failed.
        assert report_main(["digits_lr", "--tracking-uri", tracker.uri]) == 2
        assert "the sweep must have ended to be reported on" in capsys.readouterr().err
        # Killed but not yet reaped by its parent (a zombie): it runs nothing.
        driver.kill()
        deadline = time.monotonic() + 10
        while _proc_stat(driver.pid)[:1] != ["Z"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live_driver(tag) is None
    finally:
        driver.kill()
        driver.wait()
    assert again.find_resumable(str(tmp_path)) == (tracker.parent_id, str(tmp_path))
    # Tags no driver wrote name no process, and raise nothing.
    here = socket.gethostname()
    for odd in (f"{here} 99999999999999999999 1", f"{here} 0", f"{here} -5 1", f"{here}", ""):
        assert live_driver(odd) is None, odd


def test_a_sweep_starts_when_another_creates_its_experiment_first(
    tmp_path: Path, mlflow_store: Callable[[Path], str]
) -> None:
    # Two sweeps starting on a new experiment: the one that lost the race to create it raised
    # MLflow's "already exists" with a traceback.
    uri = mlflow_store(tmp_path / "mlflow.db")
    tracker = SweepTracker(uri, load_spec("digits_lr"))
    theirs = MlflowClient(uri).create_experiment("digits_lr")  # created after our lookup
    looked_up = [False]
    lookup = tracker.client.get_experiment_by_name

    def stale_first(name: str) -> Any:
        if not looked_up[0]:
            looked_up[0] = True
            return None
        return lookup(name)

    tracker.client.get_experiment_by_name = stale_first  # type: ignore[method-assign]
    tracker.start()
    assert tracker.experiment_id == theirs


def test_a_resume_of_a_torn_ray_state_is_one_line(tmp_path: Path) -> None:
    # A full disk tore Ray's experiment state mid-write: --resume gave a JSONDecodeError
    # traceback.
    torn = '{"trial_data": [["{\\"trial_id\\": \\"ab'
    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_text(torn)
    with pytest.raises(SweepsError, match=r"^--resume: Ray's saved state of the search in .* must "
                       r"be readable, but JSONDecodeError: .*start the sweep afresh"):  # fmt: skip
        restore(str(tmp_path), lambda config: None)
    # A state that cannot be read but is not torn: the search is not thrown away.
    other = tmp_path / "other"
    (other / "experiment_state-2026-01-01_00-00-00.json").mkdir(parents=True)
    with pytest.raises(SweepsError, match=r"must be readable, but IsADirectoryError: .*Is a "
                       r"directory.*; make it readable, then --resume again$"):  # fmt: skip
        restore(str(other), lambda config: None)
    # The disk filled after tuner.pkl, before Ray's first save: no state at all.
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "tuner.pkl").write_bytes(b"")
    with pytest.raises(SweepsError, match=r"must be readable, but no experiment_state-\*\.json was "
                       r"saved; .*start the sweep afresh \(without --resume\)$"):  # fmt: skip
        restore(str(empty), lambda config: None)


def test_families_are_complete_once_every_trial_has_started() -> None:
    p = SweepProgress({"a": 2, "b": 2}, Console(quiet=True))
    p.trial_started("a")
    p.trial_started("a")
    p.trial_ended("a", "a-001", "completed", 5, 0.7)
    p.trial_ended("a", "a-002", "stopped", 2, 0.6)
    p.trial_started("b")
    assert p.complete_families() == []  # b's second trial has not started: a slot may wait
    p.trial_started("b")
    assert p.complete_families() == ["a"]
    p.trial_retried("b", "b-001", "boom")
    assert p.complete_families() == []  # the retry waits for a slot again
    p.trial_started("b")
    p.trial_ended("b", "b-001", "completed", 5, 0.7)
    assert p.complete_families() == ["a"]
    p.trial_ended("b", "b-002", "failed", 1, 0.0)
    assert p.complete_families() == ["a", "b"]


def _tune_like_handler(caught: list[bool]) -> None:
    """What Tune's fit() does with SIGINT: catch the first, hand SIGINT back, return normally."""
    original = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        caught.append(True)
        signal.signal(signal.SIGINT, original)

    signal.signal(signal.SIGINT, handler)


def test_a_ctrl_c_that_tune_caught_ends_the_sweep_after_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    before = signal.getsignal(signal.SIGINT)
    caught: list[bool] = []
    with pytest.raises(KeyboardInterrupt), ctrl_c_ends_the_sweep():
        _tune_like_handler(caught)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs between two bytecodes of the main thread
        assert caught == [True]  # Tune's caught it: fit() "returns"
    assert signal.getsignal(signal.SIGINT) is before


def test_a_search_without_ctrl_c_ends_normally_and_takes_tunes_handler_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    before = signal.getsignal(signal.SIGINT)
    with ctrl_c_ends_the_sweep():
        _tune_like_handler([])
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_raises_at_once_where_tune_leaves_sigint_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", "1")
    with pytest.raises(KeyboardInterrupt), ctrl_c_ends_the_sweep():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        raise AssertionError("Ctrl-C did not interrupt")
    with ctrl_c_ends_the_sweep():
        pass  # and no interrupt, no raise


def test_a_familys_best_is_its_best_final_val_acc_as_in_the_summary() -> None:
    p = SweepProgress({"a": 3}, Console(quiet=True))
    for _ in range(3):
        p.trial_started("a")
    p.trial_result("a")  # mid-trial results (here 0.8 at some epoch) do not move it
    p.trial_ended("a", "a-001", "completed", 5, 0.6)
    p.trial_ended("a", "a-002", "stopped", 2, 0.7)
    p.trial_ended("a", "a-003", "failed", 1, 0.9)
    assert p.families["a"].best == 0.7


def test_a_resume_that_finds_nothing_says_what_the_store_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: Callable[[Path], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = mlflow_store(tmp_path / "mlflow.db")
    spec = load_spec("digits_lr")
    done = SweepTracker(uri, spec)
    done_id = done.start({"sweeps.storage": str(tmp_path)})
    done.finish("FINISHED")
    with pytest.raises(SweepsError) as info:
        SweepTracker(uri, spec).find_resumable(None)
    assert str(info.value).endswith(
        f"but there is none (its newest sweep of this spec, run {done_id}, finished)"
    )
    # Interrupted with other --set options: named, rather than looking lost.
    other = SweepTracker(uri, load_spec("digits_lr", ["train.epochs=7"]))
    other_id = other.start({"sweeps.storage": str(tmp_path)})
    other.finish("KILLED")
    with pytest.raises(SweepsError) as info:
        SweepTracker(uri, spec).find_resumable(None)
    assert f"; the newest unfinished one, run {other_id}, has another spec (hash " in str(
        info.value
    )
    assert SweepTracker(uri, other.spec).find_resumable(None)[0] == other_id


def test_a_storage_error_names_a_full_or_read_only_storage_and_keeps_any_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = str(tmp_path / "not" / "yet")  # judged by the nearest folder that exists
    # Ray's own OSError (pyarrow's) carries the number only in its text, under the EOFError.
    try:
        try:
            raise OSError("[Errno 28] Error writing bytes to file")
        except OSError:
            raise EOFError("Ran out of input")  # noqa: B904 - as Ray raises it
    except EOFError as exc:
        full = exc
    experiment = tmp_path / "exp"
    experiment.mkdir()
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    with pytest.raises(SweepsError) as info, storage_errors(storage, str(experiment)):
        raise full
    assert str(info.value) == (
        f"storage: Ray's storage {storage!r} must take the search's state and checkpoints, but "
        "it is full (EOFError: Ran out of input); free space there (or pass --storage), then "
        "--resume"
    )
    # Ray's state cut short by the full disk: a resume could not go on from it, so none is
    # advised (the audit followed the advice and met the torn-state refusal).
    (experiment / "experiment_state-2026-01-01_00-00-01.json").write_text('{"trial_da')
    with pytest.raises(SweepsError) as info, storage_errors(storage, str(experiment)):
        raise full
    assert str(info.value).endswith(
        "free space there (or pass --storage), then run the sweep again without --resume (Ray's "
        "saved state of it was cut short)"
    )
    # Trials that failed for the storage, the search going on: a warning names it.
    assert storage_failures(storage, ["x", "OSError: [Errno 28] Cannot create directory"]) == (
        f"warning: 1 of the failed trials failed because Ray's storage {storage!r} is full; "
        "free space there (or pass --storage), then run the sweep again"
    )
    assert storage_failures(storage, ["FileNotFoundError: [Errno 2] No such file"]) is None
    assert storage_trouble(storage, OSError(errno.EROFS, "x")) == (
        "is read-only",
        "make it writable (or pass --storage)",
    )
    # Any other error on a healthy storage is not blamed on it: it keeps its traceback.
    with pytest.raises(ConnectionError), storage_errors(storage, str(experiment)):
        raise ConnectionError("refused")
    assert storage_error("s3://bucket/sweeps", str(experiment), EOFError("cut short")) is None
    assert storage_trouble("s3://bucket/sweeps", OSError(errno.EDQUOT, "quota"))[0] == (
        "is over its quota"
    )
    # Without a number, a local storage is measured: bytes, inodes, write access.
    monkeypatch.setattr("sweeps.storage.shutil.disk_usage", lambda p: SimpleNamespace(free=2**20))
    assert storage_trouble(f"file://{tmp_path}", EOFError())[0] == "is full (1.0 MiB free)"
    monkeypatch.setattr("sweeps.storage.shutil.disk_usage", lambda p: SimpleNamespace(free=2**40))
    monkeypatch.setattr(
        "sweeps.storage.os.statvfs",
        lambda p: SimpleNamespace(f_flag=0, f_files=1000, f_favail=3),
    )
    assert storage_trouble(str(tmp_path), EOFError())[0] == "is full (3 inodes free)"
    monkeypatch.setattr("sweeps.storage.os.access", lambda p, mode: False)
    assert storage_trouble(str(tmp_path), EOFError())[0] == "is read-only"
