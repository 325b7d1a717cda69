"""MLflow: the experiment, one parent run per sweep, nested runs per trial, batched logging.

Only the driver talks to MLflow (through ``MlflowClient``), so trials need no tracking credentials.
Nested runs, params, metrics, tags and run ends go through an ``Outbox`` (``sweeps/outbox.py``):
a store that stops mid-sweep delays them, in order, but neither stalls Tune nor loses them. What
needs the store at that moment writes directly: the parent run's creation (its id names Ray's
experiment), artifacts, and the LR range test's run, which ``lr_find`` also writes alone.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

from sweeps.driver import DRIVER_TAG, driver_id, live_driver
from sweeps.errors import SweepsError, first_line, redact
from sweeps.outbox import (
    PATIENCE_ENV,
    PLACEHOLDER,
    RUN_KEY_TAG,
    Outbox,
    TrackingError,
    Write,
    now_ms,
    open_client,
    patience_from_env,
    quick_http,
)
from sweeps.preflight import (
    DEFAULT_TRACKING_URI,
    check_server,
    check_sqlite_exists,
    is_file_store,
    sqlite_file,
)
from sweeps.spec import SweepSpec

TRIAL_STATUSES = ("completed", "stopped", "diverged", "collapsed", "failed")
EPOCH_METRICS = ("train_loss", "val_loss", "val_acc", "lr", "epoch_seconds")


def resolve_uri(cli_value: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite ``mlflow.db`` in the working dir."""
    uri = cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    path = sqlite_file(uri)  # made absolute, so that the printed `mlflow ui` works anywhere
    return f"sqlite:///{path.absolute()}" if path is not None else uri


def preload_store(uri: str) -> None:
    """Import the code of a database store (SQLAlchemy, Alembic's migrations: ~1.2 s) ahead of
    opening ``uri``, which then costs only the store's own work; other stores load quickly."""
    if urlparse(uri).scheme.partition("+")[0] in DATABASE_ENGINES:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def check_store(client: MlflowClient, uri: str) -> None:
    """The store at ``uri`` must answer a query, within seconds (not MLflow's minutes of
    retries)."""
    try:
        with quick_http():
            client.search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types; all mean "cannot use this store"
        raise TrackingError(
            f"--tracking-uri: the MLflow store {redact(uri)!r} must be reachable, but "
            f"{first_line(exc)}"
        ) from None


def open_existing_store(uri: str) -> MlflowClient:
    """A client of the store a sweep logged to, for reading: a sqlite file must exist already
    (opening one creates it), and a server must answer."""
    try:
        check_sqlite_exists(uri)
    except SweepsError as exc:
        raise TrackingError(str(exc)) from None
    check_server(uri)
    client = open_client(uri)
    check_store(client, uri)
    return client


def ui_hint(uri: str) -> str:
    """What a user types (or opens) to see the runs."""
    if uri.startswith(("http://", "https://")):
        return f"open {redact(uri)} in a browser"
    command = f"mlflow ui --backend-store-uri {redact(uri)}"
    if is_file_store(uri):  # mlflow ui refuses it too, unless told
        return f"MLFLOW_ALLOW_FILE_STORE=true {command}"
    return command


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


