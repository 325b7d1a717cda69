"""MLflow writes that outlive an unreachable tracking store: sent in order, queued while it is down.

Why a queue, not retries: the Tune callbacks that log trials run in Tune's driver loop. A write that
blocks (MLflow's default HTTP retries back off for about four minutes) stalls every trial's results;
one that raises ends ``Tuner.fit``. So each write is tried once, with a short timeout. On a
transient failure (no connection, a timeout, HTTP 429 or 5xx) it and every later write wait here in
order, the sweep goes on, and the queue is sent again every few seconds, before any read through
``SweepTracker.client`` and at the end. A run created while the store is down gets a placeholder id
(``pending-...``) that later writes use; sending the creation maps it to the real id.

Why nothing is lost or doubled: each write carries its own timestamps (taken when the sweep made it,
not when it is sent), and each kind is safe to send again, as a timed-out request that did reach
the store needs: MLflow drops a metric equal to one it holds, a param re-logged with the same value
and a tag are no-ops, termination is idempotent, and a run creation that may have reached the store
first looks for its run by the unique ``sweeps.run_key`` tag. Errors that retrying cannot fix (4xx)
raise at once, naming the write.

If the store is still down at the end, ``flush`` waits a bounded time (``$SWEEPS_MLFLOW_PATIENCE``,
default 300 s); what is still unsent is then saved to a JSON file that
``python -m sweeps.outbox FILE`` sends later.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from sweeps.errors import EXIT_USER_ERROR, OneLineParser, SweepsError, first_line, redact
from sweeps.preflight import check_not_file_store, sqlite_file

PATIENCE_ENV = "SWEEPS_MLFLOW_PATIENCE"
DEFAULT_PATIENCE = 300.0  # seconds the end of a sweep waits for a store that is down
RETRY_EVERY = 5.0  # seconds between tries while the store is down
# The sender thread sends at most this often: a trial's results of that span go in one log_batch
# (on sqlite one call costs ~5-9 ms of driver CPU, five results in one ~7 ms).
SEND_EVERY = 0.5
BATCH_MAX = MAX_ENTITIES_PER_BATCH - 100  # entries per merged log_batch, with room to spare
RUN_KEY_TAG = "sweeps.run_key"
PLACEHOLDER = "pending-"
# One try with a short timeout: MLflow's default HTTP retries back off for minutes. MLflow reads
# these per request, so setting them around a call scopes them to that call.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
# Rate limiting, server errors and gateways: the store may answer differently soon. A refused or
# dropped connection and a timeout reach us as MlflowException with INTERNAL_ERROR, i.e. 500.
_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})

Kind = Literal["create_run", "log_batch", "set_terminated"]


class TrackingError(SweepsError):
    """The tracking store cannot be reached or used."""


@contextlib.contextmanager
def quick_http() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in QUICK_HTTP}
    os.environ.update(QUICK_HTTP)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def transient(exc: Exception) -> bool:
    """Whether sending the same write later may succeed."""
    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() in _TRANSIENT_HTTP
    return isinstance(exc, OSError)  # requests' and urllib3's errors are OSErrors


def patience_from_env() -> float:
    text = os.environ.get(PATIENCE_ENV, "").strip()
    if not text:
        return DEFAULT_PATIENCE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses NaN
        raise TrackingError(f"{PATIENCE_ENV}: must be seconds >= 0, but got {text!r}")
    return value


# MLflow prints "View run ... at" and "View experiment at" whenever a run on an http store ends:
# two lines per trial on the sweep's console. The user's own setting wins.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# A database store that fails a write (a full disk, say) logs its traceback at every retry, 29
# of them in one audit's outage; the error also reaches the outbox, which says it in one line.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


# How long an open waits for another process opening a store in the same folder: a migration
# of a large old store takes a while; past this the holder is taken to hang, and it goes ahead.
CREATOR_WAIT_S = 120.0
# Folders this thread holds, so that a nested open does not wait on itself; per thread, so that
# two threads of one process opening stores in one folder still take turns.
_held = threading.local()


@contextlib.contextmanager
def _one_creator(uri: str) -> Iterator[None]:
    """Held while a client opens a sqlite store, where opening creates and migrates it: two
    sweeps starting at once on a new file each ran the migrations and could leave it
    half-migrated for good. The lock is the store's folder (flock), so no file is left behind,
    another user's store needs only read access, and stores elsewhere do not wait."""
    path = sqlite_file(uri)
    folder = str(path.absolute().parent) if path is not None else ""
    held: set[str] = _held.__dict__.setdefault("folders", set())
    if not folder or folder in held:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # no folder (MLflow says so) or none to be read: open unguarded
        yield
        return
    try:
        start, said = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on close, or death
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= CREATOR_WAIT_S:
                    break
                if not said and waited >= 5:
                    _stderr(
                        f"waiting for another process that is opening an MLflow store in {folder} "
                        f"(at most {CREATOR_WAIT_S:.0f} s)"
                    )
                    said = True
                time.sleep(0.05)
            except OSError:  # a file system without flock: open unguarded
                break
        held.add(folder)
        try:
            yield
        finally:
            held.discard(folder)
    finally:
        os.close(fd)


