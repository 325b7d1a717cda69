"""preflight: an http(s) MLflow server and a Ray GCS address are probed for a listener; other
stores and Ray's own address forms are left to MLflow and Ray."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from sweeps.errors import SweepsError
from sweeps.outbox import TrackingError, open_client
from sweeps.preflight import (
    check_device,
    check_inputs,
    check_not_file_store,
    check_reachable,
    check_server,
    ray_address,
    speaks_http,
)
from sweeps.spec import load_spec
from sweeps.tracking import ui_hint


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_listening_server_and_cluster_pass() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_server(f"http://127.0.0.1:{s.getsockname()[1]}")
        check_reachable(f"127.0.0.1:{s.getsockname()[1]}")


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
    ],
)
def test_other_stores_are_left_to_mlflow(uri: str) -> None:
    check_server(uri)


def test_a_server_uri_with_a_malformed_port_is_refused() -> None:
    # MLflow would retry it for minutes before naming the port.
    with pytest.raises(SweepsError, match=r"^--tracking-uri: 'http://127.0.0.1:port' must have"):
        check_server("http://127.0.0.1:port")


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1:{port}", "must be reachable (host:port"),
        ("127.0.0.1:abc", "'abc' is not a port number"),
        ("localhost", "it has no :port"),
    ],
)
def test_a_cluster_address_nobody_listens_at_is_refused(address: str, why: str) -> None:
    address = address.format(port=closed_port())
    with pytest.raises(SweepsError, match=r"^--address: the Ray cluster at ") as info:
        check_reachable(address)
    assert why in str(info.value) and repr(address) in str(info.value)


def test_an_http_server_is_not_taken_for_a_gcs() -> None:
    # ray.init retried a dashboard's port (8265 for 6379) for minutes.
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert speaks_http("127.0.0.1", port)
        with pytest.raises(SweepsError, match="an HTTP server answers there") as info:
            check_reachable(f"127.0.0.1:{port}")
        assert str(info.value).startswith(f"--address: the Ray cluster at '127.0.0.1:{port}'")
    finally:
        server.shutdown()
        server.server_close()


def test_auto_is_left_to_ray_and_a_ray_client_address_is_checked() -> None:
    check_reachable("auto")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_reachable(f"ray://127.0.0.1:{s.getsockname()[1]}")
    with pytest.raises(SweepsError, match=r"^--address: the Ray cluster at 'ray://127.0.0.1:") as e:
        check_reachable(f"ray://127.0.0.1:{closed_port()}")
    assert "(the head's Ray Client server, 10001 by default)" in str(e.value)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("http://head:8265", "the dashboard's URL: pass that to `python -m sweeps.submit`"),
        ("https://head:8265", "the dashboard's URL"),
        ("tcp://head:6379", "host:port, ray://host:port or auto must be given"),
    ],
)
def test_an_address_of_another_kind_is_refused(address: str, why: str) -> None:
    with pytest.raises(SweepsError, match=r"^\$RAY_ADDRESS: ") as info:
        check_reachable(address, "$RAY_ADDRESS")
    assert why in str(info.value) and repr(address) in str(info.value)


def test_the_address_names_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert ray_address(None) == ("head:6379", "$RAY_ADDRESS")
    assert ray_address("other:6379") == ("other:6379", "--address")


def test_an_unknown_compile_mode_is_refused_before_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEPS_COMPILE", "maybe")
    with pytest.raises(SweepsError, match=r"^\$SWEEPS_COMPILE: must be one of .* got 'maybe'"):
        check_inputs(load_spec("digits_lr"), None, "http://127.0.0.1:9")


def test_cuda_without_a_gpu_is_refused_before_ray_unless_a_cluster_runs_the_trials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SweepsError, match=r"^train.device: 'cuda' needs a GPU that torch can use"):
        check_inputs(load_spec("digits_lr", ["train.device=cuda"]), None, "")
    for device in ("auto", "cpu"):
        check_device(device)
    with socket.socket() as s:  # a cluster's workers may have the GPU: not judged here
        s.bind(("127.0.0.1", 0))
        s.listen()
        address = f"127.0.0.1:{s.getsockname()[1]}"
        check_inputs(load_spec("digits_lr", ["train.device=cuda"]), address, "")
        # ... but a range test runs here, on the driver.
        with pytest.raises(SweepsError, match=r"^train.device: 'cuda' needs a GPU"):
            spec = load_spec("digits_lr", ["train.device=cuda", "search.bounds=range_test"])
            check_inputs(spec, address, "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_device("cuda")


@pytest.mark.parametrize(
    "uri", ["./mlruns", "/tmp/mlruns", "mlruns", "file:./mlruns", "file:///tmp/mlruns", "C:\\runs"]
)
def test_a_file_store_is_refused_before_ray_unless_mlflow_is_told_to_allow_it(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(SweepsError) as info:
        check_inputs(load_spec("digits_lr"), None, uri)
    assert str(info.value) == (
        f"--tracking-uri: {uri!r} must be a database or server URI (sqlite:///PATH, "
        "postgresql://..., http(s)://...), but it is a file store, which MLflow 3 refuses (use "
        "e.g. sqlite:///mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true)"
    )
    # Every client is opened through open_client (sweeps.report and sweeps.outbox too).
    with pytest.raises(TrackingError, match=r"but it is a file store, which MLflow 3 refuses"):
        open_client(uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_not_file_store(uri)
    # The command a sweep prints to see its runs: `mlflow ui` refuses a file store as well.
    assert ui_hint(uri) == f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {uri}"
    assert ui_hint("sqlite:///m.db") == "mlflow ui --backend-store-uri sqlite:///m.db"
    for other in ("", "sqlite:///m.db", "postgresql://u@h/db", "http://127.0.0.1:9", "databricks",
                  "uc:databricks", "http://[::1"):  # fmt: skip
        monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
        check_not_file_store(other)
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
