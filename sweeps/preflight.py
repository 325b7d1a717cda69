"""What the CLI checks before it starts Ray: the trainable, the data, $SWEEPS_COMPILE, the
storage, the MLflow store (not a file store; a sqlite file that must exist for --resume), the
device, and that something listens at the MLflow server's and the Ray cluster's address.

A mistake in any of them then fails in seconds, not after Ray's start (~10 s) or the retries of
Ray and MLflow. Imports neither (``sweeps.cluster`` uses the address check before ``ray.init``).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from sweeps.errors import SweepsError, redact
from sweeps.spec import SweepSpec

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def check_inputs(
    spec: SweepSpec,
    address: str | None,
    tracking_uri: str | None,
    storage: str | None = None,
    resume: bool = False,
) -> None:
    """Raise the user's first mistake, in the order a sweep would meet them. ``storage``: the
    --storage option (the spec's, else the default, when None; with ``resume``, the resumed
    sweep's, unknown before MLflow is open)."""
    from sweeps.custom import load_trainable  # torch: imported by the CLI already
    from trainables.data import load_splits
    from trainables.steps import compile_mode

    load_trainable(spec.trainable)
    load_splits(spec.dataset)  # cached: run_sweep reuses the splits
    try:
        compile_mode()
    except ValueError as exc:  # else every trial fails with it
        raise SweepsError(str(exc)) from None
    if storage or not resume:
        check_storage(storage_path(storage or spec.storage), "--storage" if storage else "storage")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    check_not_file_store(uri)
    if resume:  # opening a missing sqlite store would leave an empty one behind
        check_sqlite_exists(uri)
    check_sqlite(uri)
    check_server(uri)
    given = ray_address(address)
    if given:
        check_reachable(*given)
    # A cluster's workers may have the GPU the driver lacks; a range test runs on the driver.
    if not given or spec.search.bounds == "range_test":
        check_device(spec.train.device)


def check_device(device: str) -> None:
    """``train.device: cuda`` needs a GPU this machine's torch can use, else every trial fails."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise SweepsError(
            f"train.device: 'cuda' needs a GPU that torch can use here, but torch "
            f"{torch.__version__} ({build}) finds none; use auto or cpu, or install a CUDA "
            "build (README, GPU users)"
        )


def ray_address(address: str | None) -> tuple[str, str] | None:
    """The cluster to join and where it was named (--address, else $RAY_ADDRESS), if any."""
    if address:
        return address, "--address"
    env = os.environ.get("RAY_ADDRESS")
    return (env, "$RAY_ADDRESS") if env else None


def storage_path(storage: str | None) -> str:
    """Ray's storage_path: a URI (s3://...) as it is, a local folder made absolute (Ray reads a
    relative one as a URI and fails), by default ``sweeps_results`` in the working directory."""
    if storage and "://" in storage:
        return storage
    return str(Path(storage or "sweeps_results").expanduser().absolute())


def check_storage(storage: str, field: str = "storage") -> None:
    """A local storage folder must be one the sweep can create and write."""
    if "://" in storage:
        return  # a remote store: Ray's pyarrow checks it
    path = Path(storage)
    why = "it is a file" if path.exists() and not path.is_dir() else None
    try:
        if why is None:
            path.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
    if why:
        raise SweepsError(f"{field}: {storage!r} must be a folder the sweep can write, but {why}")


def refusal(host: str, port: int) -> str | None:
    """Why nothing accepts a TCP connection at ``host:port`` within 5 s (None: something does)."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def speaks_http(host: str, port: int) -> bool:
    """Whether an HTTP/1 server answers at ``host:port``. The GCS speaks gRPC: it answers an
    HTTP/1 request with an HTTP/2 frame, not "HTTP/"."""
    try:
        with socket.create_connection((host, port), timeout=2) as conn:
            conn.settimeout(2)
            conn.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            return conn.recv(5) == b"HTTP/"
    except OSError:
        return False


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store (None for other stores, in memory or with options)."""
    path = uri.removeprefix("sqlite:///")
    if path == uri or path in ("", ":memory:") or "?" in path:
        return None
    return Path(path)


def is_file_store(uri: str) -> bool:
    """A plain path or file: URI, which MLflow 3 refuses unless told to allow it."""
    if not uri or uri in ("databricks", "databricks-uc", "uc"):  # MLflow's names for those
        return False
    try:
        scheme = urlsplit(uri).scheme
    except ValueError:  # malformed: check_server says how
        return False
    return bool(re.match(r"^[A-Za-z]:[\\/]", uri)) or scheme in ("", "file")  # C:\ reads as c


def check_not_file_store(uri: str) -> None:
    """MLflow 3 refuses a file store unless told to allow it."""
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1"):
        return
    if is_file_store(uri):
        raise SweepsError(
            f"--tracking-uri: {redact(uri)!r} must be a database or server URI (sqlite:///PATH, "
            "postgresql://..., http(s)://...), but it is a file store, which MLflow 3 refuses "
            "(use e.g. sqlite:///mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true)"
        )


def check_sqlite_exists(uri: str) -> None:
    """A sqlite store read from (a report, a resume) must exist: opening one creates it."""
    path = sqlite_file(uri)
    if path is not None and not path.is_file():
        raise SweepsError(
            f"--tracking-uri: the sqlite store {str(path)!r} must exist, but it does not (run "
            "this where the sweep ran, or pass its --tracking-uri)"
        )


def check_sqlite(uri: str) -> None:
    """A sqlite store must be a SQLite file, or one the sweep can create: MLflow would retry
    opening it for minutes, then blame the URI."""
    path = sqlite_file(uri)
    if path is None:
        return
    why = None
    if path.is_dir():
        why = "it is a folder"
    elif path.is_file():
        try:
            with path.open("rb") as f:
                head = f.read(16)
        except OSError as exc:
            head, why = b"", (exc.strerror or str(exc)).lower()
        if why is None and head and head != b"SQLite format 3\x00":
            why = "it is not a SQLite database"
        elif why is None and not os.access(path, os.W_OK):
            why = "it is read-only"
    elif not path.parent.is_dir():
        why = f"its folder {str(path.parent)!r} does not exist"
    else:
        try:
            tempfile.TemporaryFile(dir=path.parent).close()
        except OSError as exc:
            why = f"no file can be made in {str(path.parent)!r} ({exc.strerror or exc})"
    if why:
        raise SweepsError(
            f"--tracking-uri: the sqlite store {str(path)!r} must be a SQLite file the sweep can "
            f"write, or be creatable, but {why}"
        )


def check_server(uri: str) -> None:
    """An MLflow server (http or https) must accept connections. Other stores, and whether the
    server is MLflow at all, are MLflow's to check when the sweep opens the store."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. an unclosed [ of an IPv6 host
        raise SweepsError(
            f"--tracking-uri: {redact(uri)!r} must be a well-formed URI, but {exc}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise SweepsError(
            f"--tracking-uri: {redact(uri)!r} must have a valid port, but {exc}"
        ) from None
    why = refusal(parts.hostname, port)
    if why:
        raise SweepsError(
            f"--tracking-uri: the MLflow store {redact(uri)!r} must be reachable, but {why}"
        )


