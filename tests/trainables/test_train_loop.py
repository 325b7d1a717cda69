"""train_loop with a list-appending fake report: determinism, checkpoints, failures, quality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from trainables import TrialConfig, train_loop
from trainables.data import load_dataset
from trainables.train_loop import build_optimizer


class Recorder:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []

    def __call__(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.rows.append(metrics)
        if state is not None:
            self.states.append(state)


def digits(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        dataset={"name": "digits", "val_fraction": 0.2, "test_fraction": 0.2},
        model={"name": "mlp", "hidden": [25, 12]}, optimizer={"name": "adam"},
        train={"epochs": 20, "batch_size": 64}, family="fixed", base_lr=0.01, threads=1,
    )  # fmt: skip
    base.update(kw)
    return base


def test_reports_every_epoch_with_the_contract_keys() -> None:
    rec = Recorder()
    last = train_loop(digits(train={"epochs": 3, "batch_size": 64}), rec)
    assert [r["epoch"] for r in rec.rows] == [1, 2, 3]
    keys = {"epoch", "train_loss", "val_loss", "val_acc", "val_acc_best", "lr", "epoch_seconds",
            "status"}  # fmt: skip
    assert all(set(r) == keys for r in rec.rows)
    assert [r["status"] for r in rec.rows] == ["running", "running", "completed"]
    assert last == rec.rows[-1]
    assert rec.rows[-1]["val_acc_best"] == max(r["val_acc"] for r in rec.rows)


def test_same_seed_same_result_other_seed_differs() -> None:
    a, b, c = Recorder(), Recorder(), Recorder()
    cfg = digits(train={"epochs": 3, "batch_size": 64})
    train_loop({**cfg, "seed": 1}, a)
    train_loop({**cfg, "seed": 1}, b)
    train_loop({**cfg, "seed": 2}, c)
    assert a.rows[-1]["train_loss"] == b.rows[-1]["train_loss"]
    assert a.rows[-1]["train_loss"] != c.rows[-1]["train_loss"]


@pytest.mark.parametrize(
    "family_kw",
    [
        {"family": "triangular2", "base_lr": 0.001, "max_lr": 0.01, "step_size_epochs": 2},
        {"family": "sgdr", "base_lr": 0.0005, "max_lr": 0.01, "step_size_epochs": 2, "t_mult": 2},
        {"family": "one_cycle", "base_lr": 0.001, "max_lr": 0.01},
    ],
)
def test_six_epochs_equal_three_checkpoint_restore_three(family_kw: dict[str, Any]) -> None:
    cfg = digits(train={"epochs": 6, "batch_size": 64, "checkpoint_every": 3}, **family_kw)
    straight, first, second = Recorder(), Recorder(), Recorder()
    train_loop(cfg, straight)
    # Stop after epoch 3 by raising from the report, as a killed trial would.

    class Stop(Exception):
        pass

    def stop_after_3(m: dict[str, Any], s: dict[str, Any] | None) -> None:
        first(m, s)
        if m["epoch"] == 3:
            raise Stop

    with pytest.raises(Stop):
        train_loop(cfg, stop_after_3)
    ckpt = first.states[-1]
    assert ckpt["epoch"] == 3
    train_loop(cfg, second, checkpoint=ckpt)
    assert [r["epoch"] for r in second.rows] == [4, 5, 6]
    w_straight, w_resumed = straight.states[-1]["model"], second.states[-1]["model"]
    for k in w_straight:
        torch.testing.assert_close(w_resumed[k], w_straight[k], atol=1e-6, rtol=0)
    assert second.rows[-1]["val_acc"] == pytest.approx(straight.rows[-1]["val_acc"], abs=1e-6)


def test_high_rate_adam_collapses_before_the_last_epoch() -> None:
    rec = Recorder()
    last = train_loop(digits(base_lr=1.0, train={"epochs": 30, "batch_size": 64}), rec)
    assert last["status"] in ("collapsed", "diverged")
    assert last["epoch"] < 30
    assert last["val_acc"] < 0.2  # chance is 0.1


def test_low_rate_adam_learns_digits() -> None:
    last = train_loop(digits(base_lr=0.01, train={"epochs": 30, "batch_size": 64}), Recorder())
    assert last["status"] == "completed"
    assert last["val_acc"] >= 0.90


def test_nan_loss_ends_as_diverged_with_a_finite_worst_metric() -> None:
    rec = Recorder()
    cfg = digits(optimizer={"name": "sgd"}, base_lr=1e6, train={"epochs": 20, "batch_size": 64})
    last = train_loop(cfg, rec)
    assert last["status"] == "diverged"
    assert last["epoch"] < 20
    assert last["val_acc"] == 0.0  # finite, so ASHA can still rank it


def test_slow_learner_is_not_called_collapsed(real_cardio: Path) -> None:
    cfg = {
        "dataset": {"name": "cardio"}, "model": {"name": "mlp"}, "optimizer": {"name": "sgd"},
        "train": {"epochs": 8, "batch_size": 350}, "family": "fixed", "base_lr": 1e-4,
        "threads": 1,
    }  # fmt: skip
    last = train_loop(cfg, Recorder())
    assert last["status"] == "completed"


def test_cardio_triangular2_reaches_70_percent_in_5_epochs(real_cardio: Path) -> None:
    cfg = {
        "dataset": {"name": "cardio"}, "model": {"name": "mlp", "hidden": [64, 32]},
        "optimizer": {"name": "sgd"}, "train": {"epochs": 5, "batch_size": 350},
        "family": "triangular2", "base_lr": 0.01, "max_lr": 0.3, "step_size_epochs": 2,
        "threads": 1,
    }  # fmt: skip
    rec = Recorder()
    last = train_loop(cfg, rec)
    assert last["status"] == "completed"
    assert last["val_acc"] >= 0.70


def test_optimizer_is_the_same_for_every_family() -> None:
    cfg = TrialConfig.model_validate(digits(optimizer={"name": "sgd", "momentum": 0.0}))
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg.optimizer, 0.1)
    assert opt.param_groups[0]["momentum"] == 0.0
    assert load_dataset(cfg.dataset).n_classes == 10
