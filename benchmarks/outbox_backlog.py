"""How long does the MLflow outbox take to send a backlog that an outage left queued?

``--writes`` epoch results (five metrics each, as ``SweepTracker.log_epoch`` writes them), spread
round-robin over ``--runs`` trial runs, wait in an ``Outbox`` on a fresh sqlite store in a
temporary directory, as after an outage with that many trials running. One ``drain`` then sends
them. Printed per backlog size: the drain's wall time, the part spent inside MLflow's client
calls, the rest (the outbox's own bookkeeping: grouping each run's writes into one ``log_batch``
and taking them off the queue) and the number of calls. The rest should grow in proportion to
the backlog; the ratio column divides it by that of the smallest backlog.

    python benchmarks/outbox_backlog.py [--writes 1000,4000,16000] [--runs 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

from mlflow.tracking import MlflowClient

from sweeps.outbox import Outbox, Write, now_ms

KEYS = ("train_loss", "val_loss", "val_acc", "lr", "epoch_seconds")


class TimedClient:
    """The real client, with the seconds spent in its write calls added up."""

    def __init__(self, client: MlflowClient) -> None:
        self.client, self.seconds, self.calls = client, 0.0, 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)
        if name not in ("log_batch", "set_terminated", "create_run"):
            return real

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        return timed


def backlog(writes: int, runs: int, root: Path) -> tuple[float, float, int]:
    """(drain wall s, of it in MLflow's calls s, calls) for one backlog on a fresh store."""
    uri = f"sqlite:///{root / f'b{writes}.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(f"backlog-{writes}")
    run_ids = [client.create_run(exp, run_name=f"trial-{i}").info.run_id for i in range(runs)]
    timed = TimedClient(client)
    box = Outbox(timed, uri, patience=0, say=lambda line: None)  # type: ignore[arg-type]
    ms = now_ms()
    for i in range(writes):
        step = i // runs + 1
        metrics = [(k, 1.0 / (step + j), ms, step) for j, k in enumerate(KEYS)]
        box.queue.append(Write("log_batch", run_ids[i % runs], metrics=metrics))
    t0 = time.perf_counter()
    assert box.drain(force=True) and not box.queue
    wall = time.perf_counter() - t0
    got = client.get_metric_history(run_ids[-1], "val_acc")
    assert len(got) == writes // runs, (len(got), writes // runs)  # nothing lost or doubled
    return wall, timed.seconds, timed.calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", default="1000,4000,16000", help="backlog sizes, comma-separated")
    p.add_argument("--runs", type=int, default=8, help="trial runs the writes are spread over")
    args = p.parse_args()
    sizes = [int(s) for s in args.writes.split(",")]
    print(f"backlog of epoch results over {args.runs} runs, one drain, fresh sqlite store each\n")
    print("| writes | drain s | in MLflow s | bookkeeping s | ÷ smallest, per write | calls |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        first = None
        for n in sizes:
            wall, mlflow_s, calls = backlog(n, args.runs, Path(tmp))
            rest = wall - mlflow_s
            first = first or rest / n
            print(
                f"| {n} | {wall:.2f} | {mlflow_s:.2f} | {rest:.3f} | {rest / n / first:.2f} "
                f"| {calls} |"
            )


if __name__ == "__main__":
    main()
