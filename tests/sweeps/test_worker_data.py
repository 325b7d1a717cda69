"""Ray workers get the driver's splits: they neither read the dataset's file nor import what
reading and splitting it needs (scikit-learn, and for re-evaluation MLflow and Tune)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sweeps import trainable
from sweeps.retrain import retrain
from sweeps.spec import load_spec
from sweeps.trainable import ray_trainable
from trainables import DataError, TrialConfig
from trainables.data import clear_caches, load_splits


@pytest.fixture()
def handed(tmp_path: Path, cardio_dataset: dict[str, Any]) -> Any:
    """A 3-epoch cardio trial whose file is gone, and the splits read before it went."""
    spec = load_spec(
        "cardio_clr", ["train.epochs=3", "early_stopping.name=none", *_dataset_sets(cardio_dataset)]
    )
    config = spec.trial_config({"family": "fixed", "base_lr": 0.05}, seed=1)
    read = TrialConfig.model_validate(config).dataset
    splits = load_splits(read)
    gone = {**config, "dataset": {**config["dataset"], "path": str(tmp_path / "gone.csv")}}
    key = TrialConfig.model_validate(gone).dataset
    clear_caches()
    yield gone, (key, splits)
    clear_caches()


def _dataset_sets(dataset: dict[str, Any]) -> list[str]:
    return [f"dataset.{k}={v}" for k, v in dataset.items() if k != "name"]


def test_retrain_uses_the_handed_splits(handed: Any) -> None:
    config, data = handed
    with pytest.raises(DataError, match=r"gone\.csv"):
        retrain(config, None)  # the file is gone: without the splits this must fail
    history, test_acc, _ = retrain(config, None, data)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert 0.5 < test_acc <= 1.0


def test_the_ray_trainable_uses_the_handed_splits(
    handed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, data = handed
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(trainable.tune, "report", lambda m, checkpoint=None: sent.append(m))
    sampled = {"family": "fixed", "base_lr": 0.05}
    shared = {k: v for k, v in config.items() if k not in sampled}
    ray_trainable(sampled, shared, None, {}, data)
    assert sent[-1]["epoch"] == 3 and sent[-1]["status"] == "completed"


def test_workers_import_neither_sklearn_nor_what_the_driver_needs() -> None:
    code = (
        "import json, sys, sweeps.retrain, sweeps.trainable\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert "torch" in loaded and "ray" in loaded  # the check sees real imports
    assert not loaded & {"sklearn", "scipy", "mlflow"}
    code = "import sys, sweeps.retrain; print(sorted(m for m in sys.modules if 'tune' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # a re-evaluation worker never imports Tune
