"""LR schedules, one small factory per family, all built on torch's own schedulers.

Every schedule is stepped once per batch. ``step_size_epochs`` times the iterations per epoch gives
the step size in iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LRScheduler,
    OneCycleLR,
)

from trainables.config import TrialConfig
from trainables.optimizers import SGD


class PerBatchWarmRestarts(CosineAnnealingWarmRestarts):
    """SGDR stepped per batch: torch wants ``step(epoch + i / iters)`` for that; count batches."""

    def __init__(self, optimizer: Optimizer, iters_per_epoch: int, **kwargs: Any) -> None:
        # Set before super().__init__, which takes the first step.
        self.iters_per_epoch = iters_per_epoch
        self.batches = 0
        super().__init__(optimizer, **kwargs)

    def step(self, epoch: float | None = None) -> None:
        if epoch is None:
            if self.last_epoch >= 0:  # the constructor's first step is at batch 0
                self.batches += 1
            epoch = self.batches / self.iters_per_epoch
        super().step(epoch)


Factory = Callable[[Optimizer, TrialConfig, int], LRScheduler]


def _req(value: float | int | None) -> Any:
    assert value is not None, "TrialConfig validation guarantees the family's parameters"
    return value


def _fixed(opt: Optimizer, cfg: TrialConfig, iters: int) -> LRScheduler:
    return ConstantLR(opt, factor=1.0, total_iters=0)


def _cyclic(mode: Literal["triangular", "triangular2", "exp_range"]) -> Factory:
    def build(opt: Optimizer, cfg: TrialConfig, iters: int) -> LRScheduler:
        return CyclicLR(
            opt,
            base_lr=cfg.base_lr,
            max_lr=_req(cfg.max_lr),
            step_size_up=_req(cfg.step_size_epochs) * iters,
            mode=mode,
            gamma=cfg.gamma if cfg.gamma is not None else 1.0,
            # torch's default (True) would silently cycle SGD momentum between 0.8 and 0.9.
            cycle_momentum=False,
        )

    return build


def _one_cycle(opt: Optimizer, cfg: TrialConfig, iters: int) -> LRScheduler:
    max_lr = _req(cfg.max_lr)
    return OneCycleLR(
        opt,
        max_lr=max_lr,
        total_steps=cfg.train.epochs * iters,
        div_factor=max_lr / cfg.base_lr,
        cycle_momentum=False,  # same optimizer as the fixed arm
    )


def _sgdr(opt: Optimizer, cfg: TrialConfig, iters: int) -> LRScheduler:
    for group in opt.param_groups:
        group["lr"] = _req(cfg.max_lr)  # eta_max is the optimizer's initial rate
        group["initial_lr"] = group["lr"]
    return PerBatchWarmRestarts(
        opt,
        iters_per_epoch=iters,
        T_0=_req(cfg.step_size_epochs),
        T_mult=_req(cfg.t_mult),
        eta_min=cfg.base_lr,
    )


LR_SCHEDULES: dict[str, Factory] = {
    "fixed": _fixed,
    "triangular": _cyclic("triangular"),
    "triangular2": _cyclic("triangular2"),
    "exp_range": _cyclic("exp_range"),
    "one_cycle": _one_cycle,
    "sgdr": _sgdr,
}


def build_lr_schedule(opt: Optimizer, cfg: TrialConfig, iters_per_epoch: int) -> LRScheduler:
    """The per-batch LR schedule of ``cfg.family`` on ``opt`` (built with lr = base_lr)."""
    return LR_SCHEDULES[cfg.family](opt, cfg, iters_per_epoch)


def mark_stepped(opt: Optimizer) -> None:
    """A step of ``opt`` that changes nothing (it has no gradients), for where its updates
    happen elsewhere (inside a compiled graph): torch's LR schedule checks once that the
    optimizer has stepped, and warns if not."""
    opt.zero_grad(set_to_none=True)
    opt.step()


def schedule_rates(cfg: TrialConfig, iters_per_epoch: int) -> list[float]:
    """The rate of every batch of ``cfg``'s whole run under its LR schedule, as a trial that
    steps the schedule after each batch sees them (for drawing; nothing is trained)."""
    # A trial's own optimizer class: unlike torch's, it leaves torch._dynamo unimported (~3 s).
    opt = SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.base_lr)
    schedule = build_lr_schedule(opt, cfg, iters_per_epoch)
    mark_stepped(opt)
    return [float(r) for r in rates_ahead(schedule, cfg.train.epochs * iters_per_epoch)[0]]


def rates_ahead(schedule: LRScheduler, batches: int) -> tuple[list[float], float]:
    """Step ``schedule`` through the next ``batches`` batches at once: the rate of each batch,
    and the rate it leaves the optimizer at after the last. The caller sets each batch's rate
    (``param_groups[0]["lr"]``) before its step, then the rate after; the schedule sees the same
    sequence of rates as when stepped after each batch. One parameter group only.

    Why ahead: a cardio epoch's 138 steps of torch's schedule take 0.9-1.5 ms in a row, and
    1.5-3.3 ms more when each follows a compiled step, whose kernels leave the caches cold for
    the schedule's Python (``benchmarks/epoch_time.py --rates-ab``)."""
    (group,) = schedule.optimizer.param_groups
    rates = []
    for _ in range(batches):
        rates.append(group["lr"])
        schedule.step()
    return rates, group["lr"]
