"""preflight.check_server: only an http(s) MLflow server is probed, and only for a listener."""

from __future__ import annotations

import socket

import pytest

from sweeps.errors import SweepsError
from sweeps.preflight import check_server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_listening_server_passes() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_server(f"http://127.0.0.1:{s.getsockname()[1]}")


def test_a_server_nobody_listens_at_is_refused_without_its_password() -> None:
    port = closed_port()
    with pytest.raises(SweepsError) as info:
        check_server(f"http://me:secret@127.0.0.1:{port}/mlflow")
    message = str(info.value)
    assert message.startswith(f"--tracking-uri: the MLflow store 'http://***@127.0.0.1:{port}")
    assert "must be reachable, but" in message and "secret" not in message


@pytest.mark.parametrize(
    "uri",
    [
        "",  # no URI given: the default sqlite store
        "sqlite:///mlflow.db",
        "file:///tmp/mlruns",
        "postgresql://u@127.0.0.1:1/db",  # a database is MLflow's to open
        "databricks",
        "http://127.0.0.1:port",  # a malformed port: MLflow's own error names it
    ],
)
def test_other_stores_are_left_to_mlflow(uri: str) -> None:
    check_server(uri)
