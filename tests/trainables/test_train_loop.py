"""train_loop with a list-appending fake report: determinism, checkpoints, failures, quality."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import CyclicLR
from torch.optim.optimizer import register_optimizer_step_pre_hook

from trainables import TrialConfig, build_lr_schedule, build_model, train_loop
from trainables.config import ModelConfig
from trainables.data import load_dataset
from trainables.optimizers import build_optimizer
from trainables.steps import (
    COMPILE_ENV,
    build_eval,
    build_step,
    eval_fn,
    evaluate,
    grad_fn,
    graph_update,
    use_compiled_step,
)


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


TRI2 = {"family": "triangular2", "base_lr": 0.001, "max_lr": 0.01, "step_size_epochs": 2}
SGDR = {"family": "sgdr", "base_lr": 0.0005, "max_lr": 0.01, "step_size_epochs": 2, "t_mult": 2}
ONE_CYCLE = {"family": "one_cycle", "base_lr": 0.001, "max_lr": 0.01}


@pytest.mark.parametrize(
    ("family_kw", "compile_mode"),
    [(TRI2, "auto"), (SGDR, "auto"), (ONE_CYCLE, "auto"), (TRI2, "always")],
)
def test_six_epochs_equal_three_checkpoint_restore_three(
    family_kw: dict[str, Any], compile_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(COMPILE_ENV, compile_mode)
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


@pytest.mark.parametrize("family_kw", [TRI2, SGDR, ONE_CYCLE, {"family": "fixed"}])
def test_every_step_takes_the_rate_of_a_schedule_stepped_after_each_batch(
    family_kw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """train_loop steps the LR schedule through each epoch before its batches; the optimizer
    must still see, batch by batch and across epochs, the rates of the schedule stepped after
    every batch, and end each epoch (its ``lr`` metric, its checkpoint) where that one would."""
    monkeypatch.setenv(COMPILE_ENV, "never")  # eager: every batch goes through opt.step()
    cfg = TrialConfig.model_validate(digits(train={"epochs": 3, "batch_size": 64}, **family_kw))
    seen: list[float] = []

    def record(opt: torch.optim.Optimizer, *_: Any) -> None:
        if any(p.grad is not None for g in opt.param_groups for p in g["params"]):
            seen.append(opt.param_groups[0]["lr"])  # not mark_stepped's step without gradients

    out = Recorder()
    hook = register_optimizer_step_pre_hook(record)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch's "schedule stepped before the optimizer"
            train_loop(cfg, out)
    finally:
        hook.remove()

    iters = -(-load_dataset(cfg.dataset).x_train.shape[0] // 64)
    opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), cfg.optimizer, cfg.base_lr)
    schedule = build_lr_schedule(opt, cfg, iters)
    want = []
    for _ in range(3 * iters):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    want.append(opt.param_groups[0]["lr"])  # after the last batch
    assert seen == want[:-1]
    assert [r["lr"] for r in out.rows] == want[: 3 * iters : iters]
    assert out.states[-1]["optimizer"]["param_groups"][0]["lr"] == want[-1]
    assert len(set(seen)) == 1 if family_kw["family"] == "fixed" else len(set(seen)) > iters


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


# Before the epoch-time work (issue 7a): per-batch fancy indexing, unfused SGD, eager autograd.
GOLDEN_VAL_ACC = [0.72159, 0.73052, 0.73198, 0.73198, 0.73295]
GOLDEN_TRAIN_LOSS = [0.62607, 0.55554, 0.54967, 0.54721, 0.54635]


@pytest.mark.parametrize("compile_mode", ["never", "always"])
def test_cardio_fixed_seed_matches_the_values_before_the_speedup(
    real_cardio: Path, compile_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same batches, LR schedule and update rule: eager plain SGD is bit-identical here, the
    compiled step differs by float rounding only. The tolerance (a few val rows) leaves room for
    other CPUs' kernels; a changed shuffle, schedule or loss weighting moves these by more."""
    monkeypatch.setenv(COMPILE_ENV, compile_mode)
    cfg = {
        "dataset": {"name": "cardio"}, "model": {"name": "mlp", "hidden": [64, 32]},
        "optimizer": {"name": "sgd"}, "train": {"epochs": 5, "batch_size": 350},
        "family": "triangular2", "base_lr": 0.01, "max_lr": 0.3, "step_size_epochs": 2,
        "seed": 0, "threads": 1,
    }  # fmt: skip
    rec = Recorder()
    train_loop(cfg, rec)
    assert [r["val_acc"] for r in rec.rows] == pytest.approx(GOLDEN_VAL_ACC, abs=1e-3)
    assert [r["train_loss"] for r in rec.rows] == pytest.approx(GOLDEN_TRAIN_LOSS, abs=1e-4)


