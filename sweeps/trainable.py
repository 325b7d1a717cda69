"""The thin Ray wrapper around ``trainables.train_loop``: checkpoints in, ``tune.report`` out."""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, get_args

import torch
from ray import tune

from sweeps.custom import load_trainable, trainable_name
from trainables.train_loop import Status

STATE_FILE = "state.pt"
METRICS_FILE = "metrics.json"  # the result the checkpoint was taken with
# Every result up to the checkpoint: a resumed driver logs those its crashed one never sent.
HISTORY_FILE = "history.json"
# Epochs a trial reports between two results it sends to Tune ride along with the next one
# under this key. A result costs a round trip to the driver, during which the trial waits: ~4-7
# ms, as long as a cardio epoch's val pass. Results go at the epochs where the scheduler decides,
# with a checkpoint, at the end, and else at least this often (MLflow's view stays live).
EARLIER = "earlier_epochs"
SEND_EVERY_S = 1.0
# Tests only: "epoch=E[,times=N][,family=F]" makes trials raise before reporting epoch E, on
# their first N attempts (default: every attempt), in family F only if given; instead of raising,
# ",touch=PATH" makes that file there and ",until=PATH" waits until that file exists (both: in
# that order); "delay=S" makes every epoch S seconds slower; ";" joins several.
FAULT_ENV = "SWEEPS_INJECT_FAULT"
# Where the attempt counts live, one file per trial id (default: the trial's folder, which Ray
# may re-copy from its staging area between attempts, losing the count).
FAULT_DIR_ENV = "SWEEPS_INJECT_FAULT_DIR"


# What every report must hold (README, "Add your own sweep"), and the statuses it may give.
REQUIRED = ("epoch", "val_acc", "status")
STATUSES: tuple[str, ...] = get_args(Status)
ENDS = tuple(s for s in STATUSES if s != "running")  # a trial's last report gives one of these


class InjectedFault(RuntimeError):
    pass


class TrainableContractError(ValueError):
    """A trainable broke the report contract: its trial fails with this one line."""


class _Diverged(Exception):
    """Unwinds a trainable whose val_acc went non-finite, which ends its trial as diverged."""


def checked(metrics: Mapping[str, Any], entry: str | None) -> dict[str, Any]:
    """``metrics`` if it keeps the contract, with a non-finite val_acc made a diverged end (as
    ``train_loop`` reports one, so ASHA and Optuna see a finite worst value); else the error.
    Tune's own check would end the whole sweep with a traceback instead of failing the trial."""
    name = trainable_name(entry)
    missing = [k for k in REQUIRED if k not in metrics]
    if missing:
        raise TrainableContractError(
            f"trainable {name}: report() must be given {', '.join(REQUIRED)}, but got no "
            f"{', '.join(missing)} (keys: {', '.join(sorted(map(str, metrics)))})"
        )
    if metrics["status"] not in STATUSES:
        raise TrainableContractError(
            f"trainable {name}: report()'s status must be one of {', '.join(STATUSES)}, but got "
            f"{metrics['status']!r}"
        )
    epoch, val_acc = metrics["epoch"], metrics["val_acc"]
    for key, value in (("epoch", epoch), ("val_acc", val_acc)):
        # ASHA and Optuna compute with these: a string ("0.7") would crash the whole sweep.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TrainableContractError(
                f"trainable {name}: report()'s {key} must be a number, but got {value!r}"
            )
    if not (math.isfinite(epoch) and float(epoch).is_integer()):
        raise TrainableContractError(
            f"trainable {name}: report()'s epoch must be a whole number, but got {epoch!r}"
        )
    out = {**metrics, "epoch": int(epoch), "val_acc": float(val_acc)}
    if math.isfinite(out["val_acc"]):
        return out
    return {**out, "val_acc": 0.0, "status": "diverged"}


