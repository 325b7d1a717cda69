"""End to end with a real local Ray instance and a real MLflow sqlite store."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

import sweeps.sweep as sweep_module
from sweeps import cluster
from sweeps.reeval import Reevaluation
from sweeps.run import main as run_main
from sweeps.spec import load_spec
from sweeps.sweep import RunOptions, run_sweep
from sweeps.tracking import TRIAL_STATUSES

REPO = Path(__file__).resolve().parents[2]


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sweeps.run", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def dataset_overrides(ds: dict[str, Any]) -> list[str]:
    return [f"dataset.{k}={v}" for k, v in ds.items() if k != "name"]


def record_ray_processes(
    monkeypatch: pytest.MonkeyPatch, caller: Any = sweep_module
) -> list[subprocess.Popen[bytes]]:
    """The processes of the local Ray instance that ``caller.start_ray`` starts next (raylet,
    GCS, ...)."""
    procs: list[subprocess.Popen[bytes]] = []
    real = caller.start_ray

    def start_ray(address: str | None) -> bool:
        started = real(address)
        node = ray._private.worker._global_node
        assert started and node is not None
        procs.extend(info.process for infos in node.all_processes.values() for info in infos)
        return started

    monkeypatch.setattr(caller, "start_ray", start_ray)
    return procs


def shutdown_under_way() -> bool:
    """Ray's shutdown has started in its thread, or is over (the report need not wait for it),
    and Python's GC is off meanwhile: a Ray handle that a collection frees while Ray's core
    worker is torn down ends the process ("The core worker has already been shutdown")."""
    shutting = any(t.name.startswith("sweeps-ray-shutdown") for t in threading.enumerate())
    return (shutting or not ray.is_initialized()) and not gc.isenabled()


def assert_ray_gone(procs: list[subprocess.Popen[bytes]]) -> None:
    assert not ray.is_initialized()
    assert gc.isenabled()  # back on once Ray is down
    assert procs and [p.args for p in procs if p.poll() is None] == []


# A digits sweep of two 3-epoch trials and one re-evaluation run.
TINY = ["search.families=[fixed]", "search.trials_per_family=2", "train.epochs=3", "reeval.seeds=1"]


def runs_by_role(uri: str, experiment: str) -> dict[str, list[Any]]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    out: dict[str, list[Any]] = {}
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        out.setdefault(r.data.tags.get("sweeps.role", "?"), []).append(r)
    return out


@pytest.mark.slow
def test_cardio_clr_small_run_through_the_cli(
    tmp_path: Path, cardio_dataset: dict[str, Any]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = ["search.trials_per_family=2", "train.epochs=6", "reeval.seeds=2"]
    # The file by a path relative to the CLI's working directory: Ray's workers run elsewhere.
    source = cardio_dataset.get("path") or Path(os.environ["SWEEPS_DATA_DIR"], "cardio_train.csv")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cardio.csv").symlink_to(source)
    sets += dataset_overrides({**cardio_dataset, "path": "data/cardio.csv"})
    args = ["cardio_clr", "--tracking-uri", uri]
    for s in sets:
        args += ["--set", s]
    proc = cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"mlflow ui --backend-store-uri {uri}" in proc.stdout
    assert "best trial per family" in proc.stdout

    runs = runs_by_role(uri, "cardio_clr")
    (parent,) = runs["sweep"]
    trials = runs["trial"]
    assert len(trials) == 12
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweeps.name"] == "cardio_clr"
    assert len(parent.data.tags["sweeps.spec_hash"]) == 16
    assert parent.data.params["train.epochs"] == "6"
    assert parent.data.metrics["wall_seconds"] > 0
    assert sum(parent.data.metrics[f"trials/{s}"] for s in TRIAL_STATUSES) == 12
    client = MlflowClient(uri)
    top = sorted(a.path for a in client.list_artifacts(parent.info.run_id))
    assert top == ["report", "spec.yaml"]
    report_files = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert report_files == {
        f"report/{n}"
        for n in ("report.md", "report.html", "lr_curves.png", "val_acc_bands.png",
                  "lr_vs_val_acc.png", "test_acc.png", "epochs_used.png")
    }  # fmt: skip
    assert "verdict: " in proc.stdout

    # Re-evaluation: every family's best config, 2 seeds each, scored on the test split.
    reevals = runs["reeval"]
    assert len(reevals) == 6 * 2
    for r in reevals:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert 0.0 <= r.data.metrics["test_acc"] <= 1.0  # a diverged seed may sit below 0.5
        assert len(client.get_metric_history(r.info.run_id, "val_acc")) == 6
        # It is logged once it has ended, and still spans the seconds it trained.
        span_ms = r.info.end_time - r.info.start_time
        assert abs(span_ms - 1000 * r.data.metrics["train_seconds"]) < 1000, span_ms
        assert r.data.metrics["train_seconds"] > 0
        # Its rates also in the tag its creation writes, should the params' write be lost.
        rates = json.loads(r.data.tags["sweeps.config"])
        assert rates and {k: str(v) for k, v in rates.items()}.items() <= r.data.params.items()
    assert {r.data.tags["sweeps.seed"] for r in reevals} == {"1000", "1001"}

    # The report rebuilt from MLflow alone has the very same table.
    md = Path(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path)))
    logged_table = [line for line in md.read_text().splitlines() if line.startswith("|")]
    out = tmp_path / "rebuilt"
    rebuilt = subprocess.run(
        [sys.executable, "-m", "sweeps.report", "cardio_clr", "--tracking-uri", uri,
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    (tmp_path / "taken").touch()
    refused = subprocess.run(
        [sys.executable, "-m", "sweeps.report", "cardio_clr", "--tracking-uri", uri,
         "--out", str(tmp_path / "taken")],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("error: --out: ") and "Traceback" not in refused.stderr
    table = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("|")]
    assert table == logged_table and len(table) == 2 + 6
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    families: dict[str, int] = {}
    for r in trials:
        tags = r.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["sweeps.status"] in TRIAL_STATUSES
        assert r.info.run_name.startswith(tags["sweeps.family"] + "-")
        families[tags["sweeps.family"]] = families.get(tags["sweeps.family"], 0) + 1
        hist = client.get_metric_history(r.info.run_id, "val_acc")
        assert [m.step for m in hist] == list(range(1, len(hist) + 1))
        assert len(hist) == int(r.data.metrics["epochs_used"])
        for key in ("train_loss", "val_loss", "lr", "epoch_seconds"):
            assert key in r.data.metrics
        if "step_size_epochs" in r.data.params:
            iters = int(r.data.params["iters_per_epoch"])
            assert (
                int(r.data.params["step_size_iters"])
                == int(r.data.params["step_size_epochs"]) * iters
            )
        key = f"best_val_acc/{tags['sweeps.family']}"
        assert parent.data.metrics[key] >= r.data.metrics["final_val_acc"] - 1e-9 or (
            tags["sweeps.status"] == "failed"
        )
    assert families == {f: 2 for f in load_spec("cardio_clr").families}


@pytest.mark.slow
def test_digits_high_rates_collapse_and_asha_stops_reach_optuna_as_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: Callable[[Path], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = mlflow_store(tmp_path / "mlflow.db")
    # A seeded random sampler draws two rates above 0.7 among six (checked by the asserts).
    spec = load_spec(
        "digits_lr",
        ["search.families=[fixed]", "search.trials_per_family=6", "sampler.name=random",
         "train.epochs=12", "early_stopping.grace_period=3"],
    )  # fmt: skip
    # The family's re-evaluation starts inside the search, as its last trial ends.
    searching = [False]
    started: list[tuple[str, bool]] = []
    real_search, real_start = sweep_module.run_search, Reevaluation.start

    def search(*args: Any, **kwargs: Any) -> Any:
        searching[0] = True
        try:
            return real_search(*args, **kwargs)
        finally:
            searching[0] = False

    def start(self: Reevaluation, family: str, outcome: Any) -> None:
        started.append((family, searching[0]))
        real_start(self, family, outcome)

    monkeypatch.setattr(sweep_module, "run_search", search)
    monkeypatch.setattr(Reevaluation, "start", start)
    ray_procs = record_ray_processes(monkeypatch)
    ctrl_c = signal.getsignal(signal.SIGINT)
    result = run_sweep(spec, RunOptions(tracking_uri=uri, storage=str(tmp_path / "ray")))
    # Tune's SIGINT handler is gone with its search: Ctrl-C in the re-evaluation still stops.
    assert signal.getsignal(signal.SIGINT) is ctrl_c
    assert started[0] == ("fixed", True), started
    # Ray stops beside the report, and is gone, all its processes reaped, once run_sweep returns.
    assert result.report is not None
    assert_ray_gone(ray_procs)
    runs = runs_by_role(uri, "digits_lr")
    trials = runs["trial"]
    assert len(trials) == 6
    assert len(runs["reeval"]) == spec.reeval.top_k * spec.reeval.seeds
    assert all(0.0 <= r.data.metrics["test_acc"] <= 1.0 for r in runs["reeval"])
    failed_high = [r for r in trials if r.data.tags["sweeps.status"] in ("collapsed", "diverged")]
    assert failed_high, [(r.data.params, r.data.tags["sweeps.status"]) for r in trials]
    for r in failed_high:
        assert float(r.data.params["base_lr"]) > 0.3
        assert r.data.metrics["epochs_used"] < 12
        assert r.data.metrics["final_val_acc"] < 0.2
    # Every trial that ASHA stopped is PRUNED in the family's Optuna study, and only those.
    outcome = result.outcomes["fixed"]
    assert outcome.study is not None
    states = [t.state for t in outcome.study.trials]
    stopped = sum(1 for r in trials if r.data.tags["sweeps.status"] == "stopped")
    assert states.count(TrialState.PRUNED) == stopped
    assert states.count(TrialState.COMPLETE) == 6 - stopped
    # Every epoch reached the study keyed by epoch, though results carry several epochs; the
    # one a trial ends with is its value, or none if ASHA stopped it there (PRUNED).
    client = MlflowClient(uri)
    curves = [
        [m.value for m in client.get_metric_history(r.info.run_id, "val_acc")] for r in trials
    ]
    for t in outcome.study.trials:
        steps, values = list(t.intermediate_values), list(t.intermediate_values.values())
        assert steps == list(range(1, len(steps) + 1))
        matches = [c for c in curves if len(c) - 1 <= len(values) <= len(c)]
        assert any(c[: len(values)] == pytest.approx(values) for c in matches), values
    assert outcome.best_val_acc is not None and outcome.best_val_acc > 0.9


@pytest.mark.slow
def test_a_failed_report_fails_the_sweep_and_still_stops_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: Callable[[Path], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = mlflow_store(tmp_path / "mlflow.db")
    spec = load_spec("digits_lr", TINY)
    stopping: list[bool] = []

    def broken_report(client: MlflowClient, parent: str) -> Any:
        stopping.append(shutdown_under_way())
        raise OSError("disk full")

    monkeypatch.setattr(sweep_module, "build_and_log", broken_report)
    ray_procs = record_ray_processes(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        run_sweep(spec, RunOptions(tracking_uri=uri, storage=str(tmp_path / "ray")))
    assert stopping == [True]
    assert_ray_gone(ray_procs)
    runs = runs_by_role(uri, "digits_lr")
    assert [r.info.status for r in runs["sweep"]] == ["FAILED"]
    assert len(runs["reeval"]) == 1  # logged before the report


@pytest.mark.slow
def test_the_cli_leaves_the_ray_it_started_to_stop_beside_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: Callable[[Path], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = mlflow_store(tmp_path / "mlflow.db")
    stopping: list[bool] = []
    real_report = sweep_module.build_and_log

    def report(client: MlflowClient, parent: str) -> Any:
        stopping.append(shutdown_under_way())
        return real_report(client, parent)

    monkeypatch.setattr(sweep_module, "build_and_log", report)
    ray_procs = record_ray_processes(monkeypatch, cluster)  # the CLI starts Ray itself
    sets = [arg for s in TINY for arg in ("--set", s)]
    assert run_main(["digits_lr", "--tracking-uri", uri, *sets]) == 0
    assert stopping == [True]
    assert_ray_gone(ray_procs)


def test_list_and_dry_run_start_no_ray(tmp_path: Path) -> None:
    code = (
        "import sys; from sweeps.run import main; "
        "rc = main(sys.argv[1:]); assert 'ray' not in sys.modules, 'Ray was imported'; "
        "sys.exit(rc)"
    )
    ranged = ["cardio_clr", "--dry-run", "--set", "search.bounds=range_test"]
    for args in (["--list"], ["cardio_clr", "--dry-run"], ["digits_lr", "--dry-run"], ranged):
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
            check=False, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        if args == ["--list"]:
            assert "cardio_clr" in proc.stdout and "digits_lr" in proc.stdout
        else:
            assert "budget:" in proc.stdout and "ASHA grace" in proc.stdout
            assert "base_lr=" in proc.stdout
            note = "not from the spec's ranges the samples below use" in proc.stdout
            assert note == (args == ranged)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nosuch_sweep"], "sweep 'nosuch_sweep': must be a built-in sweep"),
        (["cardio_clr", "--set", "train.epochs=0"], "train.epochs:"),
        (["cardio_clr", "--set", "oops"], "--set: `dotted.key=value` syntax must hold"),
        (["cardio_clr", "--max-concurrent", "0"], "--max-concurrent: `N >= 1` must hold"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = cli(args, tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_range_test_bounds_are_derived_before_sampling_and_recorded(
    tmp_path: Path, mlflow_store: Callable[[Path], str]
) -> None:
    uri = mlflow_store(tmp_path / "mlflow.db")
    sets = ["search.bounds=range_test", "search.families=[fixed,triangular]",
            "search.trials_per_family=2", "train.epochs=3", "early_stopping.grace_period=2",
            "reeval.seeds=2"]  # fmt: skip
    args = ["digits_lr", "--tracking-uri", uri]
    for s in sets:
        args += ["--set", s]
    proc = cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_by_role(uri, "digits_lr")
    (parent,) = runs["sweep"]
    (lr_find,) = runs["lr_find"]
    assert lr_find.data.tags["mlflow.parentRunId"] == parent.info.run_id
    low = float(parent.data.params["range_test.base_lr.low"])
    high = float(parent.data.params["range_test.base_lr.high"])
    assert low < high
    suggested = lr_find.data.metrics["suggested_max_lr"]
    assert high == pytest.approx(suggested, rel=0.01)
    # Every trial sampled inside the derived range, not the spec's [1e-4, 3].
    for r in runs["trial"]:
        assert low <= float(r.data.params["base_lr"]) <= high
