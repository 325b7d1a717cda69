"""What a re-evaluation task runs on a Ray worker: a full training run scored on the test split,
from a module that keeps MLflow and Tune out of the worker."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from sweeps.retrain import retrain
from sweeps.spec import load_spec


def test_retrain_trains_the_whole_run_and_scores_the_test_split(
    cardio_dataset: dict[str, Any],
) -> None:
    sets = [f"dataset.{k}={v}" for k, v in cardio_dataset.items() if k != "name"]
    spec = load_spec("cardio_clr", ["train.epochs=3", "early_stopping.name=none", *sets])
    config = spec.trial_config({"family": "fixed", "base_lr": 0.05}, seed=1)
    history, test_acc, seconds = retrain(config, None)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["status"] == "completed"
    assert 0.5 < test_acc <= 1.0 and seconds > 0


def test_a_reevaluation_worker_imports_neither_mlflow_nor_tune() -> None:
    code = "import json, sys, sweeps.retrain\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert {"torch", "trainables.train_loop"} <= loaded  # the check sees real imports
    assert not {m for m in loaded if m.split(".")[0] in ("mlflow", "sklearn")}
    assert not {m for m in loaded if m.startswith("ray.tune")}
