"""Shared fixtures: the cardio data (the shared copy, or a generated sample), isolated caches."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    # Tests read the shared copy through the same variable users set.
    if "SWEEPS_DATA_DIR" not in os.environ and (SHARED_DATA / "cardio_train.csv").is_file():
        os.environ["SWEEPS_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never write to the user's real cache (platformdirs honours XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


def real_cardio_path() -> Path | None:
    d = os.environ.get("SWEEPS_DATA_DIR")
    p = Path(d) / "cardio_train.csv" if d else None
    return p if p is not None and p.is_file() else None


def write_cardio_sample(path: Path, rows: int = 3000, seed: int = 0) -> str:
    """A small file with Kaggle's schema and a learnable signal; returns its SHA-256."""
    rng = np.random.default_rng(seed)
    age = rng.integers(30 * 365, 65 * 365, rows)
    ap_hi = rng.normal(128, 15, rows).round().astype(int)
    ap_lo = (ap_hi - rng.normal(45, 8, rows)).round().astype(int)
    chol = rng.integers(1, 4, rows)
    logit = 0.06 * (ap_hi - 128) + 0.08 * (age / 365 - 50) + 0.5 * (chol - 1)
    cardio = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    cols = {
        "id": np.arange(rows), "age": age, "gender": rng.integers(1, 3, rows),
        "height": rng.integers(150, 195, rows), "weight": rng.normal(75, 12, rows).round(1),
        "ap_hi": ap_hi, "ap_lo": ap_lo, "cholesterol": chol, "gluc": rng.integers(1, 4, rows),
        "smoke": rng.integers(0, 2, rows), "alco": rng.integers(0, 2, rows),
        "active": rng.integers(0, 2, rows), "cardio": cardio,
    }  # fmt: skip
    lines = [";".join(cols)]
    lines += [";".join(str(cols[c][i]) for c in cols) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def cardio_dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``dataset`` overrides for cardio: the real shared copy, else a generated sample."""
    if real_cardio_path() is not None:
        return {"name": "cardio"}
    p = tmp_path_factory.mktemp("cardio-sample") / "cardio_train.csv"
    return {"name": "cardio", "path": str(p), "sha256": write_cardio_sample(p)}


@pytest.fixture()
def real_cardio() -> Iterator[Path]:
    """The real data; CI has it, so there a missing copy fails instead of skipping."""
    p = real_cardio_path()
    if p is None:
        if IN_CI:
            pytest.fail("CI must have the shared cardio copy (set SWEEPS_DATA_DIR)")
        pytest.skip("the real cardio data is not here (set SWEEPS_DATA_DIR)")
    yield p


@pytest.fixture(scope="session")
def _migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow sqlite store with its schema made: MLflow's ~70 migrations take ~3.5 s of CPU
    per new store, so the tests copy this one."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture(scope="session")
def mlflow_store(_migrated_store: Path) -> Callable[[Path], str]:
    """``mlflow_store(path)``: an empty MLflow sqlite store at ``path``, its schema already
    current; returns its URI. (The CLI's own first run on a new store is tested too.)"""

    def make(path: Path) -> str:
        shutil.copyfile(_migrated_store, path)
        return f"sqlite:///{path}"

    return make
