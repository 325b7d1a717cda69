"""The MLflow store goes away mid-sweep: writes wait in order, none is lost, no run stays RUNNING.

The fast tests drive ``SweepTracker`` against a real sqlite store through a client that can be
switched "down"; the slow one stops a real ``mlflow server`` while a sweep's trials run, keeps it
down, and starts it again on the same port and store.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from sweeps import outbox
from sweeps.outbox import RUN_KEY_TAG, TrackingError
from sweeps.spec import load_spec
from sweeps.tracking import SweepTracker
from tests.sweeps.test_cluster import (
    BIN,
    Server,
    base_env,
    cli,
    end_session,
    free_ports,
    sets,
    tail,
    wait_for,
)

DOWN = "API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed with exception "
DOWN += "HTTPConnectionPool: Max retries exceeded (Connection refused)"


class FlakyClient:
    """The real client, except that every call fails as a refused connection while ``down``."""

    def __init__(self, real: MlflowClient) -> None:
        self.real, self.down, self.calls = real, False, 0
        self.refuse: Callable[[str], Exception | None] | None = None  # instead of the call
        self.fail_after: Callable[[str], Exception | None] | None = None  # after the call

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.down:
                raise MlflowException(DOWN)
            refused = self.refuse(name) if self.refuse else None
            if refused is not None:
                raise refused
            out = attr(*args, **kwargs)
            err = self.fail_after(name) if self.fail_after else None
            if err is not None:  # the store did it, but the answer never arrived
                raise err
            return out

        return call


@pytest.fixture()
def tracker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: Callable[[Path], str]
) -> SweepTracker:
    monkeypatch.chdir(tmp_path)
    spec = load_spec("digits_lr", ["search.families=[fixed]"])
    t = SweepTracker(mlflow_store(tmp_path / "mlflow.db"), spec, patience=1.0)
    t.start()
    t.outbox.say = lambda line: None
    t.outbox.client = FlakyClient(t.outbox.client)  # type: ignore[assignment]
    return t


def flaky(t: SweepTracker) -> FlakyClient:
    client = t.outbox.client
    assert isinstance(client, FlakyClient)
    return client


def epoch(n: int) -> dict[str, Any]:
    return {"epoch": n, "train_loss": 1.0 / n, "val_loss": 1.1 / n, "val_acc": 0.5 + n / 100,
            "lr": 0.01, "epoch_seconds": 0.1}  # fmt: skip


def real_client(t: SweepTracker) -> MlflowClient:
    return MlflowClient(t.uri)


def test_writes_wait_in_order_while_the_store_is_down_and_get_real_ids(
    tracker: SweepTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "RETRY_EVERY", 2.0)
    fc = flaky(tracker)
    live = tracker.start_child("fixed-001", "trial", {"sweeps.family": "fixed"}, {"base_lr": 0.1})
    assert not live.startswith(outbox.PLACEHOLDER)
    tracker.log_epoch(live, epoch(1))

    fc.down = True
    t0 = time.monotonic()
    tracker.log_epoch(live, epoch(2))
    before = int(time.time() * 1000)
    pending = tracker.start_child("fixed-002", "trial", {"sweeps.family": "fixed"}, {"x": 1})
    for n in (1, 2, 3):
        tracker.log_epoch(pending, epoch(n))
    tracker.end_child(pending, "completed", {"epochs_used": 3, "final_val_acc": 0.53})
    ended = time.time() * 1000
    tracker.log_epoch(live, epoch(3))
    # Nothing blocked and nothing raised; one try while down, then none until RETRY_EVERY.
    assert time.monotonic() - t0 < 2.0
    assert pending.startswith(outbox.PLACEHOLDER) and tracker.resolve(pending) == pending
    assert len(tracker.outbox.queue) == 10
    tries = fc.calls
    tracker.set_tags(live, {"x": "y"})
    assert fc.calls == tries

    time.sleep(2.1)
    fc.down = False
    tracker.end_child(live, "completed", {"epochs_used": 3, "final_val_acc": 0.53})
    assert not tracker.outbox.queue and tracker.outbox.down_since is None
    real = tracker.resolve(pending)
    assert not real.startswith(outbox.PLACEHOLDER)

    client = real_client(tracker)
    for run_id in (live, real):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == tracker.parent_id
        assert run.data.tags["sweeps.status"] == "completed"
        hist = client.get_metric_history(run_id, "val_acc")
        assert sorted(m.step for m in hist) == [1, 2, 3]
    run = client.get_run(real)
    assert run.data.params == {"x": "1"} and run.info.run_name == "fixed-002"
    # The times are when the sweep made the writes, not when the store got them.
    assert before <= run.info.start_time <= before + 1000
    assert run.info.end_time is not None and before <= run.info.end_time <= ended


def test_queued_writes_of_a_run_go_in_one_log_batch_in_order(tracker: SweepTracker) -> None:
    fc = flaky(tracker)
    a = tracker.start_child("fixed-001", "trial", {"sweeps.family": "fixed"}, {"base_lr": 0.1})
    b = tracker.start_child("fixed-002", "trial", {"sweeps.family": "fixed"}, {"base_lr": 0.2})
    fc.down = True
    for n in (1, 2, 3):
        tracker.log_epoch(a, epoch(n))
        tracker.log_epoch(b, epoch(n))
    tracker.set_tags(a, {"note": "first"})
    tracker.set_tags(a, {"note": "second"})
    tracker.end_child(b, "completed", {"epochs_used": 3, "final_val_acc": 0.53})
    tracker.log_epoch(a, epoch(4))
    assert len(tracker.outbox.queue) == 12
    sent: list[str] = []
    fc.refuse = lambda name: sent.append(name)  # type: ignore[func-returns-value]
    fc.down = False
    assert tracker.outbox.drain(force=True)
    # a's results and tags up to b's end in one call, b's in one, b's end, then a's epoch 4.
    assert sent == ["log_batch", "log_batch", "set_terminated", "log_batch"]
    client = real_client(tracker)
    run_a, run_b = client.get_run(a), client.get_run(b)
    assert run_a.data.tags["note"] == "second"  # the later of two values, as sent one by one
    for run_id, steps in ((a, [1, 2, 3, 4]), (b, [1, 2, 3])):
        hist = client.get_metric_history(run_id, "val_acc")
        assert sorted(m.step for m in hist) == steps
        assert {m.step: m.value for m in hist} == {n: epoch(n)["val_acc"] for n in steps}
    assert run_b.info.status == "FINISHED" and run_b.data.metrics["epochs_used"] == 3
    assert run_a.info.status == "RUNNING"


def test_finish_does_not_wait_out_the_senders_pause(
    tracker: SweepTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "SEND_EVERY", 60.0)
    tracker.outbox.start_sender()
    run = tracker.start_child("fixed-001", "trial", {"sweeps.family": "fixed"}, {"base_lr": 0.1})
    tracker.log_epoch(run, epoch(1))
    deadline = time.monotonic() + 10
    while tracker.outbox.queue and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not tracker.outbox.queue  # sent; the thread now pauses for SEND_EVERY
    t0 = time.monotonic()
    tracker.finish()
    assert time.monotonic() - t0 < 10
    client = real_client(tracker)
    assert client.get_run(tracker.parent_id).info.status == "FINISHED"
    assert client.get_run(tracker.resolve(run)).info.status == "FAILED"  # left open: never RUNNING


def test_plan_groups_each_runs_log_batches_up_to_the_next_other_write() -> None:
    def batch(run: str, n: int = 5, params: int = 0, tag: str = "") -> outbox.Write:
        return outbox.Write(
            "log_batch", run, metrics=[("m", 0.0, 0, i) for i in range(n)],
            params=[(f"p{i}", "1") for i in range(params)], tags={tag: "v"} if tag else {},
        )  # fmt: skip

    a1, b1, a2, b2 = batch("a"), batch("b"), batch("a", tag="t"), batch("b")
    end_b = outbox.Write("set_terminated", "b", status="FINISHED")
    a3, a4, a5 = batch("a"), batch("a", params=2), batch("a")
    big = [batch("c", n=400) for _ in range(3)]  # 1,200 entries: over one call's BATCH_MAX
    tagged = [batch("d", n=1, tag=f"t{i}") for i in range(101)]  # over 100 tags in one call
    writes = [a1, b1, a2, b2, end_b, a3, a4, a5, *big, *tagged]
    labels = ["a1", "b1", "a2", "b2", "end_b", "a3", "a4", "a5", "c1", "c2", "c3"]
    labels += [f"d{i}" for i in range(101)]
    names = {id(w): name for name, w in zip(labels, writes, strict=True)}
    groups = [[names[id(w)] for w in g] for g in outbox.plan(writes)]
    # Heads in queue order; a write of another kind is a barrier; params start a new call.
    assert groups == [
        ["a1", "a2"],
        ["b1", "b2"],
        ["end_b"],
        ["a3"],
        ["a4", "a5"],
        ["c1", "c2"],
        ["c3"],
        [f"d{i}" for i in range(100)],
        ["d100"],
    ]


def test_a_creation_that_reached_the_store_is_not_made_twice(tracker: SweepTracker) -> None:
    fc = flaky(tracker)
    lost = {"create_run"}
    fc.fail_after = lambda name: MlflowException(DOWN) if name in lost and lost.pop() else None
    run_id = tracker.start_child("fixed-001", "trial", {}, {"a": 1})
    assert run_id.startswith(outbox.PLACEHOLDER)
    tracker.outbox.flush()
    client = real_client(tracker)
    runs = client.search_runs([tracker.experiment_id], "tags.`sweeps.role` = 'trial'")
    assert len(runs) == 1 and runs[0].info.run_id == tracker.resolve(run_id)
    assert runs[0].data.tags[RUN_KEY_TAG] == run_id.removeprefix(outbox.PLACEHOLDER)
    assert runs[0].data.params == {"a": "1"}


def test_a_write_the_store_refuses_raises_at_once_and_is_not_retried(
    tracker: SweepTracker,
) -> None:
    run_id = tracker.start_child("fixed-001", "trial", {}, {})
    fc = flaky(tracker)
    bad = RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "no such thing"})
    fc.refuse = lambda name: bad if name == "log_batch" else None
    with pytest.raises(TrackingError) as exc:
        tracker.log_epoch(run_id, epoch(1))
    assert str(exc.value).startswith("--tracking-uri: the MLflow store ")
    assert "must accept log_batch (5 metrics, 0 params, 0 tags) of run " in str(exc.value)
    assert "INVALID_PARAMETER_VALUE: no such thing" in str(exc.value)
    assert not tracker.outbox.queue  # dropped, not retried forever
    fc.refuse = None
    tracker.log_epoch(run_id, epoch(2))
    assert [m.step for m in real_client(tracker).get_metric_history(run_id, "val_acc")] == [2]


def test_finish_ends_open_runs_and_saves_what_a_dead_store_never_took(
    tracker: SweepTracker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fc = flaky(tracker)
    done = tracker.start_child("fixed-001", "trial", {}, {})
    tracker.log_epoch(done, epoch(1))
    fc.down = True
    cut = tracker.start_child("fixed-002", "trial", {}, {})  # its trial never ends
    tracker.log_epoch(cut, epoch(1))
    tracker.log_metrics(tracker.parent_id, {"wall_seconds": 3.0})
    tracker.outbox.say = outbox._stderr
    t0 = time.monotonic()
    with pytest.raises(TrackingError) as exc:
        tracker.finish("FINISHED")
    assert time.monotonic() - t0 < 10  # the patience (1 s here), not MLflow's minutes
    path = tmp_path / f"mlflow-unsent-{tracker.parent_id}.json"
    assert str(exc.value) == (
        f"--tracking-uri: the MLflow store {tracker.uri!r} must come back within 1 s "
        f"($SWEEPS_MLFLOW_PATIENCE) to take the sweep's last 6 writes, but it did not; they "
        f"are saved in {path}: send them with `python -m sweeps.outbox {path}`"
    )  # FINISHED: the report is in the run
    err = capsys.readouterr().err
    assert "warning: the MLflow store" in err and "waiting up to 1 s" in err
    kinds = [w["kind"] for w in json.loads(path.read_text())["writes"]]
    assert kinds[0] == "create_run" and kinds[-2:] == ["set_terminated", "set_terminated"]

    # Sent on its own to a store that is still down: the console speaks of --patience.
    assert outbox.main([str(path), "--tracking-uri", "http://127.0.0.1:9", "--patience", "1"]) == 2
    err = capsys.readouterr().err
    assert "waiting up to 1 s (--patience) to send" in err, err
    assert "while the sweep goes on" not in err and "SWEEPS_MLFLOW_PATIENCE" not in err
    assert outbox.main([str(path)]) == 0  # the store is back (here: the file is readable)
    client = real_client(tracker)
    assert client.get_run(tracker.parent_id).info.status == "FINISHED"
    assert client.get_run(tracker.parent_id).data.metrics["wall_seconds"] == 3.0
    runs = client.search_runs([tracker.experiment_id], "tags.`sweeps.role` = 'trial'")
    status = {r.info.run_name: r.info.status for r in runs}
    # The trial whose end never came is FAILED, not left RUNNING; the ended one too.
    assert status == {"fixed-001": "FAILED", "fixed-002": "FAILED"}
    assert all(len(client.get_metric_history(r.info.run_id, "val_acc")) == 1 for r in runs)
    assert outbox.main([str(path)]) == 0  # sending the file twice changes nothing
    assert len(client.search_runs([tracker.experiment_id], "tags.`sweeps.role` = 'trial'")) == 2


def test_a_sweep_that_ended_early_on_a_dead_store_is_told_to_resume_after_the_replay(
    tracker: SweepTracker,
) -> None:
    flaky(tracker).down = True
    tracker.log_metrics(tracker.parent_id, {"wall_seconds": 3.0})
    with pytest.raises(TrackingError) as exc:
        tracker.finish("FAILED")  # e.g. the report could not be built from the store
    assert str(exc.value).endswith(
        ", then run the sweep's command again with --resume to finish it"
    )


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_the_patience_must_be_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(outbox.PATIENCE_ENV, value)
    with pytest.raises(
        TrackingError, match=rf"^SWEEPS_MLFLOW_PATIENCE: must be seconds >= 0, but got '{value}'$"
    ):
        SweepTracker(f"sqlite:///{tmp_path / 'm.db'}", load_spec("digits_lr"))
    assert not (tmp_path / "m.db").exists()  # refused before MLflow made a store


def test_replaying_a_file_that_is_not_one_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.json"
    bad.write_text('{"writes": 3}')
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "list.json").write_text("[]")
    for path in (bad, tmp_path / "missing.json", tmp_path / "empty.json", tmp_path / "list.json"):
        assert outbox.main([str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"error: FILE {str(path)!r}: must be an mlflow-unsent-*.json file a sweep saved, but "
        ), lines
        if path.name in ("empty.json", "list.json"):
            assert "but it lacks the sweep's fields (" in lines[0], lines


# -- the real thing -------------------------------------------------------------------------------
FAMILIES = ("fixed", "triangular")
TRIALS = 2
EPOCHS = 8
# Small batches make each epoch 0.1-0.4 s, and the test fault injector adds DELAY to each, so the
# trials are still running when the store goes down (without it, on a quick box, all four trials
# once ended before the outage began).
DELAY = "delay=0.5"
OUTAGE = [
    f"search.families=[{','.join(FAMILIES)}]", f"search.trials_per_family={TRIALS}",
    f"train.epochs={EPOCHS}", "train.batch_size=4", "search.base_lr.high=0.01",
    "search.max_lr.high=0.05", "early_stopping.name=none", "reeval.seeds=1",
]  # fmt: skip
DOWN_SECONDS = 6.0


class MlflowServer:
    def __init__(self, workdir: Path, env: dict[str, str], backend: str) -> None:
        (self.port,) = free_ports(1)
        self.uri = f"http://127.0.0.1:{self.port}"
        self.workdir, self.env, self.backend = workdir, env, backend
        self.starts = 0
        self.server: Server | None = None

    def start(self) -> None:
        self.starts += 1
        self.server = Server(
            [str(BIN / "mlflow"), "server", "--backend-store-uri",
             self.backend, "--artifacts-destination",
             str(self.workdir / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"],
            self.workdir / f"mlflow-server-{self.starts}.log", self.env, self.workdir,
        )  # fmt: skip
        server = self.server

        def healthy() -> bool | None:
            if not server.running():
                pytest.fail(f"mlflow server exited ({server.popen.returncode})\n{tail(server.log)}")
            with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as r:
                return True if r.status == 200 else None

        wait_for("the MLflow server's /health", healthy, 120, [server.log])

    def stop(self) -> None:
        if self.server is not None:
            assert not self.server.stop(), "the MLflow server left processes running"


@pytest.mark.slow
def test_mlflow_server_stopped_and_restarted_mid_sweep_loses_nothing(
    tmp_path: Path, mlflow_store: Callable[[Path], str]
) -> None:
    env = {
        **base_env(secrets.token_hex(32)), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "SWEEPS_INJECT_FAULT": DELAY,
    }  # fmt: skip
    server = MlflowServer(tmp_path, env, mlflow_store(tmp_path / "mlflow.db"))
    server.start()
    log_out, log_err = tmp_path / "sweep.out", tmp_path / "sweep.err"
    args = cli("sweeps.run", "digits_lr", "--tracking-uri", server.uri, "--storage",
               str(tmp_path / "results"), "--max-concurrent", "2", *sets(OUTAGE))  # fmt: skip
    t0 = time.monotonic()
    with log_out.open("w") as out, log_err.open("w") as err:
        sweep = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=out, stderr=err,
                                 start_new_session=True)  # fmt: skip
    try:
        client = MlflowClient(server.uri)

        def a_trial_reported() -> bool | None:
            assert sweep.poll() is None, tail(log_err)
            exp = client.get_experiment_by_name("digits_lr")
            if exp is None:
                return None
            runs = client.search_runs([exp.experiment_id], "tags.`sweeps.role` = 'trial'")
            return True if any("val_acc" in r.data.metrics for r in runs) else None

        wait_for("a trial run with a result", a_trial_reported, 240, [log_err])
        down_at = time.time() * 1000
        server.stop()
        time.sleep(DOWN_SECONDS)
        assert sweep.poll() is None, "the sweep ended while the store was down\n" + tail(log_err)
        server.start()
        up_at = time.time() * 1000
        rc = sweep.wait(timeout=300)
    finally:
        end_session(sweep.pid)  # the local Ray instance the sweep started
        if sweep.poll() is None:
            sweep.kill()
    seconds = time.monotonic() - t0
    stderr, stdout = log_err.read_text(), log_out.read_text()
    try:
        assert rc == 0, stderr[-4000:]
        assert "is unreachable" in stderr and "is back after" in stderr, stderr[-4000:]
        assert "best trial per family" in stdout and "verdict: " in stdout
        assert "View run" not in stdout  # MLflow's two lines per ended run on an http store

        exp = client.get_experiment_by_name("digits_lr")
        assert exp is not None
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        assert not [r.info.run_name for r in runs if r.info.status != "FINISHED"]
        (parent,) = [r for r in runs if r.data.tags.get("sweeps.role") == "sweep"]
        trials = [r for r in runs if r.data.tags.get("sweeps.role") == "trial"]
        reevals = [r for r in runs if r.data.tags.get("sweeps.role") == "reeval"]
        assert sorted(r.info.run_name for r in trials) == sorted(
            f"{f}-{i:03d}" for f in FAMILIES for i in range(1, TRIALS + 1)
        )
        assert len(reevals) == len(FAMILIES) and all("test_acc" in r.data.metrics for r in reevals)
        assert parent.data.metrics["trials/completed"] == len(FAMILIES) * TRIALS

        in_outage = 0
        for r in trials:
            assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert r.data.tags["sweeps.status"] == "completed", r.data.tags
            used = int(r.data.metrics["epochs_used"])
            assert used == EPOCHS
            for key in ("val_acc", "train_loss", "val_loss", "lr", "epoch_seconds"):
                hist = client.get_metric_history(r.info.run_id, key)
                assert sorted(m.step for m in hist) == list(range(1, used + 1)), (key, r.info)
                in_outage += sum(down_at < m.timestamp < up_at for m in hist if key == "val_acc")
        # The outage did hit running trials: epochs they reported meanwhile are all there.
        assert in_outage > 0, (down_at, up_at)

        report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
        assert {"report/report.md", "report/report.html", "report/lr_curves.png"} <= report
        assert not list(tmp_path.glob("mlflow-unsent-*.json"))
        print(f"sweep {seconds:.0f} s; {in_outage} epochs reported while the store was down")
    finally:
        server.stop()


def test_sweeps_opening_one_new_sqlite_store_at_once_all_open_it(tmp_path: Path) -> None:
    # Each ran MLflow's migrations on the new file: most failed, and some left it half-migrated
    # for good ("Online migration expected to match one row").
    code = (
        "import sys\n"
        "from sweeps.outbox import open_client\n"
        "from sweeps.tracking import check_store\n"
        "check_store(open_client(sys.argv[1]), sys.argv[1])\n"
    )
    db = tmp_path / "new.db"
    argv = [sys.executable, "-c", code, f"sqlite:///{db}"]
    procs = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    with sqlite3.connect(db) as con:
        tmp = con.execute("select name from sqlite_master where name like '_alembic_tmp%'")
        assert tmp.fetchall() == []
        assert con.execute("select count(*) from experiments").fetchone() == (1,)  # Default


def test_the_sqlite_open_lock_is_the_stores_folder_and_never_waits_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One machine-wide lock file made every sqlite open on the machine wait, without a word or
    # an end, on any holder that hung; and a nested open in one process hung for good.
    here, there = tmp_path / "a", tmp_path / "b"
    here.mkdir()
    there.mkdir()
    holder = os.open(here, os.O_RDONLY)  # another open file: flock treats it as another process
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        t0 = time.monotonic()
        # A store elsewhere opens at once, and a nested open does not wait on itself.
        with (
            outbox._one_creator(f"sqlite:///{there}/m.db"),
            outbox._one_creator(f"sqlite:///{there}/n.db"),
        ):
            pass
        assert time.monotonic() - t0 < 1
        monkeypatch.setattr(outbox, "CREATOR_WAIT_S", 6.0)
        t0 = time.monotonic()
        with outbox._one_creator(f"sqlite:///{here}/m.db"):  # a holder that hangs: it goes on
            pass
        assert 6 <= time.monotonic() - t0 < 12
        assert f"waiting for another process that is opening an MLflow store in {here}" in (
            capsys.readouterr().err
        )
    finally:
        os.close(holder)
    assert not list(tmp_path.rglob("*.lock"))  # nothing left beside the stores
