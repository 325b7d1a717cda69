"""A catalogue of user mistakes, each through the real CLI: exit 2, one line naming the field, the
value and the rule, no traceback, and no MLflow run left RUNNING."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

GOOD_ROW = "0;18393;2;168;62.0;110;80;1;1;0;0;1;0"
HEADER = "id;age;gender;height;weight;ap_hi;ap_lo;cholesterol;gluc;smoke;alco;active;cardio"
FILES = {
    "bad.yaml": "name: x\nsearch: [unclosed\n",
    "short.csv": f"{HEADER}\n{GOOD_ROW}\n",  # valid schema, not Kaggle's checksum
    "columns.csv": "a;b;c\n1;2;3\n",
    "empty.csv": "",
    "text.csv": f"{HEADER}\n{GOOD_ROW.replace('168', 'tall')}\n",
    "label.csv": f"{HEADER}\n{GOOD_ROW[: GOOD_ROW.rindex(';')]};7\n",
}
TINY = ["--set", "search.trials_per_family=1", "--set", "train.epochs=2",
        "--set", "early_stopping.grace_period=1"]  # fmt: skip

# (id, argv with {tmp} for the case's folder, words the one line must hold)
CASES: list[tuple[str, list[str], list[str]]] = [
    ("yaml-syntax", ["{tmp}/bad.yaml"], ["bad.yaml", "YAML syntax error at line"]),
    ("unknown-key", ["digits_lr", "--set", "search.colour=red"], ["search.colour", "unknown key"]),
    ("wrong-type", ["digits_lr", "--set", "train.epochs=ten"], ["train.epochs", "'ten'"]),
    ("low-not-below-high", ["digits_lr", "--set", "search.max_lr.low=3", "--set",
     "search.max_lr.high=0.1"], ["search.max_lr", "`low < high` must hold", "low=3.0, high=0.1"]),
    ("log-low-not-positive", ["digits_lr", "--set", "search.base_lr.low=0"],
     ["search.base_lr", "`low > 0` must hold", "low=0.0"]),
    ("max-below-base", ["digits_lr", "--set", "search.max_lr={low: 1.0e-6, high: 1.0e-5}"],
     ["search.max_lr", "lies wholly below", "max_lr.high=1e-05"]),
    ("grace-above-epochs", ["digits_lr", "--set", "early_stopping.grace_period=99"],
     ["early_stopping.grace_period", "grace_period=99, epochs=30"]),
    ("gpu-negative", ["digits_lr", "--set", "resources.gpu=-1"],
     ["resources.gpu", "`gpu >= 0` must hold", "gpu=-1.0"]),
    ("epochs-zero", ["digits_lr", "--set", "train.epochs=0"], ["train.epochs", "but got 0"]),
    ("unknown-family", ["digits_lr", "--set", "search.families=[fixed,cosine]"],
     ["search.families.1", "'cosine'"]),
    ("unknown-sweep", ["cifar_clr"], ["sweep 'cifar_clr'", "cardio_clr, digits_lr"]),
    ("unknown-dataset", ["digits_lr", "--set", "dataset.name=mnist"], ["dataset.name", "'mnist'"]),
    ("unknown-model", ["digits_lr", "--set", "model.name=resnet"], ["model.name", "'resnet'"]),
    ("unknown-optimizer", ["digits_lr", "--set", "optimizer.name=lbfgs"],
     ["optimizer.name", "'lbfgs'"]),
    ("set-syntax", ["digits_lr", "--set", "train.epochs"], ["--set", "dotted.key=value"]),
    ("set-into-scalar", ["digits_lr", "--set", "train.epochs.x=1"],
     ["--set train.epochs.x", "must be a section"]),
    ("data-offline", ["cardio_clr", *TINY], ["could not be downloaded", "$SWEEPS_DATA_DIR"]),
    ("data-path-missing", ["cardio_clr", "--set", "dataset.path={tmp}/none.csv"],
     ["dataset.path", "must exist", "none.csv"]),
    ("data-checksum", ["cardio_clr", "--set", "dataset.path={tmp}/short.csv", *TINY],
     ["dataset.sha256", "must have SHA-256 21a705d2"]),
    ("data-columns", ["cardio_clr", "--set", "dataset.path={tmp}/columns.csv",
     "--set", "dataset.sha256=null", *TINY], ["must have the columns", "lacks"]),
    ("data-empty", ["cardio_clr", "--set", "dataset.path={tmp}/empty.csv",
     "--set", "dataset.sha256=null", *TINY], ["empty.csv", "it is empty"]),
    ("data-non-numeric", ["cardio_clr", "--set", "dataset.path={tmp}/text.csv",
     "--set", "dataset.sha256=null", *TINY], ["column 'height' must be numeric", "'tall'"]),
    ("data-label", ["cardio_clr", "--set", "dataset.path={tmp}/label.csv",
     "--set", "dataset.sha256=null", *TINY], ["column 'cardio' (the label) must be 0 or 1", "7"]),
    ("data-path-folder", ["cardio_clr", "--set", "dataset.path={tmp}"],
     ["dataset.path", "must name a file", "is a folder"]),
    ("spec-not-utf8", ["{tmp}/latin1.yaml"], ["latin1.yaml", "must be UTF-8 text"]),
    ("tracking-malformed", ["digits_lr", "--tracking-uri", "http://[::1", *TINY],
     ["--tracking-uri", "must be a well-formed URI"]),
    ("tracking-not-sqlite", ["digits_lr", "--tracking-uri", "sqlite:///{tmp}/bad.yaml", *TINY],
     ["--tracking-uri", "bad.yaml'", "it is not a SQLite database"]),
    ("tracking-no-folder", ["digits_lr", "--tracking-uri", "sqlite:///{tmp}/none/m.db", *TINY],
     ["--tracking-uri", "none' does not exist"]),
    ("tracking-bad-port", ["digits_lr", "--tracking-uri", "http://localhost:notaport", *TINY],
     ["--tracking-uri", "must have a valid port"]),
    ("address-no-port", ["digits_lr", "--address", "localhost", *TINY],
     ["--address", "'localhost'", "it has no :port"]),
    ("tracking-scheme", ["digits_lr", "--tracking-uri", "foo://x", *TINY],
     ["--tracking-uri", "'foo://x'", "must be a URI MLflow supports"]),
    ("tracking-unreachable", ["digits_lr", "--tracking-uri", "http://127.0.0.1:9", *TINY],
     ["--tracking-uri", "http://127.0.0.1:9", "must be reachable"]),
    ("address-unreachable", ["digits_lr", "--address", "127.0.0.1:9", *TINY],
     ["--address", "'127.0.0.1:9'", "must be reachable"]),
    ("gpu-where-none", ["digits_lr", "--set", "resources.gpu=1", *TINY],
     ["resources.gpu", "gpu=1", "the cluster has 0"]),
    ("max-concurrent", ["digits_lr", "--max-concurrent", "0"], ["--max-concurrent", "N >= 1"]),
    ("resume-nothing", ["digits_lr", "--resume", *TINY],
     ["--resume", "unfinished sweep of 'digits_lr'", "there is none"]),
    ("rate-negative", ["digits_lr", "--set", "search.base_lr={low: -1, high: 0.1, log: false}"],
     ["search.base_lr", "`low > 0` must hold for a learning rate", "low=-1.0"]),
    ("rate-infinite", ["digits_lr", "--set", "search.max_lr.high=.inf"],
     ["search.max_lr", "must be finite", "high=inf"]),
    ("data-path-not-cardio", ["digits_lr", "--set", "dataset.path=x.csv"],
     ["dataset.path", "cardio set only", "name='digits'"]),
    ("dry-run-file-store", ["digits_lr", "--dry-run", "--tracking-uri", "./mlruns"],
     ["--tracking-uri", "'./mlruns'", "it is a file store"]),
    ("data-checksum-not-cardio", ["digits_lr", "--set", "dataset.sha256=abc"],
     ["dataset.sha256", "cardio set only", "sha256='abc'"]),
    ("storage-file", ["digits_lr", "--storage", "bad.yaml", *TINY],
     ["--storage", "bad.yaml'", "must be a folder the sweep can write", "it is a file"]),
    ("trainable-syntax", ["digits_lr", "--set", "trainable=train.py"],
     ["trainable", "'train.py'", "`module:function` syntax"]),
    ("trainable-missing", ["digits_lr", "--set", "trainable=no_such_module:train", *TINY],
     ["trainable", "'no_such_module:train'", "ModuleNotFoundError"]),
]  # fmt: skip


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 20


def run_cli(tmp_path: Path, argv: list[str], store: Callable[[Path], str]) -> str:
    """The CLI on ``argv`` in a folder with the bad files, offline, and ``store(path)``'s MLflow
    store: its one line, checked."""
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "latin1.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    db = tmp_path / "mlflow.db"
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--tracking-uri" not in args:
        args += ["--tracking-uri", store(db)]
    env = {
        **os.environ,
        "SWEEPS_DATA_DIR": str(tmp_path / "no-data-here"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "SWEEPS_CARDIO_URL": "http://127.0.0.1:9/offline",
        "RAY_ADDRESS": "",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.run", *args], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    if db.exists():  # nothing may be left RUNNING in the store
        with sqlite3.connect(db) as con:
            running = con.execute("select count(*) from runs where status = 'RUNNING'").fetchone()
        assert running == (0,)
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, argv: list[str], needles: list[str], mlflow_store: Callable[[Path], str]
) -> None:
    line = run_cli(tmp_path, argv, mlflow_store)
    for needle in needles:
        assert needle in line, line


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        "data-path-missing",
        "data-offline",
        "trainable-missing",
        "tracking-unreachable",
        "storage-file",
    ],
)
def test_the_inputs_are_checked_before_ray(
    tmp_path: Path, case: str, mlflow_store: Callable[[Path], str]
) -> None:
    # With a cluster address nothing listens on, the error is still the input's: the CLI checked
    # the input first (sweeps/preflight.py), rather than making the user wait for Ray (~10 s).
    argv, needles = next(c[1:] for c in CASES if c[0] == case)
    line = run_cli(tmp_path, [*argv, "--address", "127.0.0.1:9"], mlflow_store)
    for needle in needles:
        assert needle in line, line


REPORT = ["sweeps.report", "cardio_clr"]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (REPORT, ["--tracking-uri", "mlflow.db' must exist, but it does not"]),
        (
            [*REPORT, "--tracking-uri", "http://127.0.0.1:9"],
            ["'http://127.0.0.1:9' must be reachable"],
        ),
        ([*REPORT, "--tracking-uri", "foo://x"], ["'foo://x' must be a URI MLflow supports"]),
        (["sweeps.run", "digits_lr", "--resume"], ["--tracking-uri", "mlflow.db' must exist"]),
    ],
    ids=["no-store-here", "server-unreachable", "scheme", "resume-no-store-here"],
)
def test_reading_a_store_that_is_not_there_exits_2(
    tmp_path: Path, argv: list[str], needles: list[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", *argv], cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and all(n in lines[0] for n in needles), lines[0]
    assert list(tmp_path.iterdir()) == []  # no store made where there was none


@pytest.mark.parametrize("module", ["sweeps.run", "sweeps.report", "sweeps.lr_find"])
def test_a_store_from_the_environment_is_named_as_such(tmp_path: Path, module: str) -> None:
    # The error blamed --tracking-uri, which the user had not passed.
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    cmd = [sys.executable, "-m", module, "digits_lr"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: $MLFLOW_TRACKING_URI: the MLflow store"), proc.stderr
    given = subprocess.run(
        [*cmd, "--tracking-uri", "http://127.0.0.1:9"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert given.stderr.startswith("error: --tracking-uri: the MLflow store"), given.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["sweeps.run", "digits_lr", "--max-concurrent", "two"],
        ["sweeps.run"],
        ["sweeps.run", "--list", "cardio_clr"],
        ["sweeps.report"],
        ["sweeps.lr_find", "digits_lr", "--steps", "many"],
        ["sweeps.submit", "digits_lr", "--bogus"],
        ["sweeps.outbox"],
        ["sweeps.outbox", "unsent.json", "--patience", "-5"],
        ["sweeps.outbox", "unsent.json", "--patience", "nan"],
    ],
    ids=[
        "run-type",
        "run-missing",
        "run-list",
        "report",
        "lr_find",
        "submit",
        "outbox",
        "patience",
        "nan",
    ],
)
def test_a_usage_mistake_is_one_line_in_every_command(tmp_path: Path, argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", *argv], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and f"python -m {argv[0]} --help" in proc.stderr
