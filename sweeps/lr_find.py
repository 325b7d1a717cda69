"""The LR range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks", §3.3).

Train the spec's model for a few hundred batches while the rate rises every batch from ``min_lr``
to ``max_lr``, record the loss, and read the bounds of a cyclical schedule off the curve: the rate
stops being useful where the loss stops falling.

Three layers, each usable alone:

* pure core: :func:`range_test` (torch, no MLflow), :func:`suggest` (numpy only) and
  :func:`apply_range_test` (the spec with its ``search.base_lr``/``search.max_lr`` derived);
* MLflow: :func:`log_range_test` (one run tagged ``sweeps.role=lr_find``, batched metrics, a PNG);
* CLI: ``python -m sweeps.lr_find NAME|FILE [--set k=v ...] [--min-lr] [--max-lr] [--steps]
  [--mode exp|linear] [--tracking-uri URI]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from mlflow.utils.validation import MAX_METRICS_PER_BATCH
from pydantic import ValidationError
from rich.console import Console
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ExponentialLR, LinearLR, LRScheduler

from search_spaces import FloatRange
from sweeps.errors import (
    EXIT_INTERRUPTED,
    OneLineParser,
    SweepsError,
    fail,
    format_validation_error,
    uri_named,
)
from sweeps.plots import plot_range_test
from sweeps.preflight import check_device, check_server, check_sqlite
from sweeps.spec import SweepSpec, load_spec, validate
from sweeps.tracking import (
    SweepTracker,
    experiment_id,
    git_commit,
    redact,
    resolve_uri,
    ui_hint,
)
from trainables import DataError
from trainables.data import load_dataset
from trainables.models import build_model
from trainables.optimizers import build_optimizer
from trainables.steps import evaluate
from trainables.train_loop import resolve_device

__all__ = [
    "FALL_TOLERANCE",
    "MIN_FALL",
    "Mode",
    "Progress",
    "RangeTest",
    "RangeTestError",
    "RangeTestSettings",
    "Suggestion",
    "apply_range_test",
    "build_range_schedule",
    "derived_ranges",
    "log_range_test",
    "main",
    "plot_range_test",
    "range_test",
    "smooth",
    "suggest",
]

Mode = Literal["exp", "linear"]

MIN_STEPS = 10
# Every batch's rate and loss are kept and logged: 100,000 is hours of cardio batches.
MAX_STEPS = 100_000
MAX_SEED = 2**32 - 1  # as sampler.seed
NEAR_MIN = 0.05  # a last smoothed loss this close to the minimum (relative) has not turned up
# Progress every quarter of the test, and at least this often.
PROGRESS_SECONDS = 10.0
# max_lr is where the smoothed loss has done all but this share of its fall (see ``suggest``).
FALL_TOLERANCE = 0.05
# A curve "falls" only if its minimum lies this share of the starting level below the start.
MIN_FALL = 0.05
# ... over at least this many points, or there is no slope to read.
MIN_FALLING_POINTS = 3
# Smith: base_lr = max_lr/4 .. max_lr/3.
BASE_LR_DIVISORS = (4.0, 3.0)

LOSS_KEY = "lr_find/loss"
SMOOTHED_KEY = "lr_find/smoothed_loss"
LR_KEY = "lr_find/lr"
VAL_ACC_KEY = "lr_find/val_acc"
ROLE = "lr_find"
PLOT_NAME = "lr_find.png"


class RangeTestError(SweepsError):
    """Bad range-test settings, or a loss curve that cannot give a suggestion."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.rule = message


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeTestSettings:
    """How the test runs; validated on construction (each error names the field, value, rule).

    ``smoothing`` is the factor β of the bias-corrected exponential moving average. Its default is
    0.9, not fastai's 0.98: the average lags the raw loss by about β/(1-β) batches, and at 0.98
    (49 batches, 1.5 decades of rate over 200 exponential steps from 1e-5 to 10) the smoothed
    minimum on digits sits 4x to the right of the raw one, and on cardio with momentum 10x, and
    the 4x-best stop never fires. At 0.9 the lag is 9 batches (about 0.27 decades).

    The curve also depends on ``steps``: the loss falls with training as well as with the rate,
    so a shorter test (fewer batches before each rate) suggests higher rates. Smith runs the
    test over a few epochs; 200 batches are 12 epochs of digits_lr and 1.4 of cardio_clr.
    """

    min_lr: float = 1e-5
    max_lr: float = 10.0
    steps: int = 200
    mode: Mode = "exp"
    smoothing: float = 0.9
    stop_factor: float = 4.0
    val_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_lr) and self.min_lr > 0):
            raise RangeTestError(
                "min_lr", f"`0 < min_lr` (finite) must hold, but got (min_lr={self.min_lr})"
            )
        if not (math.isfinite(self.max_lr) and self.max_lr > self.min_lr):
            raise RangeTestError(
                "max_lr",
                f"`min_lr < max_lr` (finite) must hold, but got (min_lr={self.min_lr}, "
                f"max_lr={self.max_lr})",
            )
        if isinstance(self.steps, bool) or not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise RangeTestError(
                "steps",
                f"`{MIN_STEPS} <= steps <= {MAX_STEPS}` must hold (a curve to read, in one "
                f"sitting), but got (steps={self.steps})",
            )
        if self.mode not in get_args(Mode):
            raise RangeTestError(
                "mode", f"`mode` must be 'exp' or 'linear', but got (mode={self.mode!r})"
            )
        if not 0 <= self.smoothing < 1:
            raise RangeTestError(
                "smoothing",
                f"`0 <= smoothing < 1` must hold, but got (smoothing={self.smoothing})",
            )
        if not (math.isfinite(self.stop_factor) and self.stop_factor > 1):
            raise RangeTestError(
                "stop_factor",
                f"`stop_factor > 1` (finite) must hold, but got (stop_factor={self.stop_factor})",
            )
        if isinstance(self.seed, bool) or not 0 <= self.seed <= MAX_SEED:
            raise RangeTestError(
                "seed", f"`0 <= seed <= {MAX_SEED}` must hold, but got (seed={self.seed})"
            )
        if not self.val_every >= 0:
            raise RangeTestError(
                "val_every",
                f"`val_every >= 0` must hold (0: never), but got (val_every={self.val_every})",
            )

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    """Rates read off a range-test curve (see :func:`suggest` for the rules)."""

    steepest_lr: float
    max_lr: float
    base_lr_low: float
    base_lr_high: float
    # The rate at the minimum of the smoothed loss: where it starts rising (for plots and hints).
    min_loss_lr: float

    def metrics(self) -> dict[str, float]:
        return {
            "suggested_steepest_lr": self.steepest_lr,
            "suggested_max_lr": self.max_lr,
            "suggested_base_lr_low": self.base_lr_low,
            "suggested_base_lr_high": self.base_lr_high,
            "suggested_min_loss_lr": self.min_loss_lr,
        }