def _maybe_fail(epoch: int, family: str) -> None:
    raw = os.environ.get(FAULT_ENV)
    if not raw:
        return
    faults = [dict(part.split("=", 1) for part in one.split(",")) for one in raw.split(";")]
    faults = [f for f in faults if f.get("family", family) == family]
    for f in faults:
        time.sleep(float(f.get("delay", 0)))
    hit = [f for f in faults if "epoch" in f and int(f["epoch"]) == epoch]
    if not hit:
        return
    fault = hit[0]
    if "touch" in fault or "until" in fault:
        if "touch" in fault:
            Path(fault["touch"]).touch()
        while "until" in fault and not Path(fault["until"]).exists():
            time.sleep(0.1)
        return
    # The count lives in a file, so that it survives the retry's new process.
    context = tune.get_context()
    folder = os.environ.get(FAULT_DIR_ENV) or context.get_trial_dir()
    marker = Path(folder) / f"injected_faults-{context.get_trial_id()}"
    done = int(marker.read_text()) if marker.exists() else 0
    if done >= int(fault.get("times", 1_000_000)):
        return
    marker.write_text(str(done + 1))
    raise InjectedFault(f"injected fault at epoch {epoch} ({FAULT_ENV}), attempt {done + 1}")


def ray_trainable(
    config: dict[str, Any],
    shared: dict[str, Any],
    entry: str | None,
    decide_at: Mapping[str, Collection[int]] | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Ray's function trainable: the sampled ``config`` plus the spec's ``shared`` sections,
    trained by ``train_loop`` or the spec's custom ``entry`` (module:function). ``decide_at``:
    per family, the epochs at which its scheduler decides (``tuner.decision_epochs``); a result
    is sent to Tune at each of them, the epochs since the last one under ``EARLIER``. ``env``:
    the variables Tune would have given the actor's process (``tuner.run_search`` takes them
    off its runtime env)."""
    os.environ.update(env or {})
    state = None
    history: list[dict[str, Any]] = []
    ckpt = tune.get_checkpoint()
    if ckpt is not None:  # a retried or restored trial continues from its last checkpoint
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, weights_only=False)
            saved = json.loads((Path(d) / METRICS_FILE).read_text())
            history = read_history(Path(d))
        if saved.get("status", "running") != "running":
            # It had ended when the driver died, before Ray recorded that: say so again.
            tune.report(saved)
            return
    extra = {}
    if state is not None and "epoch" in state:  # tells MLflow where the trial picked up
        extra["resumed_from_epoch"] = int(state["epoch"])
    decide = set((decide_at or {}).get(str(config.get("family")), ()))
    held: list[dict[str, Any]] = []
    sent = time.monotonic()

    def report(metrics: dict[str, Any], new_state: dict[str, Any] | None) -> None:
        nonlocal held, sent
        ok = checked(metrics, entry)
        diverged = ok["status"] != metrics["status"]
        _maybe_fail(int(ok["epoch"]), str(config.get("family")))
        metrics = {**ok, **extra}
        history.append(metrics)
        if (
            new_state is None
            and metrics.get("status", "running") == "running"
            and int(metrics["epoch"]) not in decide
            and time.monotonic() - sent < SEND_EVERY_S
        ):
            held.append(metrics)
            return
        result = {**metrics, EARLIER: held} if held else metrics
        held, sent = [], time.monotonic()
        if new_state is None:
            tune.report(result)
        else:
            with tempfile.TemporaryDirectory() as d:
                torch.save(new_state, Path(d) / STATE_FILE)
                (Path(d) / METRICS_FILE).write_text(json.dumps(metrics))
                (Path(d) / HISTORY_FILE).write_text(json.dumps(history))
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
        if diverged:
            raise _Diverged

    try:
        load_trainable(entry)({**shared, **config}, report, checkpoint=state)
    except _Diverged:
        return
    name = trainable_name(entry)
    if not history:
        raise TrainableContractError(
            f"trainable {name}: report(metrics, state) must be called once per epoch, but it "
            "returned without a report"
        )
    if history[-1]["status"] == "running":
        raise TrainableContractError(
            f"trainable {name}: its last report must end the trial (status completed, diverged "
            f"or collapsed), but it returned after a 'running' one (epoch {history[-1]['epoch']})"
        )


def read_history(directory: Path) -> list[dict[str, Any]]:
    """The results reported up to the checkpoint in ``directory`` (none for an older one)."""
    path = directory / HISTORY_FILE
    return list(json.loads(path.read_text())) if path.exists() else []
