"""MLflow: the experiment, one parent run per sweep, nested runs per trial, batched logging.

Only the driver talks to MLflow (through ``MlflowClient``), so trials need no tracking credentials.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from sweeps.errors import SweepsError, first_line
from sweeps.spec import SweepSpec

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TRIAL_STATUSES = ("completed", "stopped", "diverged", "collapsed", "failed")
EPOCH_METRICS = ("train_loss", "val_loss", "val_acc", "lr", "epoch_seconds")
_PARAM_BATCH = 100  # MLflow's log_batch limit on params per call
_CREDENTIALS = re.compile(r"(?<=://)([^/@\s]+)@")
# One try with a short timeout: MLflow's default HTTP retries back off for minutes.
_QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


class TrackingError(SweepsError):
    """The tracking store cannot be reached or used."""


def redact(uri: str) -> str:
    """The URI with any ``user:password@`` replaced, for console output and params."""
    return _CREDENTIALS.sub("***@", uri)


def resolve_uri(cli_value: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite ``mlflow.db`` in the working dir."""
    uri = cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri == DEFAULT_TRACKING_URI:  # absolute, so the printed `mlflow ui` works anywhere
        return f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    return uri


def ui_hint(uri: str) -> str:
    """What a user types (or opens) to see the runs."""
    if uri.startswith(("http://", "https://")):
        return f"open {redact(uri)} in a browser"
    return f"mlflow ui --backend-store-uri {redact(uri)}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class SweepTracker:
    """The parent run of one sweep invocation, and its nested runs."""

    def __init__(self, uri: str, spec: SweepSpec) -> None:
        self.uri = uri
        self.spec = spec
        try:
            self.client = MlflowClient(tracking_uri=uri)
        except Exception as exc:  # an unsupported scheme raises here, before any request
            raise TrackingError(
                f"--tracking-uri: {redact(uri)!r} must be a URI MLflow supports (sqlite:///, "
                f"postgresql://, http(s)://, file:), but {first_line(exc)}"
            ) from None
        self.experiment_id = ""
        self.parent_id = ""

    # Ray pickles the run config (and so this, inside a callback) for Tuner.restore.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "client": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.client = MlflowClient(tracking_uri=self.uri)

    # -- parent run ---------------------------------------------------------------------------
    def check(self) -> None:
        """Fail fast, before Ray starts, when the store is unreachable or unusable."""
        saved = {k: os.environ.get(k) for k in _QUICK_HTTP}
        os.environ.update(_QUICK_HTTP)
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # MLflow raises many types; all mean "cannot use this store"
            raise TrackingError(
                f"--tracking-uri: the MLflow store {redact(self.uri)!r} must be reachable, but "
                f"{first_line(exc)}"
            ) from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start(self, extra_tags: Mapping[str, str] | None = None) -> str:
        name = self.spec.tracking.experiment
        exp = self.client.get_experiment_by_name(name)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(name)
        tags = {
            "sweeps.role": "sweep",
            "sweeps.name": self.spec.name,
            "sweeps.spec_hash": self.spec.spec_hash(),
            **(extra_tags or {}),
        }
        commit = git_commit()
        if commit:
            tags["sweeps.git_commit"] = commit
            tags["mlflow.source.git.commit"] = commit
        run = self.client.create_run(
            self.experiment_id, run_name=f"{self.spec.name}-sweep", tags=tags
        )
        self.parent_id = run.info.run_id
        self.log_params(self.parent_id, {k: self._param(v) for k, v in self.spec.flat().items()})
        self.client.log_text(self.parent_id, self.spec.to_yaml(), "spec.yaml")
        return self.parent_id

    @staticmethod
    def _param(value: Any) -> str:
        text = str(value)
        return redact(text) if "://" in text else text

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), _PARAM_BATCH):
            self.client.log_batch(run_id, params=items[i : i + _PARAM_BATCH])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status=status)

    # -- nested runs --------------------------------------------------------------------------
    def start_child(
        self, name: str, role: str, tags: Mapping[str, str], params: Mapping[str, Any]
    ) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_id,
                MLFLOW_RUN_NAME: name,
                "sweeps.role": role,
                **tags,
            },
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_epoch(self, run_id: str, result: Mapping[str, Any]) -> None:
        """One ``log_batch`` per result: the per-epoch metrics at step=epoch."""
        step = int(result["epoch"])
        self.log_metrics(
            run_id, {k: result[k] for k in EPOCH_METRICS if _finite(result.get(k))}, step
        )

    def end_child(self, run_id: str, status: str, summary: Mapping[str, float]) -> None:
        self.set_tags(run_id, {"sweeps.status": status})
        self.log_metrics(run_id, summary)
        self.client.set_terminated(run_id, status="FAILED" if status == "failed" else "FINISHED")