@dataclass(frozen=True)
class RangeTest:
    """One range test: per batch the rate it trained with, its raw and its smoothed loss.

    The arrays have one entry per batch run (``steps`` unless it stopped early; the last entry is
    then the batch that tripped the stop, and its loss may be non-finite). ``val_steps`` and
    ``val_acc`` hold the validation accuracy after those batches (empty when ``val_every`` is 0).
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    val_steps: np.ndarray
    val_acc: np.ndarray
    stopped_early: bool
    suggestion: Suggestion
    settings: RangeTestSettings
    seconds: float

    @property
    def steps_run(self) -> int:
        return int(self.lrs.size)


@dataclass(frozen=True)
class Progress:
    """What the ``progress`` callback of :func:`range_test` sees, about every 25 % of steps
    and at least every ``PROGRESS_SECONDS``."""

    step: int  # batches done, 1-based
    steps: int
    lr: float
    smoothed_loss: float
    stopped: bool


# -- the rate schedule -------------------------------------------------------------------------


def build_range_schedule(
    optimizer: Optimizer, min_lr: float, max_lr: float, steps: int, mode: Mode = "exp"
) -> LRScheduler:
    """An LR schedule (a torch ``LRScheduler``) that, stepped once per batch, gives ``min_lr`` at
    batch 0 and exactly ``max_lr`` at batch ``steps - 1``; it sets the optimizer's rate itself.

    exp: ``ExponentialLR`` from ``min_lr`` with gamma = (max/min)^(1/(steps-1)).
    linear: torch's ``LinearLR`` accepts factors in (0, 1] only, so the optimizer starts at
    ``max_lr`` and the factor runs from min/max up to 1 over ``steps - 1`` iterations (the
    constructor applies the start factor, so batch 0 trains at ``min_lr``).
    """
    if steps < 2:
        raise RangeTestError("steps", f"`steps >= 2` must hold, but got (steps={steps})")
    for group in optimizer.param_groups:
        group["lr"] = min_lr if mode == "exp" else max_lr
    if mode == "exp":
        return ExponentialLR(optimizer, gamma=(max_lr / min_lr) ** (1.0 / (steps - 1)))
    return LinearLR(optimizer, start_factor=min_lr / max_lr, end_factor=1.0, total_iters=steps - 1)


def smooth(losses: Sequence[float] | np.ndarray, beta: float) -> np.ndarray:
    """The bias-corrected exponential moving average (as Adam corrects its moments):
    ``avg_t = β avg_{t-1} + (1-β) x_t`` from ``avg_{-1} = 0``, reported as ``avg_t / (1-β^(t+1))``.
    """
    out = np.empty(len(losses))
    avg = 0.0
    for t, x in enumerate(losses):
        avg = beta * avg + (1.0 - beta) * float(x)
        out[t] = avg / (1.0 - beta ** (t + 1))
    return out


# -- the test ---------------------------------------------------------------------------------


def range_test(
    spec: SweepSpec,
    settings: RangeTestSettings | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> RangeTest:
    """Run the range test on the spec's dataset, model and optimizer (the sweep's own settings:
    momentum, weight decay, batch size, device), raising the rate every batch.

    Batches are shuffled mini-batches of ``spec.train.batch_size`` drawn by tensor indexing, a new
    permutation per pass over the training split, as in ``train_loop``. It stops once the smoothed
    loss exceeds ``stop_factor`` times the best smoothed loss so far, or is not finite. It runs on
    ``resources.cpu`` threads, as a trial does, and leaves the caller's thread count and global
    torch RNG as they were. Raises :class:`RangeTestError` for bad settings or a curve that gives
    no suggestion.
    """
    cfg = settings or RangeTestSettings()
    threads = torch.get_num_threads()
    # As many threads as a trial gets (resources.cpu): more only contend on a small MLP.
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    try:
        return _run(spec, cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _run(
    spec: SweepSpec, cfg: RangeTestSettings, progress: Callable[[Progress], None] | None
) -> RangeTest:
    t0 = time.perf_counter()
    device = resolve_device(spec.train.device)
    data = load_dataset(spec.dataset, device)
    with torch.random.fork_rng(devices=[]):  # the model's init must not move the caller's RNG
        torch.default_generator.manual_seed(cfg.seed)
        model = build_model(spec.model, data.n_features, data.n_classes)
    model = model.to(device)
    opt = build_optimizer(model.parameters(), spec.optimizer, cfg.min_lr)
    schedule = build_range_schedule(opt, cfg.min_lr, cfg.max_lr, cfg.steps, cfg.mode)
    shuffle = torch.Generator(device="cpu").manual_seed(cfg.seed)
    loss_fn = nn.CrossEntropyLoss()
    n, bs, steps, beta = data.x_train.shape[0], spec.train.batch_size, cfg.steps, cfg.smoothing
    iters = math.ceil(n / bs)
    every = max(1, steps // 4)
    shown = time.perf_counter()

    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    val_steps: list[int] = []
    val_acc: list[float] = []
    avg, best, stopped = 0.0, math.inf, False
    perm = torch.empty(0, dtype=torch.long, device=device)
    model.train()
    for step in range(steps):
        batch = step % iters
        if batch == 0:  # a fresh permutation per pass over the training split
            perm = torch.randperm(n, generator=shuffle).to(device)
        idx = perm[batch * bs : (batch + 1) * bs]
        lr = float(opt.param_groups[0]["lr"])
        loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        raw = float(loss.item())
        avg = beta * avg + (1.0 - beta) * raw
        value = avg / (1.0 - beta ** (step + 1))  # the same numbers as ``smooth``
        lrs.append(lr)
        losses.append(raw)
        smoothed.append(value)
        if cfg.val_every and (step + 1) % cfg.val_every == 0:
            model.eval()
            val_steps.append(step)
            val_acc.append(evaluate(model, data.x_val, data.y_val)[1])
            model.train()
        stopped = not math.isfinite(value) or value > cfg.stop_factor * best
        if progress is not None and (
            stopped or (step + 1) % every == 0 or time.perf_counter() - shown >= PROGRESS_SECONDS
        ):
            progress(Progress(step + 1, steps, lr, value, stopped))
            shown = time.perf_counter()
        if stopped:
            break
        best = min(best, value)
        if step < steps - 1:  # the last batch trains at max_lr; no step past it
            schedule.step()

    return RangeTest(
        lrs=np.asarray(lrs, dtype=float),
        losses=np.asarray(losses, dtype=float),
        smoothed=np.asarray(smoothed, dtype=float),
        val_steps=np.asarray(val_steps, dtype=int),
        val_acc=np.asarray(val_acc, dtype=float),
        stopped_early=stopped,
        suggestion=suggest(lrs, smoothed),
        settings=cfg,
        seconds=time.perf_counter() - t0,
    )


# -- reading the curve --------------------------------------------------------------------------


def suggest(
    lrs: Sequence[float] | np.ndarray,
    smoothed_losses: Sequence[float] | np.ndarray,
    *,
    skip_start: int | None = None,
    skip_end: int | None = None,
    tolerance: float = FALL_TOLERANCE,
    min_fall: float = MIN_FALL,
) -> Suggestion:
    """Smith's bounds from a smoothed range-test curve (rates strictly increasing).

    Only the finite prefix counts (after a non-finite loss the run has diverged). The first
    ``skip_start`` points (default: 5 %, at least 3; the bias-corrected average is still a few raw
    batches there) are ignored, and the last ``skip_end`` (default: 2 %, at least 2) are not
    candidates for the steepest point.

    * ``min_loss_lr``: the rate at the minimum of the smoothed loss (after ``skip_start``).
    * ``steepest_lr``: the rate of the most negative slope d loss / d ln(lr) before that minimum,
      each slope a difference across ±k points (k = 2.5 % of the curve, at least 2), so that the
      batch noise left in the smoothed curve does not pick a one-point dip.
    * ``max_lr``: the first rate at or after the steepest point where the loss has done all but
      ``tolerance`` (5 %) of its fall, from the highest level before the minimum down to the
      minimum: where the loss *stops falling*. Chosen over the minimum itself because a level
      crossing on the falling flank is robust to noise where an argmin on a flat bottom wanders
      over the whole plateau, and because the smoothed minimum lies right of the raw one (the
      average lags); chosen over "the slope turns non-negative", which one noisy uptick trips.
    * ``base_lr_low``/``base_lr_high``: ``max_lr`/4 and ``max_lr``/3 (Smith).

    Raises :class:`RangeTestError` when the curve is too short, never falls by ``min_fall``
    (5 %) of its starting level, or is lowest within 3 points of the skipped start.
    """
    lr = np.asarray(lrs, dtype=float).ravel()
    loss = np.asarray(smoothed_losses, dtype=float).ravel()
    if lr.size != loss.size:
        raise RangeTestError(
            "smoothed_losses",
            f"`len(lrs) == len(smoothed_losses)` must hold, but got ({lr.size}, {loss.size})",
        )
    bad = ~(np.isfinite(loss) & np.isfinite(lr) & (lr > 0))
    n = int(np.argmax(bad)) if bad.any() else lr.size
    lr, loss = lr[:n], loss[:n]
    if n > 1 and not np.all(np.diff(lr) > 0):
        raise RangeTestError("lrs", "the rates must increase strictly along the curve, but do not")
    start = max(3, n // 20) if skip_start is None else skip_start
    end = max(2, n // 50) if skip_end is None else skip_end
    if n - start - end < 5:
        raise RangeTestError(
            "steps",
            f"the curve is too short: `finite points - skip_start - skip_end >= 5` must hold, "
            f"but got ({n} - {start} - {end}); run more steps or lower min_lr",
        )
    low = start + int(np.argmin(loss[start:]))
    top = float(loss[start : low + 1].max())
    fall = top - float(loss[low])
    if low == start or fall < min_fall * abs(top):
        raise RangeTestError(
            "smoothed_losses",
            f"the loss never falls: `a fall of >= {min_fall:.0%} of the starting level` must "
            f"hold, but it fell by {fall / abs(top) if top else 0.0:.1%} (from {top:.4g} to "
            f"{float(loss[low]):.4g}); lower min_lr or check the data",
        )

    if low - start < MIN_FALLING_POINTS:
        raise RangeTestError(
            "max_lr",
            f"the loss is lowest at lr={lr[low]:.3g}, {low - start} points after the skipped "
            f"start: `>= {MIN_FALLING_POINTS} points on the falling side` must hold; lower "
            "max_lr or min_lr (a linear schedule puts most points at high rates)",
        )
    x = np.log(lr)
    k = max(2, n // 40)
    idx = np.arange(start, min(low, n - end - 1) + 1)
    lo, hi = np.clip(idx - k, 0, n - 1), np.clip(idx + k, 0, n - 1)
    slopes = (loss[hi] - loss[lo]) / (x[hi] - x[lo])
    steep = int(idx[int(np.argmin(slopes))])
    if not slopes.min() < 0:
        raise RangeTestError(
            "smoothed_losses",
            "the loss never falls: `a negative slope before the minimum` must hold, but got "
            f"a minimum slope of {slopes.min():.4g}",
        )
    level = float(loss[low]) + tolerance * fall
    stop = steep + int(np.argmax(loss[steep : low + 1] <= level))
    max_lr = float(lr[stop])
    return Suggestion(
        steepest_lr=float(lr[steep]),
        max_lr=max_lr,
        base_lr_low=max_lr / BASE_LR_DIVISORS[0],
        base_lr_high=max_lr / BASE_LR_DIVISORS[1],
        min_loss_lr=float(lr[low]),
    )


# -- the spec with derived ranges ---------------------------------------------------------------


def _sig3(value: float) -> float:
    return float(f"{value:.3g}")


def derived_ranges(s: Suggestion) -> tuple[FloatRange, FloatRange]:
    """``(base_lr, max_lr)`` search ranges from a suggestion ``m = s.max_lr`` (3 significant
    digits, log scale):

    * base_lr in [min(s.steepest_lr, m/30), m]. This is also the fixed family's rate range, so
      it reaches up to m, the highest rate at which the test's loss still fell well: a tuned
      fixed rate must not be capped below what the test calls trainable (a /3 cap would hand
      CLR a head start). Down to m/30 (or the steepest point, fastai's fixed-rate guess, if
      lower) covers Smith's base_lr = m/4..m/3 with room below.
    * max_lr in [m/3, 3m]: the cycle's peak from Smith's base up to past the loss minimum
      (1-2 m on digits and cardio), since a cyclical rate passes its peak only briefly and can
      use rates a fixed one cannot. The sampler keeps max_lr above base_lr.
    """
    m = s.max_lr
    for name, value in (("max_lr", m), ("steepest_lr", s.steepest_lr)):
        if not (math.isfinite(value) and value > 0):
            raise RangeTestError(
                f"suggestion.{name}", f"`{name} > 0` (finite) must hold, but got {value}"
            )
    base = FloatRange(low=_sig3(min(s.steepest_lr, m / 30)), high=_sig3(m), log=True)
    top = FloatRange(low=_sig3(m / 3), high=_sig3(3 * m), log=True)
    return base, top


def apply_range_test(spec: SweepSpec, s: Suggestion) -> SweepSpec:
    """A copy of ``spec`` whose ``search.base_lr`` and ``search.max_lr`` come from ``s`` (see
    :func:`derived_ranges`), re-validated; ``search.bounds`` and everything else are kept. A
    spec without ``search.max_lr`` (no family needs it) keeps None there."""
    base, top = derived_ranges(s)
    update: dict[str, Any] = {"base_lr": base}
    if spec.search.max_lr is not None:
        update["max_lr"] = top
    search = spec.search.model_copy(update=update)
    # model_copy skips validation: validate the whole spec again (cross-field rules included).
    return validate(spec.model_copy(update={"search": search}).model_dump(mode="json"))


# -- the plot -----------------------------------------------------------------------------------


# -- MLflow -------------------------------------------------------------------------------------


def _step_metrics(result: RangeTest, now: int) -> list[Metric]:
    out: list[Metric] = []
    for step, (lr, raw, sm) in enumerate(
        zip(result.lrs, result.losses, result.smoothed, strict=True)
    ):
        for key, value in ((LR_KEY, lr), (LOSS_KEY, raw), (SMOOTHED_KEY, sm)):
            if math.isfinite(value):  # the batch that blew up may be inf/NaN
                out.append(Metric(key, float(value), now, step))
    for step, acc in zip(result.val_steps, result.val_acc, strict=True):
        out.append(Metric(VAL_ACC_KEY, float(acc), now, int(step)))
    return out


def log_range_test(
    tracking: SweepTracker | MlflowClient,
    result: RangeTest,
    spec: SweepSpec,
    parent_run_id: str | None = None,
) -> str:
    """Log ``result`` as one MLflow run in the spec's experiment and return its id.

    Tagged ``sweeps.role=lr_find`` (nested under ``parent_run_id`` through the
    ``mlflow.parentRunId`` tag when given); params: the test's settings; metrics: ``lr_find/lr``,
    ``lr_find/loss``, ``lr_find/smoothed_loss`` (and ``lr_find/val_acc``) at step = batch, sent
    with ``log_batch`` in chunks of at most 1000, plus ``suggested_*``; artifacts: ``lr_find.png``
    and ``spec.yaml``. A :class:`SweepTracker` lends its client and, once started, its experiment.
    """
    client = tracking.client if isinstance(tracking, SweepTracker) else tracking
    exp_id = ""
    if isinstance(tracking, SweepTracker):
        exp_id = tracking.experiment_id
    exp_id = exp_id or experiment_id(client, spec.tracking.experiment)
    name = f"{spec.name}-lr_find"
    tags = {
        MLFLOW_RUN_NAME: name,
        "sweeps.role": ROLE,
        "sweeps.name": spec.name,
        "sweeps.spec_hash": spec.spec_hash(),
        "sweeps.lr_find.stopped_early": str(result.stopped_early).lower(),
    }
    if parent_run_id:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    commit = git_commit()
    if commit:
        tags["sweeps.git_commit"] = commit
    run_id = str(client.create_run(exp_id, run_name=name, tags=tags).info.run_id)
    try:
        params = [Param(k, str(v)) for k, v in result.settings.params().items()]
        client.log_batch(run_id, params=params)
        now = int(time.time() * 1000)
        metrics = _step_metrics(result, now)
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
        summary = {
            **result.suggestion.metrics(),
            "steps_run": float(result.steps_run),
            "seconds": result.seconds,
        }
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in summary.items()])
        with tempfile.TemporaryDirectory() as d:
            png = plot_range_test(result, Path(d) / PLOT_NAME, f"LR range test: {spec.name}")
            client.log_artifact(run_id, str(png))
        client.log_text(run_id, spec.to_yaml(), "spec.yaml")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


# -- CLI ----------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    d = RangeTestSettings()
    p = OneLineParser(
        prog="python -m sweeps.lr_find",
        description="LR range test (Smith 2017, §3.3): suggests base_lr and max_lr for a sweep.",
    )
    p.add_argument("sweep", help="a built-in sweep name or a YAML file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="dotted.key=value",
        help="override a spec field, e.g. --set optimizer.momentum=0.9 (repeatable)",
    )
    p.add_argument("--min-lr", type=float, default=d.min_lr, help=f"first rate ({d.min_lr:g})")
    p.add_argument("--max-lr", type=float, default=d.max_lr, help=f"last rate ({d.max_lr:g})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"batches ({d.steps})")
    p.add_argument(
        "--mode",
        choices=get_args(Mode),
        default=d.mode,
        help="rate spacing (exp): exp gives each decade as many batches; linear spends most "
        "batches at the top of the range, so over a wide range the net has trained less by each "
        "rate and the suggestions come out higher (meant for a narrow --min-lr..--max-lr)",
    )
    p.add_argument("--smoothing", type=float, default=d.smoothing, help=f"EMA β ({d.smoothing})")
    p.add_argument(
        "--stop-factor",
        type=float,
        default=d.stop_factor,
        help=f"stop once the smoothed loss exceeds this x its best ({d.stop_factor:g})",
    )
    p.add_argument(
        "--val-every",
        type=int,
        default=d.val_every,
        help="record val accuracy every N batches (0: never)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="model init and shuffling seed")
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
        "else sqlite mlflow.db in the working directory)",
    )
    return p


def _flag(field: str) -> str:
    flags = {f.name for f in dataclasses.fields(RangeTestSettings)}
    return f"--{field.replace('_', '-')}" if field in flags else field


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema-migration chatter
    out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140)
    err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 140)
    try:
        settings = RangeTestSettings(
            args.min_lr,
            args.max_lr,
            args.steps,
            args.mode,
            args.smoothing,
            args.stop_factor,
            args.val_every,
            args.seed,
        )
    except RangeTestError as exc:
        return fail(err, f"{_flag(exc.field)}: {exc.rule}")
    try:
        spec = load_spec(args.sweep, args.overrides)
        if spec.trainable is not None:
            raise SweepsError(
                "trainable: the range test trains the spec's model with train_loop's optimizer, "
                f"so the spec must not name its own trainable, but it names {spec.trainable!r}"
            )
        check_device(spec.train.device)  # the test runs here
        uri = resolve_uri(args.tracking_uri)
        check_sqlite(uri)  # as the sweep does: MLflow would make a missing folder
        check_server(uri)
        tracker = SweepTracker(uri, spec)
        tracker.check()  # before the test, not after it

        def show(p: Progress) -> None:
            what = "stopped (loss blew up)" if p.stopped else f"{100 * p.step // p.steps}%"
            err.print(
                f"lr_find: batch {p.step}/{p.steps} {what}  lr {p.lr:.3g}  "
                f"smoothed loss {p.smoothed_loss:.4g}",
                highlight=False,
                markup=False,
            )

        result = range_test(spec, settings, progress=show)
        run_id = log_range_test(tracker, result, spec, parent_run_id=None)
    except RangeTestError as exc:
        return fail(err, f"{_flag(exc.field)}: {exc.rule}")
    except (SweepsError, DataError) as exc:
        return fail(err, uri_named(str(exc), args.tracking_uri))
    except ValidationError as exc:
        return fail(err, format_validation_error(exc))
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    _print_result(out, spec, result, run_id, uri)
    return 0


def still_falling(r: RangeTest) -> bool:
    """Whether the smoothed loss at the last rate is within ``NEAR_MIN`` of its minimum: the
    curve has not turned up yet, so a larger max_lr would show where it does."""
    finite = r.smoothed[np.isfinite(r.smoothed)]
    if finite.size == 0 or not np.isfinite(r.smoothed[-1]):
        return False
    low = float(finite.min())
    return bool(r.smoothed[-1] - low <= NEAR_MIN * abs(low))


def _print_result(out: Console, spec: SweepSpec, r: RangeTest, run_id: str, uri: str) -> None:
    s, cfg = r.suggestion, r.settings

    def say(text: str) -> None:
        out.print(text, highlight=False, markup=False)

    how = "stopped early (loss blew up)" if r.stopped_early else "ran all batches"
    say(
        f"range test {spec.name}: {spec.optimizer.name}, batch {spec.train.batch_size}, "
        f"{cfg.mode} {cfg.min_lr:g} -> {cfg.max_lr:g}, {r.steps_run}/{cfg.steps} batches, "
        f"{how}, {r.seconds:.1f}s"
    )
    say(f"  steepest_lr   {s.steepest_lr:.4g}")
    say(f"  max_lr        {s.max_lr:.4g}   (loss minimum at {s.min_loss_lr:.4g})")
    say(f"  base_lr       {s.base_lr_low:.4g} .. {s.base_lr_high:.4g}   (max_lr/4 .. max_lr/3)")
    if not r.stopped_early and still_falling(r):
        say("  note: the loss was still near its minimum at the last rate; try a larger --max-lr")
    base, top = derived_ranges(s)
    sets = f"--set 'search.base_lr={{low: {base.low:g}, high: {base.high:g}, log: true}}'"
    if spec.search.max_lr is not None:
        sets += f" --set 'search.max_lr={{low: {top.low:g}, high: {top.high:g}, log: true}}'"
    say(f"derived search ranges: {sets}")
    say(f"mlflow run {run_id} (experiment {spec.tracking.experiment}, {redact(uri)})")
    say(f"  view: {ui_hint(uri)}")


if __name__ == "__main__":
    sys.exit(main())
