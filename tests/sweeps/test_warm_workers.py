"""A local Ray instance's idle workers import torch ahead, and the first trial actors take them
over: Tune's actors carry no runtime env, and the trial sets Tune's variables itself."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.tune.execution import class_cache

import sweeps.sweep as sweep_module
from sweeps.reeval import SEED_BASE
from sweeps.spec import load_spec
from sweeps.sweep import RunOptions, run_sweep
from sweeps.tuner import trial_actors_without_runtime_env

USER_MODULE = """
import os
import sys
import uuid
from pathlib import Path

from trainables import train_loop


def fit(config, report, checkpoint=None):
    pid, flag, tune = os.getpid(), os.environ.get("PL_DISABLE_FORK"), "ray.tune" in sys.modules
    Path(os.environ["MARKS"], f"{config['seed']}-{pid}-{flag}-{tune}-{uuid.uuid4().hex}").touch()
    return train_loop(config, report, checkpoint)
"""


def test_trial_actors_lose_tunes_runtime_env_only_inside_the_block() -> None:
    before = dict(class_cache.DEFAULT_ENV_VARS)
    assert before == {"PL_DISABLE_FORK": "1"}  # what Ray 2.60's Tune gives its trial actors
    with trial_actors_without_runtime_env():
        assert class_cache.DEFAULT_ENV_VARS == {}
    assert before == class_cache.DEFAULT_ENV_VARS
    with pytest.raises(RuntimeError), trial_actors_without_runtime_env():
        raise RuntimeError("a failed search")
    assert before == class_cache.DEFAULT_ENV_VARS


def descendants(root: int) -> set[int]:
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # it ended meanwhile
            continue
    found, todo = set(), [root]
    while todo:
        of = todo.pop()
        kids = [pid for pid, ppid in parent.items() if ppid == of]
        found.update(kids)
        todo += kids
    return found


def idle_workers() -> dict[int, bool]:
    """This process's idle Ray workers, each with whether torch's library is loaded in it."""
    found = {}
    for pid in descendants(os.getpid()):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::IDLE"):
                found[pid] = "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()
        except OSError:  # it ended meanwhile
            continue
    return found


@pytest.mark.slow
def test_first_trials_run_in_the_workers_ray_started_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: Callable[[Path], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user_code").mkdir()
    (tmp_path / "user_code" / "warm_probe.py").write_text(USER_MODULE)
    marks = tmp_path / "marks"
    marks.mkdir()
    # Ray's workers inherit this process's environment.
    monkeypatch.setenv("MARKS", str(marks))
    monkeypatch.setenv("RAY_ADDRESS", "")
    path = os.pathsep.join([str(tmp_path / "user_code"), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.delenv("PL_DISABLE_FORK", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "user_code"))
    spec = load_spec(
        "digits_lr",
        ["trainable=warm_probe:fit", "search.families=[fixed]", "search.trials_per_family=4",
         "train.epochs=3", "early_stopping.name=none", "reeval.seeds=1"],
    )  # fmt: skip
    warm: set[int] = set()
    real_search = sweep_module.run_search

    def search(*args: Any, **kwargs: Any) -> Any:
        # Ray starts one idle worker per CPU; their preload takes seconds on a busy box: wait
        # until all of them have torch.
        cpus = int(ray.cluster_resources()["CPU"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            workers = idle_workers()
            if len(workers) >= cpus and all(workers.values()):
                warm.update(workers)
                break
            time.sleep(0.2)
        return real_search(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "run_search", search)
    run_sweep(
        spec,
        RunOptions(tracking_uri=mlflow_store(tmp_path / "m.db"), storage=str(tmp_path / "ray")),
    )
    assert warm, "Ray had not one idle worker per CPU, each with torch, within 120 s"
    runs = [m.name.split("-") for m in marks.iterdir()]
    trials = [r for r in runs if int(r[0]) < SEED_BASE]
    assert len(trials) == 4, runs
    assert {int(pid) for _, pid, *_ in trials} <= warm, (trials, warm)
    assert {flag for _, _, flag, *_ in trials} == {"1"}, trials
    # The re-evaluation's workers preload the same, and still do without Tune.
    reevals = [r for r in runs if int(r[0]) >= SEED_BASE]
    assert [tune for *_, tune, _ in reevals] == ["False"], runs
