"""Ray for a sweep: join a cluster or start a local instance, and check that a trial fits it.

Imports Ray alone, so that the CLI can start Ray while it imports the rest of a sweep.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import ray

from sweeps.errors import SweepsError, first_line
from sweeps.preflight import check_reachable, ray_address
from sweeps.spec import SweepSpec

# A local instance's idle workers (one per CPU, started as the driver connects) import torch
# and the training code (~2 s) while the driver opens MLflow; the first trial actors take them
# over (``tuner.trial_actors_without_runtime_env``). Not Tune: the re-evaluation's workers,
# which preload the same, do not use it. Ray kills an idle worker that has idled this long once
# the trials' placement groups hold every CPU (Ray's default: 1 s), a race with the actors'
# placement; opening the MLflow store or a range test can idle them for seconds.
WORKER_PRELOAD = {
    "preload_python_modules": ["trainables.train_loop"],
    "idle_worker_killing_time_threshold_ms": 60_000,
}


def check_resources(spec: SweepSpec, nodes: Sequence[Mapping[str, float]]) -> None:
    """A trial asking for more than any one node has (``nodes``: each live node's resources)
    would wait forever: Tune places each trial's CPUs and GPUs together on one node."""
    need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
    for key, amount in need.items():
        most = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if amount > 0 and amount > most:
            total = sum(n.get(key, 0.0) for n in nodes)
            where = f"the cluster has {total:g}"
            if len(nodes) > 1:
                where = f"the largest of {len(nodes)} nodes has {most:g} of the cluster's {total:g}"
            raise SweepsError(
                f"resources.{key.lower()}: a trial's share must fit on one node, but got "
                f"({key.lower()}={amount:g}, {where})"
            )
    if not any(all(n.get(k, 0.0) >= v for k, v in need.items()) for n in nodes):
        raise SweepsError(
            "resources: a trial's cpu and gpu must fit on one node together, but no node has "
            f"both (cpu={need['CPU']:g}, gpu={need['GPU']:g})"
        )


# How long a removed working folder may take to come back (Ray unpacks it again at once).
REUNPACK_WAIT_S = 5.0


@contextmanager
def back_in(path: str) -> Iterator[None]:
    """Back in ``path`` afterwards if the block removed the working folder. A Ray job's driver
    runs in its unpacked working_dir, which Ray may delete and unpack again as the driver joins
    the cluster: the process is then in a folder that is gone, and MLflow's sqlite store, which
    resolves ./mlruns on opening, fails with "No such file or directory"."""
    try:
        yield
    finally:
        try:
            os.getcwd()
        except FileNotFoundError:
            deadline = time.monotonic() + REUNPACK_WAIT_S
            while not os.path.isdir(path) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not os.path.isdir(path):
                raise SweepsError(
                    f"working folder: {path!r} must exist, but it was removed as the driver "
                    "joined the Ray cluster"
                ) from None
            os.chdir(path)  # the new folder of the same name


@contextmanager
def stderr_kept() -> Iterator[Callable[[], bytes]]:
    """Hold what is written to file descriptor 2 (Ray's C++ client logs there) and give it
    back at the end, unless an error leaves the block: a refused token repeats its log line
    for ~20 s before ray.init fails, and the one-line error says it all."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)

        def said() -> bytes:
            held.seek(0)
            return held.read()

        ok = False
        try:
            yield said
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                sys.stderr.buffer.write(said())
                sys.stderr.flush()


def start_ray(address: str | None) -> bool:
    """Join ``address`` (or $RAY_ADDRESS), else start a local instance. True if we started one."""
    if ray.is_initialized():
        return False
    given = ray_address(address)
    common = {"logging_level": logging.ERROR, "log_to_driver": False}
    if given:
        check_reachable(*given)
        here = os.getcwd()
        with stderr_kept() as said, back_in(here):
            try:
                ray.init(address=given[0], **common)  # type: ignore[arg-type]
            except (ConnectionError, RuntimeError, ValueError) as exc:
                if b"InvalidAuthToken" in said():
                    raise SweepsError(
                        f"{given[1]}: the Ray cluster at {given[0]!r} must accept this client's "
                        "token (set RAY_AUTH_MODE=token and the cluster's token in "
                        "RAY_AUTH_TOKEN or ~/.ray/auth_token), but it refused it"
                    ) from None
                raise SweepsError(
                    f"{given[1]}: the Ray cluster at {given[0]!r} must be reachable, but "
                    f"{first_line(exc)}"
                ) from None
        return False
    # A new local instance, even where `ray start` left one running on this machine (ray.init
    # would join that, and refuse our settings): no dashboard, token auth as Ray sets it.
    ray.init(
        address="local",
        include_dashboard=False,
        dashboard_host="127.0.0.1",
        _system_config=WORKER_PRELOAD,
        **common,  # type: ignore[arg-type]
    )
    return True