@pytest.mark.parametrize("shape", ["digits", "cardio"])
def test_compiled_gradients_equal_torch_autograd(shape: str) -> None:
    """The cardio shape (12-64-32-2, batch 350) goes through graph_passes' rewrites; its
    gradients must still be autograd's, in the parameters' own layout."""
    torch.manual_seed(0)
    if shape == "digits":
        cfg = TrialConfig.model_validate(digits())
        data = load_dataset(cfg.dataset)
        model = build_model(cfg.model, data.n_features, data.n_classes)
        x, y = data.x_train[:64], data.y_train[:64]
    else:
        model = build_model(ModelConfig(name="mlp", hidden=(64, 32)), 12, 2)
        x, y = torch.randn(350, 12), torch.randint(0, 2, (350,))
    fn = grad_fn(model, x, y)
    if fn is None:
        pytest.skip("Inductor cannot compile here (no C++ compiler?)")
    assert grad_fn(model, x, y) is fn  # cached: a later trial pays nothing
    params = list(model.parameters())
    loss, *grads = fn(*[p.detach() for p in params], x, y)
    want = torch.nn.functional.cross_entropy(model(x), y)
    want.backward()
    torch.testing.assert_close(loss, want.detach(), atol=1e-6, rtol=1e-6)
    for p, g in zip(params, grads, strict=True):
        assert p.grad is not None and g.shape == p.shape and g.stride() == p.stride()
        torch.testing.assert_close(g, p.grad, atol=1e-6, rtol=1e-5)


def test_compiled_graphs_are_called_without_torchs_per_call_wrappers() -> None:
    """On the pinned torch the step and the val pass call Inductor's graph directly (~40 us a
    step less); a torch that stops exposing it falls back to the wrapped call, and this fails."""
    model = build_model(ModelConfig(name="mlp", hidden=(9, 7)), 12, 2)
    x, y = torch.randn(40, 12), torch.randint(0, 2, (40,))
    fns = [grad_fn(model, x, y), grad_fn(model, x, y, True), eval_fn(model, x, y)]
    if None in fns:
        pytest.skip("Inductor cannot compile here (no C++ compiler?)")
    assert all(getattr(fn, "direct", False) for fn in fns)


@pytest.mark.parametrize("shape", ["digits", "cardio", "one class"])
def test_compiled_val_pass_equals_the_eager_one(shape: str) -> None:
    """Same loss (up to rounding), same correct count and predicted classes, on the cardio
    shape (its logits GEMM rewritten), on digits' 10 classes, and for a net stuck on one class
    (the collapse check counts them)."""
    torch.manual_seed(0)
    if shape == "digits":
        cfg = TrialConfig.model_validate(digits())
        data = load_dataset(cfg.dataset)
        model = build_model(cfg.model, data.n_features, data.n_classes)
        x, y = data.x_val, data.y_val
    else:
        model = build_model(ModelConfig(name="mlp", hidden=(64, 32)), 12, 2)
        x, y = torch.randn(1029, 12), torch.randint(0, 2, (1029,))
        if shape == "one class":
            with torch.no_grad():
                model[-1].bias.copy_(torch.tensor([0.0, 50.0]))
    if eval_fn(model, x, y) is None:
        pytest.skip("Inductor cannot compile here (no C++ compiler?)")
    loss, acc, n_pred = build_eval(model, x, y, compiled=True)()
    want_loss, want_acc, want_pred = evaluate(model, x, y)
    assert (acc, n_pred) == (want_acc, want_pred)
    if shape != "digits":  # an untrained digits net predicts a few of its 10 classes
        assert n_pred == {"cardio": 2, "one class": 1}[shape]
    assert loss == pytest.approx(want_loss, rel=1e-5)
    with torch.no_grad():  # the compiled pass reads the model's current weights
        for p in model.parameters():
            p.mul_(-1.0)
    assert build_eval(model, x, y, compiled=True)() == pytest.approx(evaluate(model, x, y))