def open_client(uri: str) -> MlflowClient:
    """An MlflowClient for ``uri`` (a database store is created or migrated here); an
    unsupported scheme or a store that cannot be opened fails here, before any request."""
    try:
        check_not_file_store(uri)  # MLflow's own refusal runs to 600 characters
    except SweepsError as exc:
        raise TrackingError(str(exc)) from None
    engine = urlsplit(uri).scheme.partition("+")[0]
    for attempt in (1, 2):
        try:
            with _one_creator(uri):
                return MlflowClient(tracking_uri=uri)
        except Exception as exc:  # MLflow raises several types for a URI it cannot use
            error = exc
            # Another sweep migrating the same new database: it is done by the second try.
            if engine not in DATABASE_ENGINES or engine == "sqlite" or attempt == 2:
                break
            time.sleep(2.0)
    if engine in (*DATABASE_ENGINES, "http", "https", "databricks"):
        hint = ""
        if isinstance(error, ModuleNotFoundError):
            hint = " (its database driver is missing: pip install -e '.[postgres]')"
        raise TrackingError(
            f"--tracking-uri: the MLflow store {redact(uri)!r} must open, but "
            f"{first_line(error)}{hint}"
        ) from None
    raise TrackingError(
        f"--tracking-uri: {redact(uri)!r} must be a URI MLflow supports (sqlite:///, "
        f"postgresql://, http(s)://), but {first_line(error)}"
    ) from None


def now_ms() -> int:
    return int(time.time() * 1000)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Write:
    """One MLflow write, as data: it can wait in the queue, be sent again and be saved as JSON."""

    kind: Kind
    run_id: str  # a real run id, or a placeholder for a run created while the store was down
    experiment_id: str = ""  # create_run
    run_name: str = ""  # create_run
    time_ms: int = 0  # create_run: start time; set_terminated: end time
    status: str = ""  # set_terminated
    tags: dict[str, str] = field(default_factory=dict)  # create_run, log_batch
    params: list[tuple[str, str]] = field(default_factory=list)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)  # key, value, ms, step
    attempts: int = 0

    def describe(self) -> str:
        what = {
            "create_run": f"creating run {self.run_name!r}",
            "log_batch": (
                f"log_batch ({len(self.metrics)} metrics, {len(self.params)} params, "
                f"{len(self.tags)} tags)"
            ),
            "set_terminated": f"ending as {self.status}",
        }[self.kind]
        return f"{what} of run {self.run_id}"

    def size(self) -> int:
        return len(self.metrics) + len(self.params) + len(self.tags)


