"""A Ray node dies mid-trial: its trial continues on the head from its last checkpoint.

Two `ray start` nodes of one CPU each (helpers from ``test_cluster.py``), one trial on each. The
second node's trial stalls after its third checkpoint, and every process of that node is SIGKILLed
at once, as a crashed machine would vanish. Tune retries the trial (``failure.max_retries``) on the
head, from the checkpoint in the shared storage, and the sweep ends with both trials complete in
MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from sweeps.trainable import EARLIER, FAULT_ENV
from tests.sweeps.test_cluster import (
    RayCluster,
    cli,
    end_session,
    session_members,
    sets,
    tail,
    trial_runs,
    wait_for,
)

EPOCHS = 20
CHECKPOINT_EVERY = 2
# Through each node's environment, the test fault injector holds its trials: the second node's
# before epoch 7, after the checkpoint of epoch 6, until the node is killed; the head's before
# epoch 3, until the kill, so that it cannot finish and take the other trial itself (Tune reuses
# a free actor before a new one starts). No window that a busy box could close.
STALL_AT = 7  # after a checkpoint epoch (a multiple of CHECKPOINT_EVERY)
NODE_LOSS = [
    "search.families=[fixed]", "search.trials_per_family=2", "search.base_lr.high=0.01",
    f"train.epochs={EPOCHS}", "train.batch_size=16", f"train.checkpoint_every={CHECKPOINT_EVERY}",
    "early_stopping.name=none", "failure.max_retries=2", "reeval.seeds=1",
]  # fmt: skip
# The GCS declares a node whose raylet stopped answering dead after period x threshold (by default
# 3 s x 5 after a 5 s delay); quicker here, with a timeout that tolerates a busy machine.
FAST_NODE_DEATH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "5000",
    "RAY_health_check_failure_threshold": "5",
}


@pytest.fixture()
def ray_cluster(tmp_path: Path) -> Any:
    cluster = RayCluster(tmp_path)
    cluster.env.update(FAST_NODE_DEATH)
    try:
        yield cluster
    finally:
        cluster.stop()


def results(storage: Path) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
    """Per trial id: its folder and a row per epoch from Tune's results, as far as they are
    written yet. The epochs that rode along with a result (``EARLIER``) come first, each with
    that result's fields from Ray (pid, timestamp, iterations_since_restore)."""
    out: dict[str, tuple[Path, list[dict[str, Any]]]] = {}
    for f in storage.rglob("result.json"):
        for line in f.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written
                row = json.loads(line)
                rows = out.setdefault(row["trial_id"], (f.parent, []))[1]
                rows += [{**row, **earlier} for earlier in row.pop(EARLIER, [])] + [row]
    return out


def checkpoint_epoch(trial_dir: Path) -> int:
    """The epoch of the trial's newest checkpoint in the shared storage (0: none yet)."""
    best = 0
    for m in trial_dir.glob("checkpoint_*/metrics.json"):
        with contextlib.suppress(json.JSONDecodeError, OSError, KeyError):
            best = max(best, int(json.loads(m.read_text())["epoch"]))
    return best


