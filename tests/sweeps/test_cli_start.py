"""The CLI starts Ray while a thread imports the rest of the sweep (real Ray, fresh processes:
this one has imported everything already)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

STORE = "mlflow.store.tracking.sqlalchemy_store"


def python(code: str, *args: str, cwd: Path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_ray_starts_while_the_sweep_and_its_store_are_imported(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "import sweeps.cluster, sweeps.run as run\n"
        "spans = {}\n"
        "def timed(name, fn):\n"
        "    def call(*args):\n"
        "        t = time.monotonic()\n"
        "        try:\n"
        "            return fn(*args)\n"
        "        finally:\n"
        "            spans[name] = (t, time.monotonic())\n"
        "    return call\n"
        "run._import_sweep = timed('imports', run._import_sweep)\n"
        "sweeps.cluster.start_ray = timed('ray', sweeps.cluster.start_ray)\n"
        "started = run.start_beside_imports(None, 'sqlite:///' + sys.argv[1])\n"
        "import ray\n"
        "(i0, i1), (r0, r1) = spans['imports'], spans['ray']\n"
        f"print(started, ray.is_initialized(), i0 < r1 and r0 < i1, 'sweeps.sweep' in sys.modules, "
        f"{STORE!r} in sys.modules)\n"
        "ray.shutdown()\n"
    )
    started, up, overlapped, sweep, store = python(code, str(tmp_path / "mlflow.db"), cwd=tmp_path)
    assert (started, up, overlapped) == ("True", "True", "True")
    assert (sweep, store) == ("True", "True")


def test_a_failed_import_shuts_down_the_ray_it_started(tmp_path: Path) -> None:
    code = (
        "import ray\n"
        "import sweeps.run as run\n"
        "def boom(uri):\n"
        "    raise RuntimeError('boom')\n"
        "run._import_sweep = boom\n"
        "try:\n"
        "    run.start_beside_imports(None, None)\n"
        "except RuntimeError as exc:\n"
        "    print(exc, ray.is_initialized())\n"
    )
    assert python(code, cwd=tmp_path) == ["boom", "False"]


@pytest.mark.parametrize(
    ("uri", "loaded"),
    [
        ("sqlite:///mlflow.db", "True"),
        ("postgresql+psycopg2://u@127.0.0.1:1/db", "True"),  # imported, never connected
        ("http://127.0.0.1:1", "False"),
        ("file:///tmp/mlruns", "False"),
    ],
)
def test_only_a_database_store_is_preloaded(tmp_path: Path, uri: str, loaded: str) -> None:
    code = (
        "import sys\n"
        "from sweeps.tracking import preload_store\n"
        f"assert {STORE!r} not in sys.modules\n"
        "preload_store(sys.argv[1])\n"
        f"print({STORE!r} in sys.modules)\n"
    )
    assert python(code, uri, cwd=tmp_path) == [loaded]
