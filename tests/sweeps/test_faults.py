"""Faults a sweep survives, each for real: the driver SIGKILLed then resumed, trials that raise."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from sweeps.tuner import error_line

# Rates that neither collapse nor diverge on digits, so every trial trains to its last epoch.
SAFE_RATES = [
    "search.base_lr={low: 0.001, high: 0.01, log: true}",
    "search.max_lr={low: 0.01, high: 0.05, log: true}",
    "early_stopping.name=none",
]


def argv(tmp: Path, sets: list[str], *extra: str) -> list[str]:
    args = [sys.executable, "-m", "sweeps.run", "digits_lr", "--tracking-uri", uri(tmp)]
    args += ["--storage", str(tmp / "ray"), *extra]
    for s in sets:
        args += ["--set", s]
    return args


def uri(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'mlflow.db'}"


def all_runs(client: MlflowClient) -> list[Run]:
    exp = client.get_experiment_by_name("digits_lr")
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)


def steps(client: MlflowClient, run: Run) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc"))


def trials(runs: list[Run]) -> list[Run]:
    return [
        r
        for r in runs
        if r.data.tags.get("sweeps.role") == "trial" and r.info.lifecycle_stage == "active"
    ]


def report_md(client: MlflowClient, parent: Run, tmp: Path) -> str:
    path = client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp))
    return Path(path).read_text()


# Two families of four 60-epoch trials, every trial trained to its end, two seeds to re-evaluate.
HELD_SETS = [
    "search.families=[fixed,triangular]",
    "search.trials_per_family=4",
    "train.epochs=60",
    "train.checkpoint_every=2",
    "reeval.seeds=2",
    *SAFE_RATES,
]


def start_and_hold(tmp: Path) -> tuple[subprocess.Popen[bytes], Run]:
    """The CLI's sweep, once >= 3 trials have finished and a triangular trial has been held for
    3 s at epoch 31, past its checkpoint of epoch 30 (one is mid-flight whatever the machine's
    speed; Ray saves the experiment state, what --resume restores, every 2 s)."""
    held = tmp / "held"
    hold = f"epoch=31,family=triangular,touch={held},until={tmp / 'never'}"
    log = (tmp / "first.log").open("w")
    first = subprocess.Popen(
        argv(tmp, HELD_SETS),
        cwd=tmp,
        env={**os.environ, "RAY_ADDRESS": "", "SWEEPS_INJECT_FAULT": hold},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = MlflowClient(uri(tmp))
    victim: Run | None = None
    deadline = time.monotonic() + 400
    while victim is None and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
        if not held.exists() or time.time() - held.stat().st_mtime < 3:
            continue
        runs = trials(all_runs(client))
        if sum(r.info.status == "FINISHED" for r in runs) < 3:
            continue
        running = [r for r in runs if r.info.status == "RUNNING"]
        victim = next((r for r in running if r.data.tags["sweeps.family"] == "triangular"), None)
    assert victim is not None, (
        "no trial was held with 3 finished: " + (tmp / "first.log").read_text()[-3000:]
    )
    return first, victim


def finished_trials(client: MlflowClient) -> dict[str, tuple[int | None, list[int]]]:
    return {
        r.info.run_id: (r.info.end_time, steps(client, r))
        for r in trials(all_runs(client))
        if r.info.status == "FINISHED"
    }


def resume_to_the_end(
    tmp: Path, before: dict[str, tuple[int | None, list[int]]], victim: Run
) -> None:
    """``--resume`` finishes the sweep: finished trials are kept as they were, the held one
    continues from its checkpoint in its own MLflow run, and the report is built."""
    resumed = subprocess.run(
        argv(tmp, HELD_SETS, "--resume"), cwd=tmp, env={**os.environ, "RAY_ADDRESS": ""},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stderr
    assert "s since the parent run was resumed" in resumed.stdout  # not since it started

    client = MlflowClient(uri(tmp))
    runs = all_runs(client)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if r.data.tags.get("sweeps.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["sweeps.resumes"] == "1"
    # Seconds of a family that ended before the interruption are kept, not counted as 0.
    for family in ("fixed", "triangular"):
        assert parents[0].data.metrics[f"search_seconds/{family}"] > 0, parents[0].data.metrics
    live = trials(runs)
    for family in ("fixed", "triangular"):
        names = [r.info.run_name for r in live if r.data.tags["sweeps.family"] == family]
        assert len(names) == 4 == len(set(names)), names
    for r in live:  # every epoch logged once, none missing
        assert steps(client, r) == list(range(1, int(r.data.metrics["epochs_used"]) + 1))
        assert r.data.tags["sweeps.status"] == "completed"
        assert r.info.status == "FINISHED"
    # Finished trials were not run again.
    after = {r.info.run_id: (r.info.end_time, steps(client, r)) for r in live}
    for run_id, seen in before.items():
        assert after[run_id] == seen
    # The trial stopped mid-flight continued from its last checkpoint, in the same MLflow run.
    kept = next(r for r in live if r.info.run_id == victim.info.run_id)
    assert kept.data.tags["sweeps.resumed_from_epoch"] == "30"
    md = report_md(client, parents[0], tmp)
    assert "**Verdict.**" in md and "| triangular |" in md


@pytest.mark.slow
def test_driver_killed_then_resumed(tmp_path: Path, mlflow_store: Callable[[Path], str]) -> None:
    mlflow_store(tmp_path / "mlflow.db")
    first, victim = start_and_hold(tmp_path)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    client = MlflowClient(uri(tmp_path))
    before = finished_trials(client)
    assert len(before) >= 3
    assert any(r.info.status == "RUNNING" for r in all_runs(client))  # what the kill left
    resume_to_the_end(tmp_path, before, victim)


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_and_resume_finishes_it(
    tmp_path: Path, mlflow_store: Callable[[Path], str]
) -> None:
    """Ray Tune catches a first Ctrl-C and ends its search as if it were over: the sweep must
    stop there (no re-evaluation or verdict on part of the search), mark its runs KILLED, exit
    130 and say how to resume."""
    mlflow_store(tmp_path / "mlflow.db")
    first, victim = start_and_hold(tmp_path)
    first.send_signal(signal.SIGINT)
    assert first.wait(120) == 130
    out = (tmp_path / "first.log").read_text()
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.startswith("interrupted: ")]
    assert len(lines) == 1 and lines[0].endswith("--resume"), out[-3000:]
    assert "building the report" not in out and "verdict" not in out
    client = MlflowClient(uri(tmp_path))
    runs = all_runs(client)
    (parent,) = [r for r in runs if r.data.tags.get("sweeps.role") == "sweep"]
    assert parent.info.status == "KILLED" and parent.info.run_id in lines[0]
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert client.get_run(victim.info.run_id).info.status == "KILLED"
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["spec.yaml"]
    before = finished_trials(client)
    assert len(before) >= 3
    # With Ray's saved search elsewhere, --resume refuses to run the ended trials again.
    (tmp_path / "ray").rename(tmp_path / "ray-moved")
    lost = subprocess.run(
        argv(tmp_path, HELD_SETS, "--resume"), cwd=tmp_path, env={**os.environ, "RAY_ADDRESS": ""},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert lost.returncode == 2, lost.stderr[-3000:]
    assert "must exist to continue this sweep" in lost.stderr and "Traceback" not in lost.stderr
    assert client.get_run(parent.info.run_id).info.status == "KILLED"  # left as it was
    shutil.rmtree(tmp_path / "ray")
    (tmp_path / "ray-moved").rename(tmp_path / "ray")
    resume_to_the_end(tmp_path, before, victim)


@pytest.mark.slow
def test_trials_that_raise_are_retried_from_their_checkpoint_then_failed(
    tmp_path: Path, mlflow_store: Callable[[Path], str]
) -> None:
    mlflow_store(tmp_path / "mlflow.db")
    sets = [
        "search.families=[fixed,triangular]",
        "search.trials_per_family=2",
        "train.epochs=8",
        "train.checkpoint_every=2",
        "failure.max_retries=1",
        "reeval.seeds=2",
        *SAFE_RATES,
    ]
    # fixed fails once at epoch 5 and recovers; triangular fails at epoch 5 on every attempt.
    fault = "epoch=5,times=1,family=fixed;epoch=5,family=triangular"
    counts = tmp_path / "fault_counts"
    counts.mkdir()
    env = {
        **os.environ, "RAY_ADDRESS": "", "SWEEPS_INJECT_FAULT": fault,
        "SWEEPS_INJECT_FAULT_DIR": str(counts),
    }  # fmt: skip
    proc = subprocess.run(
        argv(tmp_path, sets), cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    # Every triangular trial failed: the verdict lacks that family, so no whole result.
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.rstrip().endswith(
        "error: every trial of triangular failed, so the verdict leaves it out and the parent "
        "run is marked FAILED (the errors are above); fix the cause, then run the sweep again"
    )
    client = MlflowClient(uri(tmp_path))
    runs = all_runs(client)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    by_family: dict[str, list[Run]] = {}
    for r in trials(runs):
        by_family.setdefault(r.data.tags["sweeps.family"], []).append(r)
    assert len(by_family["fixed"]) == len(by_family["triangular"]) == 2
    for r in by_family["fixed"]:
        tags: dict[str, Any] = r.data.tags
        assert tags["sweeps.status"] == "completed" and r.info.status == "FINISHED"
        assert tags["sweeps.retries"] == "1" and "InjectedFault" in tags["sweeps.last_error"]
        assert tags["sweeps.resumed_from_epoch"] == "4"  # the checkpoint before the fault
        assert steps(client, r) == list(range(1, 9))
    for r in by_family["triangular"]:
        tags = r.data.tags
        assert tags["sweeps.status"] == "failed" and r.info.status == "FAILED"
        assert tags["sweeps.retries"] == "1"
        assert "InjectedFault: injected fault at epoch 5" in tags["sweeps.error"]
        assert "attempt 2" in tags["sweeps.error"]  # the last attempt's error, not the first
        assert steps(client, r) == [1, 2, 3, 4]
    parent = next(r for r in runs if r.data.tags.get("sweeps.role") == "sweep")
    assert parent.info.status == "FAILED"  # as the exit code says: no whole result
    assert parent.data.metrics["trials/failed"] == 2
    md = report_md(client, parent, tmp_path)
    assert "## Failed runs" in md
    for name in ("triangular-001", "triangular-002"):
        assert f"{name} failed after 4 epochs and 1 retries: " in md
        assert f"failed run: {name}" in proc.stdout


def test_error_line_is_the_latest_failure() -> None:
    text = (
        "Failure # 1 (occurred at 2026-11-22_05-33-17)\n"
        "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1, ip=1.2.3.4)\n"
        "  File \"x.py\", line 3, in f\n    raise E('first')\n"
        "sweeps.trainable.InjectedFault: first\n"
        "Failure # 2 (occurred at 2026-11-22_05-33-35)\n"
        'Traceback (most recent call last):\n  File "x.py", line 3\n'
        "ValueError: second\n"
    )
    assert error_line(text) == "ValueError: second"
    assert error_line("") == "unknown error"
    # A class's module path is left out, as for a builtin's line; a sentence keeps its dots.
    assert error_line("sweeps.trainable.InjectedFault: first") == "InjectedFault: first"
    assert error_line("mypkg.Bad: x.y: z") == "Bad: x.y: z"
    assert error_line("data.csv: not found") == "data.csv: not found"


@pytest.mark.slow
def test_a_sweep_whose_every_trial_failed_exits_1(
    tmp_path: Path, mlflow_store: Callable[[Path], str]
) -> None:
    mlflow_store(tmp_path / "mlflow.db")
    sets = ["search.families=[fixed,triangular]", "search.trials_per_family=1",
            "train.epochs=3", "reeval.seeds=1", "failure.max_retries=0", *SAFE_RATES]  # fmt: skip
    proc = subprocess.run(
        argv(tmp_path, sets), cwd=tmp_path,
        env={**os.environ, "RAY_ADDRESS": "", "SWEEPS_INJECT_FAULT": "epoch=2"},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1].startswith("error: every trial of every family failed")
    assert "Traceback" not in proc.stderr
    assert "No verdict: the tuned fixed family has no test accuracy" in proc.stdout
    runs = all_runs(MlflowClient(uri(tmp_path)))
    assert sorted(r.data.tags["sweeps.status"] for r in trials(runs)) == ["failed", "failed"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
