"""MLflow cost per epoch result (issue 7 (e)): one ``log_batch`` against five ``log_metric`` calls.

Each epoch result of a trial carries the five metrics that ``SweepTracker.log_epoch`` logs
(train_loss, val_loss, val_acc, lr, epoch_seconds). Against a fresh store in a temporary
directory, this logs ``--results`` results per variant into its own run, the variants interleaved
block by block so that load drifts hit all of them alike, and prints the median milliseconds per
result and the ratios:

- ``log_batch``: one ``MlflowClient.log_batch`` with the five metrics (what the sweep does);
- ``log_metric x5``: five ``MlflowClient.log_metric`` calls (what Ray's MLflowLoggerCallback does);
- ``log_batch async``: ``log_batch(..., synchronous=False)``, timed including the final flush.

Besides the wall time per result it prints this process's CPU time per result (on sqlite most of
the wall time is waiting for the disk) and how long the caller is blocked per result (for the
async variant, only the time to queue the write).

Stores: sqlite (the default ``mlflow.db``) and, with ``--stores sqlite,file``, the file store
(in maintenance mode in MLflow 3; enabled here with ``MLFLOW_ALLOW_FILE_STORE=true``).

    python benchmarks/logging_cost.py [--results 200] [--repeats 5] [--stores sqlite,file]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

KEYS = ("train_loss", "val_loss", "val_acc", "lr", "epoch_seconds")


def values(step: int) -> dict[str, float]:
    return {k: 1.0 / (step + i + 1) for i, k in enumerate(KEYS)}


def log_batch(client: MlflowClient, run_id: str, step: int) -> None:
    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, step) for k, v in values(step).items()]
    client.log_batch(run_id, metrics=batch)


def log_metrics(client: MlflowClient, run_id: str, step: int) -> None:
    now = int(time.time() * 1000)
    for k, v in values(step).items():
        client.log_metric(run_id, k, v, timestamp=now, step=step)


VARIANTS: dict[str, Callable[[MlflowClient, str, int], None]] = {
    "log_batch": log_batch,
    "log_metric x5": log_metrics,
}


@dataclass
class Block:
    wall: float  # ms per result, until every write is stored
    cpu: float  # ms of this process's CPU per result (the rest of the wall time is I/O wait)
    caller: float  # ms per result the caller is blocked (less than wall only when async)


def block(client: MlflowClient, exp: str, variant: str, n: int) -> Block:
    """Log ``n`` results into a new run."""
    run_id = client.create_run(exp, run_name=variant).info.run_id
    t0, c0 = time.perf_counter(), time.process_time()
    if variant == "log_batch async":
        now = int(time.time() * 1000)
        ops = [
            client.log_batch(
                run_id,
                metrics=[Metric(k, v, now, s) for k, v in values(s).items()],
                synchronous=False,
            )
            for s in range(n)
        ]
        caller = time.perf_counter() - t0
        for op in ops:
            if op is not None:
                op.wait()
    else:
        fn = VARIANTS[variant]
        for s in range(n):
            fn(client, run_id, s)
        caller = time.perf_counter() - t0
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    client.set_terminated(run_id)
    return Block(wall * 1000 / n, cpu * 1000 / n, caller * 1000 / n)


def uri_for(store: str, d: Path) -> str:
    if store == "sqlite":
        return f"sqlite:///{d / 'mlflow.db'}"
    if store == "file":
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 refuses it otherwise
        return (d / "mlruns").as_uri()
    raise SystemExit(f"--stores: each store must be sqlite or file, but got {store!r}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--results", type=int, default=200, help="epoch results per variant and block")
    p.add_argument("--repeats", type=int, default=5, help="blocks per variant")
    p.add_argument("--stores", default="sqlite", help="comma-separated: sqlite, file")
    p.add_argument("--no-async", action="store_true", help="skip the synchronous=False variant")
    args = p.parse_args()
    variants = [*VARIANTS, *([] if args.no_async else ["log_batch async"])]
    rows = []
    for store in args.stores.split(","):
        with tempfile.TemporaryDirectory(prefix="sweeps-logging-") as d:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the file store's deprecation notice
                client = MlflowClient(tracking_uri=uri_for(store, Path(d)))
                exp = client.create_experiment("logging_cost")
            block(client, exp, "log_batch", 20)  # warm-up: schema, caches, connections
            blocks: dict[str, list[Block]] = {v: [] for v in variants}
            for _ in range(args.repeats):
                for v in variants:
                    blocks[v].append(block(client, exp, v, args.results))
        rows.append((store, blocks))
    print(
        f"MLflow cost per epoch result (5 metrics), medians of {args.repeats} blocks of "
        f"{args.results} results\n"
    )
    print(
        "| store | variant | ms per result | blocks (ms) | vs log_batch | CPU ms per result "
        "| caller blocked, ms per result |"
    )
    print("|---|---|---|---|---|---|---|")
    meds = []
    for store, blocks in rows:
        med = {v: statistics.median(b.wall for b in bs) for v, bs in blocks.items()}
        meds.append((store, med))
        for v, bs in blocks.items():
            each = ", ".join(f"{b.wall:.2f}" for b in bs)
            cpu = statistics.median(b.cpu for b in bs)
            caller = statistics.median(b.caller for b in bs)
            print(
                f"| {store} | {v} | {med[v]:.2f} | {each} | {med[v] / med['log_batch']:.2f}x "
                f"| {cpu:.2f} | {caller:.2f} |"
            )
    for store, med in meds:
        print(
            f"{store}: five log_metric calls cost {med['log_metric x5'] / med['log_batch']:.2f}x "
            f"one log_batch ({med['log_metric x5']:.2f} ms against {med['log_batch']:.2f} ms per "
            "result)"
        )


if __name__ == "__main__":
    main()
