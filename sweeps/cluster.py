"""Ray for a sweep: join a cluster or start a local instance, and check that a trial fits it.

Imports Ray alone, so that the CLI can start Ray while it imports the rest of a sweep.
"""

from __future__ import annotations

import logging

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


def check_resources(spec: SweepSpec, resources: dict[str, float]) -> None:
    """A trial asking for more than the cluster has would wait forever: refuse it up front."""
    for key, need in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu)):
        have = resources.get(key, 0.0)
        if need > 0 and need > have:
            raise SweepsError(
                f"resources.{key.lower()}: a trial's share must fit the cluster, but got "
                f"({key.lower()}={need:g}, the cluster has {have:g})"
            )


def start_ray(address: str | None) -> bool:
    """Join ``address`` (or $RAY_ADDRESS), else start a local instance. True if we started one."""
    if ray.is_initialized():
        return False
    given = ray_address(address)
    common = {"logging_level": logging.ERROR, "log_to_driver": False}
    if given:
        check_reachable(*given)
        try:
            ray.init(address=given[0], **common)  # type: ignore[arg-type]
        except (ConnectionError, RuntimeError, ValueError) as exc:
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