def check_reachable(address: str, source: str = "--address") -> None:
    """A Ray GCS address must accept connections: ray.init would keep retrying for minutes.
    ``source`` names where the address came from, for the error."""
    if address == "auto":
        return  # Ray's to resolve: the cluster this machine is a node of
    scheme, sep, rest = address.partition("://")
    if sep and scheme in ("http", "https"):
        raise SweepsError(
            f"{source}: host:port of the head's GCS (e.g. head:6379) must be given, but got "
            f"{address!r}, the dashboard's URL: pass that to `python -m sweeps.submit`"
        )
    if sep and scheme != "ray":
        raise SweepsError(
            f"{source}: host:port, ray://host:port or auto must be given, but got {address!r}"
        )
    host, _, port = (rest if sep else address).rpartition(":")
    why: str | None = f"{port!r} is not a port number" if host else "it has no :port"
    if port.isdigit():
        why = refusal(host or "127.0.0.1", int(port))
        if why is None and not sep and speaks_http(host or "127.0.0.1", int(port)):
            # ray.init would retry an HTTP port (the dashboard's, 8265) for minutes.
            why = (
                "an HTTP server answers there (the dashboard's?); a GCS listens on 6379 by default"
            )
    what = (
        "the head's Ray Client server, 10001 by default" if sep else "host:port of the head's GCS"
    )
    if why:
        raise SweepsError(
            f"{source}: the Ray cluster at {address!r} must be reachable ({what}), but {why}"
        )
