"""A spec's own ``module:function`` trainable runs in the trials and the re-evaluation."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.custom import load_trainable
from sweeps.errors import SweepsError
from sweeps.spec import load_spec
from sweeps.submit import PACKAGES, trainable_modules, working_dir
from trainables import train_loop

USER_MODULE = """
import os, uuid
from pathlib import Path

from trainables import train_loop


def fit(config, report, checkpoint=None):
    # Leaves a mark per call, so the test can count where it ran.
    Path(os.environ["MARKS"], f"{config['family']}-{config['seed']}-{uuid.uuid4().hex}").touch()
    if str(config["seed"]) == os.environ.get("FAIL_SEED"):
        raise RuntimeError(f"seed {config['seed']} refuses to train")
    mode = os.environ.get("MODE")
    if mode == "silent":
        return None
    if mode == "renamed":  # "accuracy" for "val_acc"
        return train_loop(config, lambda m, s: report(
            {("accuracy" if k == "val_acc" else k): v for k, v in m.items()}, s), checkpoint)
    if mode == "nan":
        nan = float("nan")
        return train_loop(config, lambda m, s: report({**m, "val_acc": nan}, s), checkpoint)
    return train_loop(config, report, checkpoint)
"""


def test_no_trainable_means_train_loop() -> None:
    assert load_trainable(None) is train_loop
    assert load_spec("digits_lr").trainable is None


def test_a_trainable_that_is_not_a_function_is_refused() -> None:
    with pytest.raises(SweepsError, match=r"trainable: 'os:sep' must be a function"):
        load_trainable("os:sep")
    with pytest.raises(SweepsError, match=r"'os:no_such' must name an importable"):
        load_trainable("os:no_such")
    # No checkpoint parameter: every trial failed with a TypeError, retried twice.
    with pytest.raises(
        SweepsError,
        match=r"^trainable: 'os.path:join' must take \(config, report, checkpoint=None\), but "
        r"its signature is join\(a, \*p\)$",
    ):
        load_trainable("os.path:join")
    assert load_trainable("trainables.train_loop:train_loop") is train_loop


def run_custom(
    tmp_path: Path, uri: str, *extra: str, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    """``sweeps.run`` of a small digits sweep through ``my_trainable:fit``."""
    (tmp_path / "user_code").mkdir(exist_ok=True)
    (tmp_path / "user_code" / "my_trainable.py").write_text(USER_MODULE)
    (tmp_path / "marks").mkdir(exist_ok=True)
    sets = ["trainable=my_trainable:fit", "search.families=[fixed]", "search.trials_per_family=2",
            "train.epochs=3", "early_stopping.name=none", "reeval.seeds=2"]  # fmt: skip
    args = [sys.executable, "-m", "sweeps.run", "digits_lr", "--tracking-uri", uri, *extra]
    for s in sets:
        args += ["--set", s]
    env = {**os.environ, "RAY_ADDRESS": "", "MARKS": str(tmp_path / "marks"), **env_vars,
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "user_code"),
                                          os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    return subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow
def test_custom_trainable_runs_trials_and_reevaluation(
    tmp_path: Path, mlflow_store: Callable[[Path], str]
) -> None:
    uri = mlflow_store(tmp_path / "mlflow.db")
    marks = tmp_path / "marks"
    proc = run_custom(tmp_path, uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in marks.iterdir())
    # Two trials (tuning seed 0) and two re-evaluation seeds (1000, 1001) went through it.
    assert [n.rsplit("-", 1)[0] for n in names] == [
        "fixed-0", "fixed-0", "fixed-1000", "fixed-1001"
    ]  # fmt: skip
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("digits_lr")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweeps.role") == "sweep")
    assert parent.data.params["trainable"] == "my_trainable:fit"
    reevals = [r for r in runs if r.data.tags.get("sweeps.role") == "reeval"]
    assert len(reevals) == 2 and all(0.5 < r.data.metrics["test_acc"] <= 1 for r in reevals)


@pytest.mark.slow
def test_a_failed_reevaluation_run_is_logged_and_resume_redoes_only_it(
    tmp_path: Path, mlflow_store: Callable[[Path], str]
) -> None:
    uri = mlflow_store(tmp_path / "mlflow.db")
    proc = run_custom(tmp_path, uri, FAIL_SEED="1001")
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: 1 of 2 re-evaluation runs failed (first: fixed seed 1001: RuntimeError: seed "
        "1001 refuses to train); the report leaves them out and the parent run is marked FAILED"
    ), proc.stderr[-3000:]
    assert last.endswith("--resume") and "Traceback" not in proc.stderr
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("digits_lr")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweeps.role") == "sweep")
    assert parent.info.status == "FAILED"
    reevals = {
        r.data.tags["sweeps.seed"]: r for r in runs if r.data.tags.get("sweeps.role") == "reeval"
    }
    assert reevals["1001"].info.status == "FAILED"
    assert reevals["1001"].data.tags["sweeps.error"] == "RuntimeError: seed 1001 refuses to train"
    assert reevals["1000"].info.status == "FINISHED"
    md = Path(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path)))
    assert (
        "- reeval-fixed-1-s1001 failed: RuntimeError: seed 1001 refuses to train" in md.read_text()
    )

    searched = parent.data.metrics["search_seconds/fixed"]
    assert searched > 0

    again = run_custom(tmp_path, uri, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    # The resumed search had nothing left to train: its seconds add to the first run's.
    assert parent.data.metrics["search_seconds/fixed"] >= searched
    seeds = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "marks").iterdir())
    # The trials and seed 1000 ran once; seed 1001 twice (failed, then redone).
    assert seeds == ["fixed-0", "fixed-0", "fixed-1000", "fixed-1001", "fixed-1001"], seeds
    done = [
        r.data.tags["sweeps.seed"]
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("sweeps.role") == "reeval" and r.info.status == "FINISHED"
    ]
    assert sorted(done) == ["1000", "1001"]
    # The redone run replaces the failed one in the rebuilt report.
    md = Path(
        client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path / "2"))
    )
    assert "Failed runs" not in md.read_text() and "(2/2)" in md.read_text()
    assert "failed run: " not in again.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [
        ("renamed", "failed",
         "TrainableContractError: trainable my_trainable:fit: report() must be given epoch, "
         "val_acc, status, but got no val_acc (keys: accuracy, epoch, "),
        ("silent", "failed",
         "TrainableContractError: trainable my_trainable:fit: report(metrics, state) must be "
         "called once per epoch, but it returned without a report"),
        ("nan", "diverged", None),
    ],
)  # fmt: skip
def test_a_trainable_that_breaks_the_report_contract_fails_its_trials_not_the_sweep(
    tmp_path: Path, mlflow_store: Callable[[Path], str], mode: str, status: str, error: str | None
) -> None:
    # Tune's own metric check ended the whole sweep with a 70-line traceback.
    uri = mlflow_store(tmp_path / "mlflow.db")
    proc = run_custom(tmp_path, uri, "--set", "failure.max_retries=0", MODE=mode)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("digits_lr")
    assert exp is not None
    trials = [r for r in client.search_runs([exp.experiment_id])
              if r.data.tags.get("sweeps.role") == "trial"]  # fmt: skip
    assert len(trials) == 2
    assert {r.data.tags["sweeps.status"] for r in trials} == {status}
    if error is not None:
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert all(r.data.tags["sweeps.error"].startswith(error) for r in trials), [
            r.data.tags["sweeps.error"] for r in trials
        ]
        assert "every trial of every family failed" in proc.stderr
    else:
        assert all(r.data.metrics["final_val_acc"] == 0.0 for r in trials)
        assert all(r.data.metrics["epochs_used"] == 1 for r in trials)  # ended at once


def test_a_trainable_from_outside_the_project_travels_with_a_submitted_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job's nodes lacked it: every trial failed with ModuleNotFoundError.
    fit = "def fit(config, report, checkpoint=None):\n    pass\n"
    (tmp_path / "solo.py").write_text(fit)
    pkg = tmp_path / "mypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__pycache__").mkdir()
    for f, text in (("__init__.py", ""), ("sub/__init__.py", ""), ("sub/train.py", fit),
                    ("__pycache__/x.pyc", "")):  # fmt: skip
        (pkg / f).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert trainable_modules("solo:fit") == [(tmp_path / "solo.py").resolve()]
    assert trainable_modules("mypkg.sub.train:fit") == [pkg.resolve()]
    # Inside the project (uploaded anyway), installed, standard library, or not importable here.
    for entry in (None, "trainables.train_loop:train_loop", "torch.nn:Module", "json:loads",
                  "no_such_module_here:fit"):  # fmt: skip
        assert trainable_modules(entry) == [], entry

    with working_dir("digits_lr", extra=[pkg, tmp_path / "solo.py"]) as wd:
        assert wd.spec_arg == "digits_lr" and (wd.path / "sweeps" / "run.py").is_file()
        assert (wd.path / "mypkg" / "sub" / "train.py").read_text() == fit
        assert (wd.path / "solo.py").is_file() and not (wd.path / "mypkg" / "__pycache__").exists()
    (tmp_path / "docs.py").write_text(fit)
    with (
        pytest.raises(SweepsError, match=r"must not share its name with a top-level entry"),
        working_dir("digits_lr", extra=[tmp_path / "docs.py"]),
    ):
        pass


def test_a_trainable_travels_under_its_import_name_whatever_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A namespace package was refused for lacking __init__.py, a linked module was staged under
    # its target's name, and one in an ignored folder of the checkout was never uploaded.
    fit = "def fit(config, report, checkpoint=None):\n    pass\n"
    (tmp_path / "nspkg").mkdir()
    (tmp_path / "nspkg" / "train.py").write_text(fit)
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "impl_v2.py").write_text(fit)
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "myfit.py").symlink_to(tmp_path / "real" / "impl_v2.py")
    proj = tmp_path / "proj"
    for d in (*PACKAGES, "build"):
        (proj / d).mkdir(parents=True)
    (proj / "pyproject.toml").write_text("")
    (proj / ".gitignore").write_text("build/\nscratch_fit.py\n")
    for f in ("rootfit.py", "scratch_fit.py", "build/built_fit.py"):
        (proj / f).write_text(fit)
    for folder in (tmp_path, tmp_path / "links", proj, proj / "build"):
        monkeypatch.syspath_prepend(str(folder))
    assert trainable_modules("myfit:fit") == [tmp_path / "links" / "myfit.py"]
    assert trainable_modules("nspkg.train:fit") == [tmp_path / "nspkg"]
    assert trainable_modules("rootfit:fit", root=proj) == []  # uploaded, at the top
    # A package at the top: an ignored file in it does not make the entry travel apart.
    (proj / ".gitignore").write_text("build/\nscratch_fit.py\n_gen.py\n")
    for f in ("__init__.py", "userfit.py", "_gen.py"):
        (proj / "toppkg" / f).parent.mkdir(exist_ok=True)
        (proj / "toppkg" / f).write_text(fit)
    importlib.invalidate_caches()
    assert importlib.util.find_spec("toppkg") is not None  # found, so [] means "uploaded"
    assert trainable_modules("toppkg.userfit:fit", root=proj) == []
    assert trainable_modules("scratch_fit:fit", root=proj) == [proj / "scratch_fit.py"]
    assert trainable_modules("built_fit:fit", root=proj) == [proj / "build" / "built_fit.py"]
    with working_dir(
        "digits_lr", extra=[tmp_path / "nspkg", tmp_path / "links" / "myfit.py"]
    ) as wd:
        assert (wd.path / "nspkg" / "train.py").read_text() == fit
        assert (wd.path / "myfit.py").read_text() == fit and not (wd.path / "impl_v2.py").exists()
