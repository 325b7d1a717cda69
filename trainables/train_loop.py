"""``train_loop(config, report, checkpoint)``: one trial, free of Ray.

The caller passes ``report(metrics, state)``: Ray's wrapper forwards it to ``tune.report`` and tests
pass a list-appending fake. ``state`` is a checkpoint (a dict for ``torch.save``) or None.

Speed (docs/benchmarks.md, "(a) Epoch time"): an epoch gathers the shuffled training set once and
slices contiguous batches from it, the optimizer uses torch's fused kernel without importing
``torch._dynamo`` (``optimizers``), and on the CPU a long trial gets its loss and gradients, and
its val pass, from graphs compiled once per machine (``steps``). The LR schedule, the update
rule and the batches are the same in every path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LRScheduler

from trainables.config import TrialConfig
from trainables.data import Splits, load_dataset
from trainables.lr_schedules import build_lr_schedule, mark_stepped, rates_ahead
from trainables.models import build_model
from trainables.optimizers import build_optimizer
from trainables.steps import Step, build_eval, build_step, evaluate, use_compiled_step

Status = Literal["running", "completed", "diverged", "collapsed"]
Metrics = dict[str, Any]
Report = Callable[[Metrics, dict[str, Any] | None], None]

# A trial counts as at chance while its val_acc is within this of the majority-class rate.
CHANCE_TOLERANCE = 0.01
# val_loss must improve by this relative amount within the patience window to count as learning.
MIN_REL_IMPROVEMENT = 1e-3


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_batches(
    step: Step, schedule: LRScheduler, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """One epoch's steps, the loss of each: ``schedule`` is stepped through the epoch first
    (``rates_ahead``), then each batch steps at its rate; the optimizer ends at the rate after
    the last batch, where stepping the schedule after each batch would leave it."""
    rates, after = rates_ahead(schedule, len(xs))
    (group,) = schedule.optimizer.param_groups  # read now: load_state_dict replaces the groups
    losses = []
    for xb, yb, rate in zip(xs, ys, rates, strict=True):
        group["lr"] = rate
        losses.append(step(xb, yb))
    group["lr"] = after
    return losses


def majority_rate(y: torch.Tensor) -> float:
    return float(torch.bincount(y).max().item() / y.numel())


class _CollapseWatch:
    """Collapsed: at chance for ``patience`` epochs in a row, and either predicting a single
    class all that time (dead units, the classic high-rate failure) or making no progress on
    val_loss over one more epoch."""

    def __init__(self, chance: float, patience: int) -> None:
        self.chance, self.patience = chance, patience
        self.window: list[tuple[float, int]] = []  # (val_loss, predicted classes) at chance

    def update(self, val_acc: float, val_loss: float, n_pred: int) -> bool:
        if val_acc > self.chance + CHANCE_TOLERANCE:
            self.window.clear()
            return False
        self.window.append((val_loss, n_pred))
        recent = self.window[-self.patience :]
        if len(recent) == self.patience and all(n == 1 for _, n in recent):
            return True
        if len(self.window) <= self.patience:
            return False
        first = self.window[-self.patience - 1][0]
        return min(loss for loss, _ in recent) > first * (1.0 - MIN_REL_IMPROVEMENT)

    def state_dict(self) -> dict[str, Any]:
        return {"window": list(self.window)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.window = [(float(loss), int(n)) for loss, n in state["window"]]


def train_loop(
    config: Mapping[str, Any] | TrialConfig,
    report: Report,
    checkpoint: Mapping[str, Any] | None = None,
) -> Metrics:
    """Train one config, report every epoch, and return the last metrics reported."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.model_validate(config)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.train.device)
    data: Splits = load_dataset(cfg.dataset, device)

    torch.manual_seed(cfg.seed)
    shuffle = torch.Generator(device="cpu").manual_seed(cfg.seed)
    model = build_model(cfg.model, data.n_features, data.n_classes).to(device)
    opt = build_optimizer(model.parameters(), cfg.optimizer, cfg.base_lr)
    n = data.x_train.shape[0]
    bs = cfg.train.batch_size
    iters = math.ceil(n / bs)
    lr_schedule = build_lr_schedule(opt, cfg, iters)
    mark_stepped(opt)  # the schedule runs ahead of the optimizer's first step
    collapse = _CollapseWatch(majority_rate(data.y_val), cfg.train.collapse_patience)
    best = 0.0
    start = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["optimizer"])
        lr_schedule.load_state_dict(checkpoint["lr_schedule"])
        shuffle.set_state(checkpoint["shuffle_rng"])
        torch.set_rng_state(checkpoint["torch_rng"])
        collapse.load_state_dict(checkpoint["collapse"])
        best, start = checkpoint["val_acc_best"], checkpoint["epoch"]

    metrics: Metrics = {}
    full = n // bs
    batch = min(bs, n)
    compiled = use_compiled_step(cfg, device, full)
    step = build_step(model, opt, data.x_train[:batch], data.y_train[:batch], compiled)
    evaluate_val = build_eval(model, data.x_val, data.y_val, compiled)
    # Rows per batch, to weight each batch's mean loss into the epoch's mean.
    sizes = torch.full((iters,), float(bs), device=device)
    sizes[-1] = n - (iters - 1) * bs
    for epoch in range(start + 1, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        lr = opt.param_groups[0]["lr"]
        perm = torch.randperm(n, generator=shuffle).to(device)
        # One gather per epoch (index_select: 3x faster than x[perm]); every batch is then a
        # contiguous view, with the same rows in the same order as indexing by a slice of perm.
        xs = data.x_train.index_select(0, perm).split(bs)
        ys = data.y_train.index_select(0, perm).split(bs)
        losses = run_batches(step, lr_schedule, xs, ys)
        train_loss = torch.dot(torch.stack(losses), sizes).item() / n
        model.eval()
        val_loss, val_acc, n_pred = evaluate_val()

        status: Status = "completed" if epoch == cfg.train.epochs else "running"
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            # ASHA never stops a NaN (cur < cutoff is False), so report a finite worst value.
            status, val_acc, val_loss = "diverged", 0.0, float("nan")
        elif collapse.update(val_acc, val_loss, n_pred):
            status = "collapsed"
        best = max(best, val_acc)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "val_acc_best": best,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - t0,
            "status": status,
        }
        ends = status != "running"
        state = None
        if ends or epoch % cfg.train.checkpoint_every == 0:
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "lr_schedule": lr_schedule.state_dict(),
                "shuffle_rng": shuffle.get_state(),
                "torch_rng": torch.get_rng_state(),
                "collapse": collapse.state_dict(),
                "val_acc_best": best,
                "epoch": epoch,
            }
        report(metrics, state)
        if ends:
            break
    return metrics


def test_accuracy(config: Mapping[str, Any] | TrialConfig, state: Mapping[str, Any]) -> float:
    """Accuracy on the held-out test split of a model restored from a checkpoint ``state``."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.model_validate(config)
    device = resolve_device(cfg.train.device)
    data = load_dataset(cfg.dataset, device)
    model = build_model(cfg.model, data.n_features, data.n_classes).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return evaluate(model, data.x_test, data.y_test)[1]
