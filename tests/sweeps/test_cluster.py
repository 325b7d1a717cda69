"""Real clusters on one machine: two Ray nodes, the Ray Jobs API, an MLflow server on PostgreSQL.

Every server here runs in a session of its own and is ended by its id in teardown, along with
whatever it started. (``ray stop --force`` is not used: it ends every Ray instance on the machine,
other test runs' and the user's included.) Token authentication is on, with a token made per test
and passed as RAY_AUTH_TOKEN, so the tests need no ~/.ray/auth_token.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient

from sweeps import cluster as cluster_module
from sweeps.cluster import check_resources, start_ray
from sweeps.errors import SweepsError
from sweeps.spec import load_spec
from sweeps.trainable import FAULT_ENV

BIN = Path(sys.executable).parent  # ray and mlflow come with the project's environment
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
T = TypeVar("T")

# A tiny digits sweep: one family, two short trials, one re-evaluation seed.
TINY = [
    "search.families=[fixed]", "search.trials_per_family=2", "train.epochs=3",
    "early_stopping.grace_period=3", "reeval.seeds=1",
]  # fmt: skip
# No ASHA and low rates: every trial runs all its epochs. (That each node gets one trial is
# ensured in the test itself, not by the trials' length.)
SPREAD = [
    "search.families=[fixed]", "search.trials_per_family=2", "search.base_lr.high=0.01",
    "train.epochs=40", "train.batch_size=16", "early_stopping.name=none", "reeval.seeds=1",
]  # fmt: skip


@pytest.mark.parametrize(
    ("sets", "nodes", "error"),
    [
        (["resources.cpu=2"], [{"CPU": 2.0}], None),
        (["resources.cpu=3"], [{"CPU": 2.0}, {"CPU": 1.0}],
         "resources.cpu: a trial's share must fit on one node, but got (cpu=3, the largest of 2 "
         "nodes has 2 of the cluster's 3)"),
        (["resources.gpu=1"], [{"CPU": 2.0}],
         "resources.gpu: a trial's share must fit on one node, but got (gpu=1, the cluster has 0)"),
        (["resources.cpu=2", "resources.gpu=1"], [{"CPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}],
         "resources: a trial's cpu and gpu must fit on one node together, but no node has both "
         "(cpu=2, gpu=1)"),
        (["resources.cpu=2", "resources.gpu=0.5"], [{"CPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}], None),
    ],
)  # fmt: skip
def test_a_trial_must_fit_on_one_node(
    sets: list[str], nodes: list[dict[str, float]], error: str | None
) -> None:
    # A trial bigger than every node (3 CPUs over nodes of 2 and 1) waited forever.
    spec = load_spec("cardio_clr", sets)
    if error is None:
        check_resources(spec, nodes)
        return
    with pytest.raises(SweepsError) as info:
        check_resources(spec, nodes)
    assert str(info.value) == error


def test_the_driver_is_back_in_its_folder_if_joining_the_cluster_removed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As Ray does to a job's working_dir: deleted and unpacked again while the driver joins.
    work = tmp_path / "working_dir"
    work.mkdir()
    monkeypatch.chdir(work)

    def init(**_: Any) -> None:
        shutil.rmtree(work)
        work.mkdir()

    monkeypatch.setattr(cluster_module, "check_reachable", lambda *_: None)
    monkeypatch.setattr(cluster_module.ray, "init", init)
    monkeypatch.setattr(cluster_module.ray, "is_initialized", lambda: False)
    assert start_ray("head:6379") is False
    assert os.getcwd() == str(work)
    (work / "probe").write_text("here")  # the folder that exists, not the removed one

    def gone(**_: Any) -> None:
        shutil.rmtree(work)

    monkeypatch.setattr(cluster_module.ray, "init", gone)
    monkeypatch.setattr(cluster_module, "REUNPACK_WAIT_S", 0.2)
    with pytest.raises(SweepsError, match=r"^working folder: .* must exist, but it was removed"):
        start_ray("head:6379")


# -- processes ------------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, chars: int = 2500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"--- {path}: (none)"
    return f"--- {path} (last {chars} chars):\n{text[-chars:]}"


def session_members(sid: int) -> list[int]:
    """The ids of the live processes in session ``sid`` (Linux: read from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid and not _zombie(int(entry.name)):
                    out.append(int(entry.name))
    return out


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    return str(pid)


def end_session(sid: int, grace: float = 10.0) -> list[str]:
    """SIGTERM, then SIGKILL, every process left in session ``sid``; what had to be ended."""
    ended = [_cmdline(pid) for pid in session_members(sid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(sid):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
    return ended


class Server:
    """A long-running command in a new session, its output in ``log``."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> None:
        self.cmd, self.log = cmd, log
        with log.open("wb") as f:
            self.popen = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
            )

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 30.0) -> list[int]:
        """SIGTERM to the leader (``ray start --block`` then ends its node), then the rest.

        Returns the ids of any process of the session that is still alive after all that.
        """
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=grace)
        end_session(self.popen.pid)
        return session_members(self.popen.pid)


def wait_for(what: str, check: Callable[[], T | None], timeout: float, logs: list[Path]) -> T:
    """Poll ``check`` until it returns a value; fail with the logs' tails after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, ValueError, KeyError) as exc:
            value, last_error = None, f"{type(exc).__name__}: {exc}"
        if value is not None:
            return value
        time.sleep(1.0)
    details = "\n".join(tail(p) for p in logs)
    pytest.fail(f"{what}: not within {timeout:.0f} s ({last_error})\n{details}")


def run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """A CLI to its end; anything it leaves running (a local Ray instance) is ended too."""
    with subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    ) as p:  # fmt: skip
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            end_session(p.pid)
            out, err = p.communicate()
            pytest.fail(f"{args[1:4]} ran past {timeout:.0f} s\n--- stderr:\n{err[-4000:]}")
        finally:
            end_session(p.pid)
    return subprocess.CompletedProcess(args, p.returncode, out, err)


def cli(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def base_env(token: str) -> dict[str, str]:
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        # A job's entrypoint calls `python`: the cluster's PATH must find this environment's.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def http_json(url: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


# -- a Ray cluster of `ray start` nodes -----------------------------------------------------------
class RayCluster:
    def __init__(self, workdir: Path) -> None:
        self.token = secrets.token_hex(32)
        self.env = base_env(self.token)
        self.workdir = workdir
        # Short: Ray's unix sockets live under it, and their paths must stay under 108 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="sw-ray-", dir="/tmp"))
        self.gcs_port, self.client_port, self.dashboard_port = free_ports(3)
        self.servers: list[Server] = []

    @property
    def gcs(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def logs(self) -> list[Path]:
        session = self.temp_dir / "session_latest" / "logs"
        return [s.log for s in self.servers] + [
            session / n for n in ("raylet.err", "gcs_server.err", "dashboard.log")
        ]

    def _start(
        self, name: str, args: list[str], num_cpus: int, env: dict[str, str] | None = None
    ) -> None:
        common = [
            "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
            "--num-gpus", "0", "--object-store-memory", str(200 * 2**20),
            "--dashboard-agent-listen-port", "0", "--disable-usage-stats",
        ]  # fmt: skip
        cmd = [str(BIN / "ray"), "start", *args, *common]
        node_env = {**self.env, **(env or {})}  # a node's workers inherit its environment
        self.servers.append(Server(cmd, self.workdir / f"{name}.log", node_env, self.workdir))

    def start_head(self, num_cpus: int, env: dict[str, str] | None = None) -> None:
        self._start(
            "ray-head",
            ["--head", "--port", str(self.gcs_port), "--ray-client-server-port",
             str(self.client_port), "--include-dashboard", "true", "--dashboard-host",
             "127.0.0.1", "--dashboard-port", str(self.dashboard_port), "--temp-dir",
             str(self.temp_dir)],
            num_cpus, env,
        )  # fmt: skip
        self.wait_nodes(1)

    def add_node(self, num_cpus: int, env: dict[str, str] | None = None) -> None:
        self._start(f"ray-node{len(self.servers)}", ["--address", self.gcs], num_cpus, env)
        self.wait_nodes(len(self.servers))

    def api(self, path: str) -> Any:
        status, body = http_json(f"{self.dashboard}{path}", self.token)
        if status != 200:
            raise ValueError(f"GET {path}: HTTP {status}")
        return body

    def nodes(self) -> list[dict[str, Any]]:
        found = self.api("/api/v0/nodes?limit=100")["data"]["result"]["result"]
        return [n for n in found if n["state"] == "ALIVE"]

    def wait_nodes(self, n: int) -> None:
        def ready() -> list[dict[str, Any]] | None:
            dead = [s.cmd[2:4] for s in self.servers if not s.running()]
            if dead:
                pytest.fail(
                    f"`ray start` exited early: {dead}\n" + "\n".join(map(tail, self.logs()))
                )
            found = self.nodes()
            return found if len(found) >= n else None

        wait_for(f"{n} live Ray node(s)", ready, 180, self.logs())

    def stop(self) -> None:
        left = {s.log.name: s.stop() for s in reversed(self.servers)}  # workers first, head last
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        assert not any(left.values()), f"processes left running: {left}"


@pytest.fixture()
def ray_cluster(tmp_path: Path) -> Iterator[RayCluster]:
    cluster = RayCluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


def trial_runs(uri: str, experiment: str) -> tuple[Any, list[Any]]:
    """The one parent run of ``experiment`` and its nested trial runs."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweeps.role") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    trials = [r for r in runs if r.data.tags.get("sweeps.role") == "trial"]
    for r in trials:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
    return parent, trials


# -- several nodes on one machine -----------------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_spreads_its_trials_over_two_nodes(
    tmp_path: Path, ray_cluster: RayCluster, mlflow_store: Callable[[Path], str]
) -> None:
    # One CPU each. Through each node's environment, the test fault injector makes a trial mark
    # its node's arrival at epoch 2 and wait there for the other node's: no trial passes epoch 2
    # unless both nodes run one at once, so a sweep that ends proves the spread. (Without it a
    # fast trial could end before the other node's worker is up, and Tune would reuse its actor.)
    head_at, node_at = tmp_path / "head-at-epoch-2", tmp_path / "node-at-epoch-2"
    ray_cluster.start_head(num_cpus=1, env={FAULT_ENV: f"epoch=2,touch={head_at},until={node_at}"})
    ray_cluster.add_node(num_cpus=1, env={FAULT_ENV: f"epoch=2,touch={node_at},until={head_at}"})
    nodes = {n["node_id"]: n for n in ray_cluster.nodes()}
    assert len(nodes) == 2 and sum(n["is_head_node"] for n in nodes.values()) == 1
    # Token authentication is on: the dashboard refuses a request without the token.
    assert http_json(f"{ray_cluster.dashboard}/api/v0/nodes")[0] == 401

    uri = mlflow_store(tmp_path / "mlflow.db")
    storage = tmp_path / "ray_results"  # one machine: a local path is shared storage
    proc = run(
        cli("sweeps.run", "digits_lr", "--address", ray_cluster.gcs, "--tracking-uri", uri,
            "--storage", str(storage), "--max-concurrent", "2", *sets(SPREAD)),
        ray_cluster.env, tmp_path, timeout=300,  # a trial alone would wait at epoch 2 for ever
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:] + "\n".join(map(tail, ray_cluster.logs()))

    # Two trials, each in its own process from start to end (no actor reused for both).
    pids: dict[str, set[int]] = {}
    for f in storage.rglob("result.json"):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            pids.setdefault(row["trial_id"], set()).add(int(row["pid"]))
    assert len(pids) == 2 and all(len(p) == 1 for p in pids.values()), pids
    assert len(set.union(*pids.values())) == 2, pids
    assert head_at.exists() and node_at.exists()

    parent, trials = trial_runs(uri, "digits_lr")
    assert parent.info.status == "FINISHED"
    assert sorted(r.data.tags["sweeps.status"] for r in trials) == ["completed", "completed"]
    assert all(int(r.data.metrics["epochs_used"]) == 40 for r in trials)


# -- the Ray Jobs API -----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_refused_token_and_the_dashboards_port_are_one_line_each(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    ray_cluster.start_head(num_cpus=1)
    tiny = [*cli("sweeps.run", "digits_lr"), *sets(TINY)]
    wrong = {**ray_cluster.env, "RAY_AUTH_TOKEN": "0" * 64}
    proc = run([*tiny, "--address", ray_cluster.gcs], wrong, tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    # Before: ~20 of Ray's log lines, then "must be reachable, but Failed to connect".
    assert proc.stderr.strip() == (
        f"error: --address: the Ray cluster at '{ray_cluster.gcs}' must accept this client's "
        "token (set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or "
        "~/.ray/auth_token), but it refused it"
    ), proc.stderr[-3000:]
    port = ray_cluster.dashboard.rsplit(":", 1)[1]
    t0 = time.monotonic()
    proc = run([*tiny, "--address", f"127.0.0.1:{port}"], ray_cluster.env, tmp_path, timeout=180)
    assert proc.returncode == 2 and time.monotonic() - t0 < 60, proc.stderr[-3000:]
    assert "an HTTP server answers there (the dashboard's?)" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_local_sweep_starts_its_own_ray_beside_a_ray_start_cluster(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    # Left to itself, ray.init joins the cluster `ray start` last wrote to the machine's Ray temp
    # folder, and refuses the settings of a local instance: a traceback, before the fix.
    ray_cluster.start_head(num_cpus=1)
    ray_tmp = Path(tempfile.mkdtemp(prefix="sw-t-", dir="/tmp"))
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(ray_cluster.gcs)
        code = (
            "import ray, sweeps.cluster as c\n"
            "started = c.start_ray(None)\n"
            "cpus = ray.cluster_resources()['CPU']\n"
            "print(started, ray.get_runtime_context().gcs_address, cpus)\n"
            "ray.shutdown()\n"
        )
        env = {**ray_cluster.env, "RAY_TMPDIR": str(ray_tmp)}
        proc = run([sys.executable, "-c", code], env, tmp_path, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        started, gcs, cpus = proc.stdout.split()
        assert started == "True" and gcs != ray_cluster.gcs, proc.stdout
        assert float(cpus) == os.cpu_count()  # the local instance's, not the 1-CPU head's
        # The cluster is untouched: its head runs on and its GCS listens. (Not asked through its
        # dashboard: in one CI run the dashboard refused connections here, cause unknown.)
        assert ray_cluster.servers[0].running(), tail(ray_cluster.servers[0].log)
        socket.create_connection(("127.0.0.1", ray_cluster.gcs_port), timeout=10).close()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def job_id_of(stderr: str) -> str:
    m = re.search(r"^submitted job (\S+): ", stderr, re.M)
    assert m, stderr[-3000:]
    return m.group(1)


@pytest.mark.slow
def test_submit_runs_a_sweep_as_a_ray_job(
    tmp_path: Path, ray_cluster: RayCluster, mlflow_store: Callable[[Path], str]
) -> None:
    ray_cluster.start_head(num_cpus=2)
    dash, env = ray_cluster.dashboard, ray_cluster.env
    uri = mlflow_store(tmp_path / "mlflow.db")
    common = ["--address", dash, "--tracking-uri", uri, "--storage", str(tmp_path / "results")]

    # A spec file from outside the project, with its own trainable from outside it too (which
    # the cluster lacked: ModuleNotFoundError on every node), submitted and followed: the job's
    # log streams here, the exit code is the job's outcome.
    spec_file = tmp_path / "elsewhere" / "tiny_digits.yaml"
    spec_file.parent.mkdir()
    user_code = tmp_path / "user_code"
    user_code.mkdir()
    (user_code / "user_fit.py").write_text(
        "from trainables import train_loop\n\n"
        "def fit(config, report, checkpoint=None):\n"
        "    return train_loop(config, report, checkpoint)\n"
    )
    sets = [*TINY, "name=tiny_digits", "tracking.experiment=tiny_digits", "trainable=user_fit:fit"]
    spec_file.write_text(load_spec("digits_lr", sets).to_yaml())
    proc = run(
        cli("sweeps.submit", str(spec_file), *common, "--max-concurrent", "2"),
        {**env, "PYTHONPATH": os.pathsep.join([str(user_code), env.get("PYTHONPATH", "")])},
        tmp_path,
    )
    logs = ray_cluster.logs() + list((ray_cluster.temp_dir / "session_latest/logs").glob("job-*"))
    assert proc.returncode == 0, proc.stderr[-4000:] + "\n".join(map(tail, logs))
    job_id = job_id_of(proc.stderr)
    assert job_id.startswith("tiny_digits-")
    assert "python -m sweeps.run _submitted_specs/tiny_digits.yaml" in proc.stderr
    assert f"uploading {user_code / 'user_fit.py'} too" in proc.stderr
    assert f"job {job_id} SUCCEEDED" in proc.stderr
    assert f"dashboard: {dash}/#/jobs/{job_id}" in proc.stderr
    assert "best trial per family" in proc.stdout and "verdict: " in proc.stdout

    # The cluster's own record of the job.
    info = ray_cluster.api(f"/api/jobs/{job_id}")
    assert info["status"] == "SUCCEEDED"
    env_vars = info["runtime_env"]["env_vars"]
    assert env_vars["MLFLOW_TRACKING_URI"] == uri and env_vars["PYTHONUNBUFFERED"] == "1"
    assert not any(k.startswith("RAY_AUTH") for k in env_vars)  # the token stays with us

    parent, trials = trial_runs(uri, "tiny_digits")
    assert parent.info.status == "FINISHED" and len(trials) == 2
    assert "report/report.md" in {
        a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id, "report")
    }

    # What was uploaded: the project's code, not its environment, history, data or outputs.
    (pkg,) = [
        p
        for p in ray_cluster.temp_dir.glob("session_latest/runtime_resources/working_dir_files/*")
        if p.is_dir()
    ]
    assert (pkg / "sweeps" / "run.py").is_file() and (pkg / "trainables").is_dir()
    for name in (".venv", ".git", "mlflow.db", ".mypy_cache", "sweeps.egg-info"):
        assert not (pkg / name).exists(), name
    job_outputs = ("mlruns", "sweeps_results")  # written there by the job itself
    files = [
        f for f in pkg.rglob("*") if f.is_file() and f.relative_to(pkg).parts[0] not in job_outputs
    ]
    assert not [f for f in files if f.suffix in (".csv", ".db", ".zip")]
    assert sum(f.stat().st_size for f in files) < 3 * 2**20

    # A built-in sweep, without waiting, that fails on the cluster (its data is not there; the
    # job's own check fails in seconds); then --status and --logs.
    missing = tmp_path / "missing" / "cardio_train.csv"
    broken = ["--set", "dataset.name=cardio", "--set", f"dataset.path={missing}"]
    proc = run(cli("sweeps.submit", "digits_lr", *common, *broken, "--no-wait"), env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job2 = proc.stdout.strip()
    assert job2 == job_id_of(proc.stderr) and job2.startswith("digits_lr-")
    entrypoint = ray_cluster.api(f"/api/jobs/{job2}")["entrypoint"]
    assert entrypoint.startswith("python -m sweeps.run digits_lr --set ")

    def finished() -> str | None:
        status = run(cli("sweeps.submit", "--address", dash, "--status", job2), env, tmp_path)
        line = status.stdout.strip()
        assert line.startswith(f"{job2}: "), line
        ended = line.split()[1] in ("SUCCEEDED", "FAILED", "STOPPED")
        assert status.returncode == (1 if line.split()[1] in ("FAILED", "STOPPED") else 0), line
        return line if ended else None

    final = wait_for(f"job {job2} to end", finished, 420, logs)
    assert final.split()[1] == "FAILED", final
    assert not final.endswith(":)"), final  # Ray's message, cut before its log lines
    shown = run(cli("sweeps.submit", "--address", dash, "--logs", job2), env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "dataset.path: the file must exist" in shown.stdout, shown.stdout[-3000:]

    # The same failure, followed: exit 1 with the job's one-line error.
    proc = run(cli("sweeps.submit", "digits_lr", *common, *broken), env, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "dataset.path: the file must exist" in proc.stdout  # the job's own one-line error
    assert re.search(r"job \S+ FAILED: Job entrypoint command failed with exit code 2", proc.stderr)

    # Answers that are the user's mistake: exit 2, one line, no traceback.
    for args, extra_env, needle in [
        (["--status", "no-such-job"], {}, "job id 'no-such-job': must name a job"),
        (["--logs", "no-such-job"], {}, "job id 'no-such-job': must name a job"),
        (["--status", job2], {"RAY_AUTH_TOKEN": "not-the-token"}, "must accept this client's"),
    ]:
        proc = run(cli("sweeps.submit", "--address", dash, *args), {**env, **extra_env}, tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nosuch_sweep"], "sweep 'nosuch_sweep': must be a built-in sweep"),
        (["digits_lr", "--set", "train.epochs=0"], "train.epochs:"),
        (["digits_lr", "--max-concurrent", "0"], "--max-concurrent: `N >= 1` must hold"),
        (["digits_lr", "--address", "ray://head:10001"], "--address: the Ray dashboard's"),
        (["digits_lr", "--env", "NO_SUCH_VARIABLE_HERE"], "--env NO_SUCH_VARIABLE_HERE: must be"),
        (["digits_lr", "--address", "http://127.0.0.1:{port}"], "must be reachable"),
    ],
)
def test_submit_user_errors_exit_2_before_anything_is_uploaded(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    (port,) = free_ports(1)  # nothing listens there
    args = [a.format(port=port) for a in args]
    proc = run(cli("sweeps.submit", *args), base_env("t"), tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


# -- an MLflow server on PostgreSQL ---------------------------------------------------------------
def with_driver(uri: str, driver: str = "") -> str:
    """``uri`` as ``postgresql+DRIVER://``, or a plain ``postgresql://`` (SQLAlchemy 2.1: psycopg
    3). The postgres extra installs psycopg 3 and psycopg2, which docker/compose.yaml names."""
    return re.sub(
        r"^postgres(ql)?(\+\w+)?://", f"postgresql{'+' + driver if driver else ''}://", uri
    )


def pg_bindir() -> Path | None:
    """PostgreSQL's own bin directory (Debian puts only wrappers and links on PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,  # 9 < 15
    )
    return candidates[-1].parent if candidates else None


@pytest.fixture()
def postgres_uri() -> Iterator[str]:
    """$SWEEPS_TEST_PG_URI (CI starts one), else a PostgreSQL of our own on 127.0.0.1."""
    given = os.environ.get("SWEEPS_TEST_PG_URI")
    if given:
        yield with_driver(given)
        return
    bindir = pg_bindir()
    tools = {n: bindir / n if bindir else None for n in ("initdb", "pg_ctl", "createdb")}
    if not all(t is not None and t.is_file() for t in tools.values()):
        if IN_CI:
            pytest.fail(f"CI needs PostgreSQL's binaries or SWEEPS_TEST_PG_URI; missing {tools}")
        pytest.skip("PostgreSQL's binaries are not here (and SWEEPS_TEST_PG_URI is not set)")
    base = Path(tempfile.mkdtemp(prefix="sw-pg-", dir="/tmp"))  # holds the unix socket too
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run PostgreSQL as `nobody`
        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    data, log = base / "data", base / "postgres.log"
    (port,) = free_ports(1)

    def pg(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*as_user, *args], cwd=base, capture_output=True, text=True, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            pytest.fail(f"{args[0]} failed ({proc.returncode}): {proc.stderr}\n{tail(log)}")
        return proc

    started = False
    try:
        pg(str(tools["initdb"]), "-D", str(data), "-U", "sweeps", "--auth=trust", "-E", "UTF8")
        pg(str(tools["pg_ctl"]), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
           f"-c listen_addresses=127.0.0.1 -p {port} -k {base}", "start")  # fmt: skip
        started = True
        pg(str(tools["createdb"]), "-h", "127.0.0.1", "-p", str(port), "-U", "sweeps", "mlflow")
        yield f"postgresql://sweeps@127.0.0.1:{port}/mlflow"
    finally:
        if started:
            pg(str(tools["pg_ctl"]), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop",
               check=False)  # fmt: skip
        pid_file = data / "postmaster.pid"
        if pid_file.exists():  # still up: end the postmaster by its id
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_a_sweep_logs_to_an_mlflow_server_on_postgres(tmp_path: Path, postgres_uri: str) -> None:
    (port,) = free_ports(1)
    server_uri = f"http://127.0.0.1:{port}"
    artifacts = tmp_path / "artifacts"
    env = {**base_env(secrets.token_hex(32)), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = Server(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", postgres_uri,
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        tmp_path / "mlflow-server.log", env, tmp_path,
    )  # fmt: skip
    try:

        def healthy() -> bool | None:
            if not server.running():
                pytest.fail(f"mlflow server exited ({server.popen.returncode})\n{tail(server.log)}")
            with urllib.request.urlopen(f"{server_uri}/health", timeout=5) as r:
                return True if r.status == 200 else None

        wait_for("the MLflow server's /health", healthy, 180, [server.log])
        experiment = f"pg-{secrets.token_hex(4)}"  # a shared database may hold earlier runs
        proc = run(
            cli("sweeps.run", "digits_lr", "--tracking-uri", server_uri, "--storage",
                str(tmp_path / "results"), "--max-concurrent", "2",
                *sets([*TINY, f"tracking.experiment={experiment}"])),
            env, tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:] + "\n" + tail(server.log)
        assert f"open {server_uri} in a browser" in proc.stdout

        # A separate client, through the server only.
        client = MlflowClient(server_uri)
        parent, trials = trial_runs(server_uri, experiment)
        assert parent.info.status == "FINISHED" and len(trials) == 2
        assert all(r.data.tags["sweeps.status"] in ("completed", "stopped") for r in trials)
        assert all(len(client.get_metric_history(r.info.run_id, "val_acc")) >= 1 for r in trials)
        reevals = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
            "and tags.`sweeps.role` = 'reeval'",
        )
        assert len(reevals) == 1 and 0.5 < reevals[0].data.metrics["test_acc"] <= 1.0
        report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
        assert {"report/report.md", "report/report.html", "report/lr_curves.png"} <= report
        md = Path(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path)))
        assert "| fixed |" in md.read_text()
        # The server proxied the artifacts into its destination, and the runs are in PostgreSQL.
        assert list(artifacts.rglob("report.md"))
        engine = sqlalchemy.create_engine(with_driver(postgres_uri, "psycopg2"))  # the other driver
        try:
            with engine.connect() as conn:
                n = conn.execute(
                    sqlalchemy.text(
                        "select count(*) from runs r join experiments e "
                        "on r.experiment_id = e.experiment_id where e.name = :name"
                    ),
                    {"name": experiment},
                ).scalar_one()
        finally:
            engine.dispose()
        assert n == 1 + len(trials) + len(reevals)
    finally:
        assert not server.stop(), "the MLflow server left processes running"