def crash(pids: list[int]) -> None:
    """SIGKILL: no process of the node gets to say goodbye."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_node_killed_mid_trial_its_trial_resumes_on_the_head_from_its_checkpoint(
    tmp_path: Path, ray_cluster: RayCluster, mlflow_store: Callable[[Path], str]
) -> None:
    go, never = tmp_path / "killed", tmp_path / "never"
    ray_cluster.start_head(num_cpus=1, env={FAULT_ENV: f"epoch=3,until={go}"})
    # One CPU each: the two trials run one per node.
    ray_cluster.add_node(num_cpus=1, env={FAULT_ENV: f"epoch={STALL_AT},until={never}"})
    (second,) = [n["node_id"] for n in ray_cluster.nodes() if not n["is_head_node"]]
    node = ray_cluster.servers[1]

    uri = mlflow_store(tmp_path / "mlflow.db")
    storage = tmp_path / "ray_results"  # one machine: a local path is shared storage
    log = tmp_path / "sweep.err"
    args = cli("sweeps.run", "digits_lr", "--address", ray_cluster.gcs, "--tracking-uri", uri,
               "--storage", str(storage), "--max-concurrent", "2", *sets(NODE_LOSS))  # fmt: skip
    t0 = time.monotonic()
    with log.open("w") as err, (tmp_path / "sweep.out").open("w") as out:
        sweep = subprocess.Popen(args, env=ray_cluster.env, cwd=tmp_path, stdout=out, stderr=err,
                                 start_new_session=True)  # fmt: skip
    logs = [log, *ray_cluster.logs()]
    try:
        seen: dict[str, dict[str, Any]] = {}  # the trials as last looked at

        def stalled_on_second_node() -> tuple[str, int, int] | None:
            """(trial id, worker pid, checkpointed epoch) of the second node's stalled trial."""
            assert sweep.poll() is None, tail(log)
            # A node's workers are in its `ray start`'s process session: no need to ask Ray's
            # state API, which a busy box can slow down for minutes.
            on_node = set(session_members(node.popen.pid))
            seen.clear()
            for trial_id, (folder, rows) in results(storage).items():
                last, saved = rows[-1], checkpoint_epoch(folder)
                seen[trial_id] = {"epoch": last["epoch"], "pid": last["pid"], "saved": saved}
                # Stalled: the driver has the result, and the storage the checkpoint, of the
                # epoch before the stall.
                if last["pid"] in on_node and last["epoch"] == saved == STALL_AT - 1:
                    return trial_id, int(last["pid"]), saved
            return None

        try:
            victim, victim_pid, saved = wait_for(
                "the stalled trial on the second node", stalled_on_second_node, 240, logs
            )
        except pytest.fail.Exception as exc:
            members = session_members(node.popen.pid)
            pytest.fail(f"{exc}\ntrials: {seen}\nthe second node's processes: {members}")
        members = session_members(node.popen.pid)
        assert victim_pid in members  # the trial's worker belongs to the node we kill
        crash(members)
        killed_at = time.time()
        wait_for("the second node's processes to end",
                 lambda: None if session_members(node.popen.pid) else True, 30, logs)  # fmt: skip
        go.touch()
        wait_for(
            "Ray to declare the second node dead",
            lambda: True if second not in {n["node_id"] for n in ray_cluster.nodes()} else None,
            120,
            logs,
        )
        rc = sweep.wait(timeout=420)
    finally:
        end_session(sweep.pid)
        if sweep.poll() is None:
            sweep.kill()
    seconds = time.monotonic() - t0
    assert rc == 0, tail(log, 4000)

    # Ray's own record: the victim's rows come from two workers; the second started after the
    # kill, so on the head (the only node left), at the epoch after a checkpoint, not at epoch 1.
    rows = results(storage)[victim][1]
    before = [r for r in rows if r["pid"] == victim_pid]
    after = [r for r in rows if r["pid"] != victim_pid]
    assert before and after, rows
    # What the driver got from the killed worker: its last result came with the checkpoint.
    reported = max(r["epoch"] for r in before)
    first = after[0]
    assert first["timestamp"] >= killed_at - 1
    assert first["iterations_since_restore"] == 1  # a restored trial, not a fresh one
    resumed_from = first["epoch"] - 1
    assert resumed_from == saved == reported  # the checkpoint seen before the kill
    assert [r["epoch"] for r in after] == list(range(resumed_from + 1, EPOCHS + 1))
    assert {r["epoch"] for r in rows} == set(range(1, EPOCHS + 1))

    # MLflow: both trials accounted for once, complete, with every epoch once; none RUNNING.
    parent, trials = trial_runs(uri, "digits_lr")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials/completed"] == 2
    assert parent.data.metrics["trials/failed"] == 0
    assert sorted(r.info.run_name for r in trials) == ["fixed-001", "fixed-002"]
    client = MlflowClient(uri)
    for r in trials:
        assert r.info.status == "FINISHED" and r.data.tags["sweeps.status"] == "completed"
        assert int(r.data.metrics["epochs_used"]) == EPOCHS
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (r.data.tags["sweeps.trial_id"], steps)
    (victim_run,) = [r for r in trials if r.data.tags["sweeps.trial_id"] == victim]
    print(
        f"sweep {seconds:.0f} s; trial {victim} ({victim_run.info.run_name}) killed on the second "
        f"node after epoch {reported}, resumed on the head from the checkpoint of epoch "
        f"{resumed_from}"
    )
