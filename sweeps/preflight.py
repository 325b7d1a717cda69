"""What the CLI checks before it starts Ray: the trainable, the data, and that something listens at
the MLflow server's and the Ray cluster's address.

A mistake in any of them then fails in seconds, not after Ray's start (~10 s) or MLflow's retries.
Nothing here imports MLflow, and Ray only for a cluster's address (the CLI imports it next).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from sweeps.custom import load_trainable
from sweeps.errors import SweepsError, redact
from sweeps.spec import SweepSpec
from trainables.data import load_splits


def check_inputs(spec: SweepSpec, address: str | None, tracking_uri: str | None) -> None:
    """Raise the user's first mistake, in the order a sweep would meet them."""
    load_trainable(spec.trainable)
    load_splits(spec.dataset)  # cached: run_sweep reuses the splits
    check_server(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        from sweeps.cluster import check_reachable

        check_reachable(address)


def check_server(uri: str) -> None:
    """An MLflow server (http or https) must accept connections. Other stores, and whether the
    server is MLflow at all, are MLflow's to check when the sweep opens the store."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return  # a malformed port: MLflow's own message names it
    try:
        with socket.create_connection((parts.hostname, port), timeout=5):
            pass
    except OSError as exc:
        raise SweepsError(
            f"--tracking-uri: the MLflow store {redact(uri)!r} must be reachable, but "
            f"{exc.strerror or exc}"
        ) from None