def merged(group: list[Write]) -> Write:
    """One log_batch of ``group``'s writes (all of one run, in order), or the single write."""
    if len(group) == 1:
        return group[0]
    head = group[0]
    tags: dict[str, str] = {}
    for w in group:
        tags.update(w.tags)  # a later value of a tag wins, as it would sent one by one
    return Write(
        "log_batch",
        head.run_id,
        tags=tags,
        params=head.params,
        metrics=[m for w in group for m in w.metrics],
    )


def plan(writes: Sequence[Write]) -> list[list[Write]]:
    """``writes`` (in queue order) cut into what goes out as one call each, in the order to send.

    A log_batch gathers the later log_batches of its run up to the next write of another kind
    (which waits for everything before it), within MLflow's limits on one call and stopping at
    one that logs params; every other write goes alone. One pass, so a backlog of n writes
    costs O(n) here, however the runs' writes interleave.
    """
    groups: list[list[Write]] = []
    # Per run: its group still taking writes, the group's entries and tag keys.
    open_groups: dict[str, tuple[list[Write], int, set[str]]] = {}
    for w in writes:
        if w.kind != "log_batch":
            open_groups.clear()
            groups.append([w])
            continue
        current = open_groups.get(w.run_id)
        if current is not None and not w.params:
            group, size, tags = current
            size, tags = size + w.size(), tags | set(w.tags)
            if size <= BATCH_MAX and len(tags) <= MAX_PARAMS_TAGS_PER_BATCH:
                group.append(w)
                open_groups[w.run_id] = (group, size, tags)
                continue
        groups.append([w])
        open_groups[w.run_id] = (groups[-1], w.size(), set(w.tags))
    return groups