def _is_number(value: Any) -> bool:
    """A number MLflow can log (NaN too: a diverged epoch's loss is logged as NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of the experiment ``name``, created if there is none yet."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # another sweep created it meanwhile
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def nested_runs(
    client: MlflowClient, experiment_id: str, parent: str, role: str, family: str | None = None
) -> list[Run]:
    """The live (not deleted) nested runs of ``role`` under run ``parent``, oldest first."""
    query = f"tags.`mlflow.parentRunId` = '{parent}' and tags.`sweeps.role` = '{role}'"
    if family is not None:
        query += f" and tags.`sweeps.family` = '{family}'"
    return client.search_runs(
        [experiment_id],
        filter_string=query,
        order_by=["attributes.start_time ASC"],
        max_results=50_000,  # the most one call returns; no sweep nests that many runs
    )


class SweepTracker:
    """The parent run of one sweep invocation, and its nested runs.

    Writes go through ``self.outbox`` in order; when the store is down they wait there and the
    sweep goes on (``sweeps/outbox.py`` says why that loses nothing). Runs created meanwhile have
    a placeholder id until the store takes them (``resolve`` gives the real one). ``client`` is
    for reads and artifacts: it sends the queued writes first, so a reader sees all of them.
    ``finish`` ends every run this tracker started and still has open, then waits a bounded time
    (``patience`` seconds, default ``$SWEEPS_MLFLOW_PATIENCE`` or 300) for a store that is down.
    """

    def __init__(self, uri: str, spec: SweepSpec, patience: float | None = None) -> None:
        self.uri = uri
        self.spec = spec
        if patience is None:  # a bad $SWEEPS_MLFLOW_PATIENCE fails before the store is made
            patience = patience_from_env()
        self.outbox = Outbox(open_client(uri), uri, patience)
        self.experiment_id = ""
        self.parent_id = ""
        self.open_runs: set[str] = set()  # nested runs started here and not ended yet
        self._gave_up = False  # the patience ran out once: do not wait for it again

    @property
    def client(self) -> MlflowClient:
        """The MlflowClient, after every queued write is sent (so reads see them)."""
        if self.outbox.queue and not self.outbox.flush(0 if self._gave_up else None):
            self._gave_up = True
            raise TrackingError(
                f"--tracking-uri: the MLflow store {redact(self.uri)!r} must come back within "
                f"{self.outbox.patience:.0f} s (${PATIENCE_ENV}) to take "
                f"{len(self.outbox.queue)} queued writes, but it did not"
            )
        return self.outbox.client

    def resolve(self, run_id: str) -> str:
        """The real MLflow id of a run whose creation may still be queued (else the placeholder)."""
        return self.outbox.resolve(run_id)

    # -- parent run ---------------------------------------------------------------------------
    def check(self) -> None:
        """Fail fast, before Ray starts, when the store is unreachable or unusable."""
        check_store(self.outbox.client, self.uri)

    def start(self, extra_tags: Mapping[str, str] | None = None) -> str:
        client = self.client
        self.experiment_id = experiment_id(client, self.spec.tracking.experiment)
        tags = {
            "sweeps.role": "sweep",
            "sweeps.name": self.spec.name,
            "sweeps.spec_hash": self.spec.spec_hash(),
            DRIVER_TAG: driver_id(),
            **(extra_tags or {}),
        }
        commit = git_commit()
        if commit:
            tags["sweeps.git_commit"] = commit
            tags["mlflow.source.git.commit"] = commit
        # Created directly: the store was just checked, and the id names Ray's experiment.
        run = client.create_run(self.experiment_id, run_name=f"{self.spec.name}-sweep", tags=tags)
        self.parent_id = run.info.run_id
        self.log_params(self.parent_id, {k: self._param(v) for k, v in self.spec.flat().items()})
        self.client.log_text(self.parent_id, self.spec.to_yaml(), "spec.yaml")
        return self.parent_id

    @staticmethod
    def _param(value: Any) -> str:
        text = str(value)
        return redact(text) if "://" in text else text

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.outbox.submit(
                Write("log_batch", run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])
            )

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        now = now_ms()  # when it happened, however late the store takes it
        batch = [(k, float(v), now, step) for k, v in metrics.items()]
        if batch:
            self.outbox.submit(Write("log_batch", run_id, metrics=batch))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.outbox.submit(Write("log_batch", run_id, tags=dict(tags)))

    def terminate(self, run_id: str, status: str) -> None:
        """End a run as ``status`` (FINISHED, FAILED, KILLED) at this moment, through the queue."""
        self.outbox.submit(Write("set_terminated", run_id, status=status, time_ms=now_ms()))
        self.open_runs.discard(run_id)

    def finish(self, status: str = "FINISHED") -> None:
        """End the parent (and any nested run left open) as ``status``, and send every write.

        Waits up to the patience for a store that is down; if it stays down, the unsent writes
        go to ``mlflow-unsent-<run>.json`` in the working directory and TrackingError says how
        to send them (``python -m sweeps.outbox``).
        """
        self.outbox.stop_sender()
        if not self.parent_id:
            return
        rejected: list[str] = []
        # A child still open here lost its trial (Tune ended early): never leave it RUNNING.
        child_status = "FAILED" if status == "FINISHED" else status
        for run_id in [*sorted(self.open_runs), self.parent_id]:
            try:
                self.terminate(run_id, status if run_id == self.parent_id else child_status)
            except TrackingError as exc:  # the store refused an earlier write: send the rest
                rejected.append(str(exc))
        path = Path.cwd() / f"mlflow-unsent-{self.parent_id}.json"
        while True:
            try:
                sent = self.outbox.flush(0 if self._gave_up else None)
                break
            except TrackingError as exc:
                rejected.append(str(exc))
            except KeyboardInterrupt:  # Ctrl-C while waiting for the store: keep what is unsent
                if self.outbox.queue:
                    self.outbox.say(f"unsent MLflow writes saved in {self.outbox.spill(path)}")
                raise
        if not sent:
            self._gave_up = True
            self.outbox.spill(path)
            # FINISHED: the report is in the run already. Otherwise the sweep did not get that
            # far, and a resume (once the writes are in) does the rest, the report included.
            then = (
                ""
                if status == "FINISHED"
                else ", then run the sweep's command again with --resume to finish it"
            )
            raise TrackingError(
                f"--tracking-uri: the MLflow store {redact(self.uri)!r} must come back within "
                f"{self.outbox.patience:.0f} s (${PATIENCE_ENV}) to take the sweep's last "
                f"{len(self.outbox.queue)} writes, but it did not; they are saved in {path}: "
                f"send them with `python -m sweeps.outbox {path}`{then}"
            )
        if rejected:
            raise TrackingError(f"{rejected[0]} ({len(rejected)} writes refused in all)")

    # -- nested runs --------------------------------------------------------------------------
    def start_child(
        self,
        name: str,
        role: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
        started_ms: int | None = None,
    ) -> str:
        """Create a nested run, started now or at ``started_ms`` (a run logged once it is over);
        its id is a placeholder while the store is down."""
        key = uuid.uuid4().hex
        placeholder = f"{PLACEHOLDER}{key}"
        all_tags = {
            MLFLOW_PARENT_RUN_ID: self.parent_id,
            MLFLOW_RUN_NAME: name,
            "sweeps.role": role,
            **tags,
            RUN_KEY_TAG: key,  # finds the run if a timed-out creation did reach the store
        }
        self.outbox.submit(
            Write(
                "create_run",
                placeholder,
                experiment_id=self.experiment_id,
                run_name=name,
                time_ms=now_ms() if started_ms is None else started_ms,
                tags=all_tags,
            )
        )
        run_id = self.outbox.resolve(placeholder)
        self.open_runs.add(run_id)
        self.log_params(run_id, params)
        return run_id

    def log_epoch(self, run_id: str, result: Mapping[str, Any]) -> None:
        """One ``log_batch`` per result: the per-epoch metrics at step=epoch."""
        step = int(result["epoch"])
        self.log_metrics(
            run_id, {k: result[k] for k in EPOCH_METRICS if _is_number(result.get(k))}, step
        )

    def end_child(self, run_id: str, status: str, summary: Mapping[str, float]) -> None:
        self.set_tags(run_id, {"sweeps.status": status})
        self.log_metrics(run_id, summary)
        self.terminate(run_id, "FAILED" if status == "failed" else "FINISHED")

    # -- resume -------------------------------------------------------------------------------
    def find_resumable(self, storage: str | None) -> tuple[str, str]:
        """(parent run id, Ray storage) of the newest unfinished sweep of this exact spec."""
        exp = self.client.get_experiment_by_name(self.spec.tracking.experiment)
        runs: list[Run] = []
        if exp is not None:
            runs = self.client.search_runs(
                [exp.experiment_id],
                filter_string=(
                    "tags.`sweeps.role` = 'sweep' and "
                    f"tags.`sweeps.spec_hash` = '{self.spec.spec_hash()}' and "
                    "attributes.status != 'FINISHED'"
                ),
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        if not runs:
            raise SweepsError(
                f"--resume: an unfinished sweep of {self.spec.name!r} with this spec (hash "
                f"{self.spec.spec_hash()}) must exist in {redact(self.uri)!r}, but there is "
                f"none{self._why_none(exp.experiment_id if exp is not None else None)}"
            )
        run = runs[0]
        pid = live_driver(run.data.tags.get(DRIVER_TAG))
        if pid is not None and run.info.status == "RUNNING":
            # Two drivers would run one sweep: twice the trials, mixed runs and reports.
            raise SweepsError(
                f"--resume: sweep run {run.info.run_id} must have stopped, but its driver "
                f"(process {pid} on this machine) still runs it; wait for it to end, or stop it "
                "(Ctrl-C) and resume then"
            )
        saved = run.data.tags.get("sweeps.storage")
        where = storage or saved
        if not where:
            raise SweepsError(
                f"--resume: the storage of sweep run {run.info.run_id} is unknown; pass --storage"
            )
        self.experiment_id = run.info.experiment_id
        return run.info.run_id, where

    def _why_none(self, experiment_id: str | None) -> str:
        """What the experiment's sweeps say about a resume that found none of this spec."""
        if experiment_id is None:
            return ""

        def newest(extra: str) -> Run | None:
            found = self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`sweeps.role` = 'sweep'{extra}",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            return found[0] if found else None

        other = newest(" and attributes.status != 'FINISHED'")
        if other is not None:
            return (
                f"; the newest unfinished one, run {other.info.run_id}, has another spec (hash "
                f"{other.data.tags.get('sweeps.spec_hash')}): resume it with the --set options "
                "it ran with (its spec.yaml is among the run's artifacts)"
            )
        same = newest(f" and tags.`sweeps.spec_hash` = '{self.spec.spec_hash()}'")
        if same is not None:
            return f" (its newest sweep of this spec, run {same.info.run_id}, finished)"
        return ""

    def reopen(self, parent_id: str) -> None:
        """Mark an interrupted parent run RUNNING again and count the resume."""
        self.parent_id = parent_id
        run = self.client.get_run(parent_id)
        self.experiment_id = run.info.experiment_id
        resumes = int(run.data.tags.get("sweeps.resumes", "0")) + 1
        self.client.update_run(parent_id, status="RUNNING")
        self.set_tags(parent_id, {"sweeps.resumes": str(resumes), DRIVER_TAG: driver_id()})

    def reopen_child(self, run: Run) -> None:
        """Resume: a nested run the interrupted driver left open goes on. RUNNING again (Ctrl-C
        ended it KILLED), and ended with the sweep if this one stops early too."""
        if run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        self.open_runs.add(run.info.run_id)

    def children(
        self, role: str, family: str | None = None, parent: str | None = None
    ) -> list[Run]:
        """The live (not deleted) nested runs of ``role`` of the parent (this sweep's unless
        ``parent`` is given), oldest first."""
        return nested_runs(self.client, self.experiment_id, parent or self.parent_id, role, family)

    def last_step(self, run_id: str, metric: str = "val_acc") -> int:
        history = self.client.get_metric_history(run_id, metric)
        return max((m.step for m in history), default=0)

    def discard(self, run_id: str, reason: str) -> None:
        """End a run the resumed sweep will not continue as KILLED, then delete it (restorable)."""
        self.set_tags(run_id, {"sweeps.status": "killed", "sweeps.discarded": reason})
        self.client.set_terminated(run_id, status="KILLED")
        self.client.delete_run(run_id)
        self.open_runs.discard(run_id)