def test_compile_rule_is_a_function_of_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    long = TrialConfig.model_validate(digits(train={"epochs": 50, "batch_size": 64}))
    short = TrialConfig.model_validate(digits(train={"epochs": 3, "batch_size": 64}))
    monkeypatch.delenv(COMPILE_ENV, raising=False)
    assert use_compiled_step(long, cpu, full_batches=137)
    assert not use_compiled_step(short, cpu, full_batches=16)
    assert not use_compiled_step(long, gpu, full_batches=137)
    tiny = TrialConfig.model_validate(digits(train={"epochs": 40, "batch_size": 4}))
    assert not use_compiled_step(tiny, cpu, full_batches=269)  # the slow tests' long trials
    monkeypatch.setenv(COMPILE_ENV, "always")
    assert use_compiled_step(short, cpu, full_batches=16)
    assert not use_compiled_step(short, cpu, full_batches=0)  # no full batch to compile for
    monkeypatch.setenv(COMPILE_ENV, "never")
    assert not use_compiled_step(long, cpu, full_batches=137)
    monkeypatch.setenv(COMPILE_ENV, "yes")
    with pytest.raises(ValueError, match="SWEEPS_COMPILE: must be one of"):
        use_compiled_step(long, cpu, full_batches=137)


@pytest.mark.parametrize(("weight_decay", "in_graph"), [(0.0, True), (0.01, False)])
def test_compiled_steps_equal_torch_optim(weight_decay: float, in_graph: bool) -> None:
    """Plain SGD's update runs inside the compiled graph instead of opt.step(); with weight decay
    the graph gives gradients and opt.step() applies them. Either way the weights and losses of
    12 steps under a cyclic rate (6 a half cycle, a partial batch last) equal those of eager
    autograd and torch.optim's SGD, up to float rounding; torch's LR schedule raises no warning."""
    cfg = TrialConfig.model_validate(
        digits(optimizer={"name": "sgd", "weight_decay": weight_decay})
    )
    data = load_dataset(cfg.dataset)
    x, y = data.x_train[: 64 * 11 + 20], data.y_train[: 64 * 11 + 20]

    def run(compiled: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], list[float]]:
        torch.manual_seed(0)
        model = build_model(cfg.model, data.n_features, data.n_classes)
        opt = build_optimizer(model.parameters(), cfg.optimizer, 0.05)
        sched = CyclicLR(opt, base_lr=0.05, max_lr=0.8, step_size_up=6, cycle_momentum=False)
        step = build_step(model, opt, x[:64], y[:64], compiled)
        losses, rates = [], []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for xb, yb in zip(x.split(64), y.split(64), strict=True):
                rates.append(opt.param_groups[0]["lr"])
                losses.append(step(xb, yb))
                if compiled and xb.shape[0] == 64:  # the graph stepped, or opt.step() did
                    assert all((p.grad is None) == in_graph for p in model.parameters())
                sched.step()
        return [p.detach() for p in model.parameters()], losses, rates

    opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), cfg.optimizer, 0.1)
    assert graph_update(opt) == in_graph
    model = build_model(cfg.model, data.n_features, data.n_classes)
    if grad_fn(model, x[:64], y[:64], in_graph) is None:
        pytest.skip("Inductor cannot compile here (no C++ compiler?)")
    want, want_losses, want_rates = run(compiled=False)
    got, got_losses, got_rates = run(compiled=True)
    assert got_rates == want_rates and len(set(got_rates)) > 6  # up and back down a cycle
    torch.testing.assert_close(got_losses, want_losses, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.manual_seed(0)
    start = build_model(cfg.model, data.n_features, data.n_classes).parameters()
    assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(got, start, strict=True))