class Outbox:
    """The in-order queue of MLflow writes of one driver; see the module docstring."""

    # How the console names the patience's setting, and what goes on meanwhile.
    patience_from = f"${PATIENCE_ENV}"
    meanwhile = " while the sweep goes on"

    def __init__(
        self,
        client: MlflowClient,
        uri: str,
        patience: float | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.client, self.uri = client, uri
        self.patience = patience_from_env() if patience is None else patience
        self.say = say or _stderr
        self.queue: deque[Write] = deque()
        self.ids: dict[str, str] = {}  # placeholder -> real run id
        self.down_since: float | None = None  # monotonic time of the first failure of an outage
        self.sent_while_down = 0
        self._next_try = 0.0
        self._lock = threading.RLock()  # one sender at a time
        self._queue_lock = threading.Lock()  # the queue's changes, against a sender's snapshot
        self._sender: threading.Thread | None = None
        self._wake, self._stop = threading.Event(), threading.Event()
        self._failed: TrackingError | None = None  # a refusal the sender thread met

    # -- sending from a thread ----------------------------------------------------------------
    def start_sender(self) -> None:
        """From now on a thread sends the queue and ``submit`` only appends to it: a result's
        writes (~16 ms on sqlite) do not hold up Tune's driver loop, and with it the trial
        that reported. Order, placeholders and the patience work as without the thread."""
        if self._sender is None:
            self._stop.clear()
            self._sender = threading.Thread(
                target=self._send_loop, name="mlflow-outbox", daemon=True
            )
            self._sender.start()

    def stop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            self._stop.set()  # cut the pause short: the caller's flush sends what is left
            self._wake.set()
            sender.join()

    def _send_loop(self) -> None:
        while self._sender is threading.current_thread():
            self._wake.wait(RETRY_EVERY)
            self._wake.clear()
            try:
                self.drain()
            except TrackingError as exc:  # raised to the sweep by its next write or flush
                self._failed = exc
            self._stop.wait(SEND_EVERY)  # let results gather: drain merges each run's into one

    def _raise_failure(self) -> None:
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

    def resolve(self, run_id: str) -> str:
        """The real id of ``run_id`` (itself unless it is a placeholder already created)."""
        return self.ids.get(run_id, run_id)

    def submit(self, write: Write) -> None:
        """Send ``write`` now, after everything queued, or queue it if the store is down (with a
        sender thread: queue it, and the thread sends it)."""
        self._raise_failure()
        with self._queue_lock:
            self.queue.append(write)
        if self._sender is not None:
            self._wake.set()
            return
        with self._lock:
            self.drain()

    def drain(self, force: bool = False) -> bool:
        """Send queued writes in order until one fails; True when none is left.

        While the store is down, tries at most every ``RETRY_EVERY`` seconds unless ``force``.
        A write the store refuses for good is dropped from the queue and raised as TrackingError.
        """
        with self._lock:
            if not self.queue:
                return True
            if self.down_since is not None and not force and time.monotonic() < self._next_try:
                return False
            while self.queue:
                with self._queue_lock:
                    pending = list(self.queue)
                done: set[int] = set()  # ids of the writes done with, off the queue below
                try:
                    for group in plan(pending):
                        try:
                            delivered = self._send_group(group)
                        except TrackingError:  # refused for good: dropped, not retried
                            done.update(id(w) for w in group)
                            raise
                        if not delivered:
                            return False
                        done.update(id(w) for w in group)
                        self.sent_while_down += len(group)
                finally:
                    with self._queue_lock:  # one pass, keeping what the sweep appended meanwhile
                        kept = [w for w in self.queue if id(w) not in done]
                        self.queue.clear()
                        self.queue.extend(kept)
            if self.down_since is not None:
                self.say(
                    f"the MLflow store {redact(self.uri)!r} is back after "
                    f"{time.monotonic() - self.down_since:.0f} s: sent {self.sent_while_down} "
                    "queued writes"
                )
                self.down_since = None
            return True

    def flush(self, patience: float | None = None) -> bool:
        """Send everything queued, waiting up to ``patience`` s for the store; True when sent."""
        self._raise_failure()
        if self.drain(force=True):
            return True
        patience = self.patience if patience is None else patience
        if patience > 0:
            self.say(
                f"warning: the MLflow store {redact(self.uri)!r} is unreachable; waiting up to "
                f"{patience:.0f} s ({self.patience_from}) to send {len(self.queue)} queued writes"
            )
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
            if self.drain(force=True):
                return True
        return False

    def _send_group(self, group: list[Write]) -> bool:
        """Send ``group`` as one write; False (the outage noted) if the store is down."""
        write = merged(group)
        t0 = time.monotonic()
        try:
            with quick_http():
                self._send(write)
        except Exception as exc:  # MLflow raises many types; `transient` sorts them
            group[0].attempts += 1
            if not transient(exc):
                raise TrackingError(
                    f"--tracking-uri: the MLflow store {redact(self.uri)!r} must accept "
                    f"{write.describe()}, but {first_line(exc)}"
                ) from None
            # A hung store costs a timeout per try: try less often than that.
            took = time.monotonic() - t0
            self._next_try = time.monotonic() + max(RETRY_EVERY, 3 * took)
            if self.down_since is None:
                self.down_since = t0
                self.sent_while_down = 0
                self.say(
                    f"warning: the MLflow store {redact(self.uri)!r} is unreachable "
                    f"({first_line(exc, 160)}); its writes wait in order and are retried "
                    f"every {RETRY_EVERY:g} s{self.meanwhile}"
                )
            return False
        return True

    def _send(self, w: Write) -> None:
        c = self.client
        if w.kind == "create_run":
            real = self._created(w) if w.attempts else None
            if real is None:
                run = c.create_run(
                    w.experiment_id, start_time=w.time_ms, tags=w.tags, run_name=w.run_name
                )
                real = run.info.run_id
            if real != w.run_id:
                self.ids[w.run_id] = real
        elif w.kind == "log_batch":
            c.log_batch(
                self.resolve(w.run_id),
                metrics=[Metric(k, float(v), int(ts), int(s)) for k, v, ts, s in w.metrics],
                params=[Param(k, v) for k, v in w.params],
                tags=[RunTag(k, v) for k, v in w.tags.items()],
            )
        else:
            c.set_terminated(self.resolve(w.run_id), status=w.status, end_time=w.time_ms)

    def _created(self, w: Write) -> str | None:
        """The run an earlier, possibly delivered, try of ``w`` created, if any."""
        key = w.tags.get(RUN_KEY_TAG)
        if not key:
            return None
        runs = self.client.search_runs(
            [w.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1
        )
        return runs[0].info.run_id if runs else None

    # -- what is left when the store never came back ----------------------------------------------
    def spill(self, path: Path) -> Path:
        """Save the unsent writes and the placeholder map as JSON (``python -m sweeps.outbox``)."""
        with self._lock, self._queue_lock:
            doc = {
                "tracking_uri": redact(self.uri),
                "ids": self.ids,
                "writes": [asdict(w) for w in self.queue],
            }
        path.write_text(json.dumps(doc, indent=1))
        return path


def read_spill(path: Path) -> tuple[str, dict[str, str], list[Write]]:
    """(saved URI, placeholder map, writes) of a file ``Outbox.spill`` wrote."""
    doc = json.loads(path.read_text())
    writes = []
    for raw in doc["writes"]:
        w = Write(**{k: v for k, v in raw.items() if k not in ("params", "metrics")})
        w.params = [(str(k), str(v)) for k, v in raw.get("params", [])]
        w.metrics = [(str(k), float(v), int(t), int(s)) for k, v, t, s in raw.get("metrics", [])]
        w.attempts = max(1, w.attempts)  # it may have reached the store before: look first
        writes.append(w)
    return str(doc["tracking_uri"]), {str(k): str(v) for k, v in doc["ids"].items()}, writes


def replay(path: Path, uri: str | None, patience: float = 60.0) -> int:
    """Send a spilled file's writes to ``uri`` (else the file's own URI); returns how many."""
    saved, ids, writes = read_spill(path)
    target = uri or saved
    if "***@" in target:
        raise TrackingError(
            f"--tracking-uri: must be given for {path}, whose saved URI {target!r} has its "
            "credentials redacted"
        )
    box = Outbox(open_client(target), target, patience)
    box.patience_from, box.meanwhile = "--patience", ""
    box.ids.update(ids)
    box.queue.extend(writes)
    if not box.flush():
        raise TrackingError(
            f"--tracking-uri: the MLflow store {redact(target)!r} must be reachable to take the "
            f"{len(box.queue)} writes left of {len(writes)} in {path}, but it was not within "
            f"{patience:.0f} s"
        )
    return len(writes)


def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m sweeps.outbox",
        description="Send the MLflow writes a sweep saved when its store did not come back.",
    )
    p.add_argument("file", type=Path, help="the mlflow-unsent-*.json file the sweep named")
    p.add_argument("--tracking-uri", help="the store (default: the one saved in the file)")
    p.add_argument("--patience", type=float, default=60.0, help="seconds to wait for the store")
    args = p.parse_args(argv)
    if not args.patience >= 0:  # also refuses NaN
        p.error(f"argument --patience: must be seconds >= 0, but got {args.patience}")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no schema-migration INFO lines
    try:
        n = replay(args.file, args.tracking_uri, args.patience)
    except TrackingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable, not JSON, not ours
        if isinstance(exc, KeyError | TypeError):  # JSON, but not the sweep's layout
            why = f"it lacks the sweep's fields ({type(exc).__name__}: {first_line(exc)})"
        else:
            why = first_line(exc)
        print(
            f"error: FILE {str(args.file)!r}: must be an mlflow-unsent-*.json file a sweep saved, "
            f"but {why}",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    print(f"sent {n} writes from {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
