"""When each step of the CLI's start happens: ``python -m sweeps.run`` with its steps timed.

Runs ``sweeps.run.main`` in this process, in a fresh folder (a new MLflow sqlite store), with
wrappers around the steps of its start: its own imports, Ray's start, the imports of the thread
beside it, the data facts, the MLflow store's opening and parent run, and the first trial's
start (Tune's actor is up). Prints seconds from this script's start; nothing in ``sweeps/`` is
edited. Arguments go to the CLI as they are. ``start_ray`` shows twice: the CLI's call, then
``run_sweep``'s, which returns at once on the Ray the CLI started.

    SWEEPS_DATA_DIR=../shared/data python benchmarks/cli_timeline.py cardio_clr \
        [--set search.families=[fixed] --set search.trials_per_family=8 --set train.epochs=20]
"""

from __future__ import annotations

import time

T0 = time.monotonic()

import functools  # noqa: E402  (after T0: the CLI's own imports are timed below)
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

MARKS: list[tuple[float, str]] = []


def mark(label: str) -> None:
    MARKS.append((time.monotonic() - T0, label))


def wrap(owner: Any, name: str, label: str) -> None:
    fn: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        mark(f"{label} begins")
        try:
            return fn(*args, **kwargs)
        finally:
            mark(f"{label} ends")

    setattr(owner, name, timed)


def main() -> int:
    os.chdir(tempfile.mkdtemp(prefix="sweeps-cli-timeline-"))
    import sweeps.run as run  # the CLI's imports, as `python -m sweeps.run` does them

    mark("CLI imports done")
    import sweeps.cluster

    wrap(sweeps.cluster, "start_ray", "start_ray")
    import_sweep = run._import_sweep

    def imports_then_wrap(tracking_uri: str | None) -> None:
        import_sweep(tracking_uri)
        mark("the thread's imports done")
        import sweeps.sweep
        import sweeps.tuner

        wrap(sweeps.sweep, "data_facts", "data facts")
        wrap(sweeps.sweep.SweepTracker, "__init__", "MLflow store open")
        wrap(sweeps.sweep.SweepTracker, "start", "MLflow parent run")
        on_start = sweeps.tuner.TrialLogger.on_trial_start

        def first_start(self: Any, *args: Any, **kwargs: Any) -> None:
            if not any(label == "first trial starts" for _, label in MARKS):
                mark("first trial starts")
            on_start(self, *args, **kwargs)

        sweeps.tuner.TrialLogger.on_trial_start = first_start  # type: ignore[method-assign]

    run._import_sweep = imports_then_wrap
    try:
        return run.main(sys.argv[1:])
    finally:
        mark("the command ends")
        for seconds, label in MARKS:
            print(f"{seconds:8.2f} s  {label}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