@pytest.mark.parametrize("in_graph", [True, False])
def test_compiled_step_takes_a_strided_batch_eagerly(in_graph: bool) -> None:
    """The compiled graphs do not check their inputs' strides (see ``_compile``): a batch of the
    right shape laid out column-major must give what its row-major copy gives, not a misread."""
    cfg = TrialConfig.model_validate(
        digits(optimizer={"name": "sgd", "weight_decay": 0.0 if in_graph else 0.01})
    )
    data = load_dataset(cfg.dataset)
    x, y = data.x_train[:64], data.y_train[:64]
    # Every other entry of a longer tensor, and a column-major copy: the same values as (x, y).
    strided = (x.t().contiguous().t(), torch.stack([y, y.flip(0)], dim=1)[:, 0])
    assert torch.equal(strided[0], x) and torch.equal(strided[1], y)
    assert not (strided[0].is_contiguous() or strided[1].is_contiguous())

    def weights_after(xb: torch.Tensor, yb: torch.Tensor) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(cfg.model, data.n_features, data.n_classes)
        opt = build_optimizer(model.parameters(), cfg.optimizer, 0.3)
        step = build_step(model, opt, x, y, compiled=True)
        for _ in range(3):
            step(xb, yb)
        return [p.detach() for p in model.parameters()]

    if grad_fn(build_model(cfg.model, data.n_features, data.n_classes), x, y, in_graph) is None:
        pytest.skip("Inductor cannot compile here (no C++ compiler?)")
    torch.testing.assert_close(weights_after(*strided), weights_after(x, y), atol=1e-5, rtol=1e-5)


def test_lean_graph_computes_the_same_bits() -> None:
    """Pooled buffers and no per-call input checks change how the graph is called, not what it
    computes: its losses and weights equal those of the graph built without them, bit for bit."""
    cfg = TrialConfig.model_validate(digits(optimizer={"name": "sgd"}))
    data = load_dataset(cfg.dataset)
    x, y = data.x_train[: 64 * 5], data.y_train[: 64 * 5]

    def run(lean: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        torch.manual_seed(0)
        model = build_model(cfg.model, data.n_features, data.n_classes)
        opt = build_optimizer(model.parameters(), cfg.optimizer, 0.3)
        step = build_step(model, opt, x[:64], y[:64], compiled=True, lean=lean)
        losses = [step(xb, yb) for xb, yb in zip(x.split(64), y.split(64), strict=True)]
        return losses, [p.detach() for p in model.parameters()]

    model = build_model(cfg.model, data.n_features, data.n_classes)
    graphs = {lean: grad_fn(model, x[:64], y[:64], True, lean=lean) for lean in (True, False)}
    if None in graphs.values():
        pytest.skip("Inductor cannot compile here (no C++ compiler?)")
    # The two really differ: only the graph that is not lean checks its inputs' strides.
    weights_ = [p.detach().clone() for p in model.parameters()]
    strided_y = torch.stack([y[:64], y[:64]], dim=1)[:, 0]
    args = (*weights_, torch.zeros(()), x[:64], strided_y)
    with pytest.raises((AssertionError, RuntimeError)):
        graphs[False](*args)
    graphs[True](*args)
    (lean_losses, lean_weights), (losses, weights) = run(True), run(False)
    assert all(torch.equal(a, b) for a, b in zip(lean_losses, losses, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(lean_weights, weights, strict=True))


def test_only_stateless_sgd_is_applied_inside_the_graph() -> None:
    params = list(torch.nn.Linear(2, 2).parameters())
    for optimizer, want in [
        ({"name": "sgd"}, True),
        ({"name": "sgd", "weight_decay": 1e-4}, False),
        ({"name": "sgd", "momentum": 0.9}, False),  # a momentum buffer is optimizer state
        ({"name": "adam"}, False),
        ({"name": "adamw"}, False),
    ]:
        cfg = TrialConfig.model_validate(digits(optimizer=optimizer))
        assert graph_update(build_optimizer(params, cfg.optimizer, 0.1)) == want, optimizer


def test_trials_in_threads_share_one_compile() -> None:
    """Optuna's n_jobs runs trials in threads of one process: both get the one compiled graph
    (compiling at once failed inside Inductor's config patching, and one fell back to eager)."""
    cfg = TrialConfig.model_validate(digits(model={"name": "mlp", "hidden": [9, 7]}))
    data = load_dataset(cfg.dataset)
    model = build_model(cfg.model, data.n_features, data.n_classes)
    x, y = data.x_train[:32], data.y_train[:32]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the eager fallback warns
        with ThreadPoolExecutor(2) as pool:
            fns = list(pool.map(lambda _: grad_fn(model, x, y, True), range(2)))
    assert fns[0] is not None and fns[0] is fns[1]
