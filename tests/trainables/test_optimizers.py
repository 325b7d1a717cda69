"""trainables.optimizers: torch's optimizers, the same bits and state dicts, without importing
torch._dynamo."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import CyclicLR
from torch.optim.optimizer import register_optimizer_step_pre_hook

from trainables.config import OptimizerConfig
from trainables.optimizers import SGD, Adam, AdamW, build_optimizer

CASES: list[tuple[type[torch.optim.Optimizer], type[torch.optim.Optimizer], dict[str, Any]]] = [
    (SGD, torch.optim.SGD, {}),
    (SGD, torch.optim.SGD, {"momentum": 0.9, "weight_decay": 0.01}),
    (SGD, torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    (Adam, torch.optim.Adam, {"weight_decay": 0.01}),
    (AdamW, torch.optim.AdamW, {}),
]


def train(
    cls: type[torch.optim.Optimizer],
    kw: dict[str, Any],
    steps: int,
    start: dict[str, Any] | None = None,
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """``steps`` steps of a small model under a cyclic rate (after loading ``start``, a model
    and optimizer state, where given): the weights and the optimizer's state dict."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    opt = cls(model.parameters(), lr=0.05, fused=True, **kw)
    schedule = CyclicLR(opt, base_lr=0.01, max_lr=0.2, step_size_up=3, cycle_momentum=False)
    if start is not None:
        start = copy.deepcopy(start)  # torch loads state tensors without copying them
        model.load_state_dict(start["model"])
        opt.load_state_dict(start["optimizer"])
    x, y = torch.randn(steps, 8, 6), torch.randint(0, 3, (steps, 8))
    for xb, yb in zip(x, y, strict=True):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
        schedule.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    return [p.detach().clone() for p in model.parameters()], state


def assert_same_state(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["param_groups"] == want["param_groups"]
    assert got["state"].keys() == want["state"].keys()
    for i, entries in want["state"].items():
        assert got["state"][i].keys() == entries.keys()
        for name, value in entries.items():
            assert torch.equal(got["state"][i][name], value), (i, name)


@pytest.mark.parametrize(("ours", "torchs", "kw"), CASES)
def test_steps_and_state_dicts_equal_torchs(
    ours: type[torch.optim.Optimizer], torchs: type[torch.optim.Optimizer], kw: dict[str, Any]
) -> None:
    got_w, got = train(ours, kw, 7)
    want_w, want = train(torchs, kw, 7)
    assert all(torch.equal(a, b) for a, b in zip(got_w, want_w, strict=True))
    assert_same_state(got["optimizer"], want["optimizer"])
    assert got["optimizer"]["param_groups"][0]["lr"] != 0.05  # the schedule moved the rate
    if kw.get("momentum") or ours is not SGD:
        assert got["optimizer"]["state"]  # buffers or moments: state worth comparing


@pytest.mark.parametrize(("ours", "torchs", "kw"), CASES)
def test_checkpoints_resume_across_the_two(
    ours: type[torch.optim.Optimizer], torchs: type[torch.optim.Optimizer], kw: dict[str, Any]
) -> None:
    """A checkpoint written by either resumes in the other exactly as in itself: a trial
    checkpointed under an older sweeps, or on a host that trains eagerly, resumes unchanged."""
    _, mine = train(ours, kw, 4)
    _, theirs = train(torchs, kw, 4)
    want_w, want = train(torchs, kw, 3, start=theirs)
    for cls, start in [(ours, theirs), (torchs, mine), (ours, mine)]:
        got_w, got = train(cls, kw, 3, start=start)
        assert all(torch.equal(a, b) for a, b in zip(got_w, want_w, strict=True)), cls
        assert_same_state(got["optimizer"], want["optimizer"])


def test_step_hooks_and_grad_mode_are_torchs() -> None:
    """Global step hooks still run around each step (tests and profilers rely on them), and
    the step runs without grad as torch's does."""
    seen: list[bool] = []
    hook = register_optimizer_step_pre_hook(lambda opt, *_: seen.append(torch.is_grad_enabled()))
    try:
        param = torch.nn.Parameter(torch.ones(2))
        opt = SGD([param], lr=0.5)
        param.grad = torch.ones(2)
        with torch.enable_grad():
            opt.step()
    finally:
        hook.remove()
    assert seen == [True]  # the hook runs outside the step's own grad mode, as in torch
    assert torch.equal(param.detach(), torch.full((2,), 0.5))
    assert not param.detach().requires_grad and param.grad_fn is None


def test_build_optimizer_gives_ours_with_torchs_fused_kernel() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    for name, cls in [("sgd", SGD), ("adam", Adam), ("adamw", AdamW)]:
        opt = build_optimizer(params, OptimizerConfig(name=name), 0.1)
        assert type(opt) is cls and opt.defaults["fused"] is True
        assert isinstance(opt, torch.optim.Optimizer)


def test_a_trial_process_leaves_torch_dynamo_unimported() -> None:
    """What the module is for, in a fresh process: every optimizer, built, stepped under an LR
    schedule, saved and loaded, with torch._dynamo still unimported (with torch's own
    optimizers it is imported at construction)."""
    code = textwrap.dedent(
        """
        import sys
        import torch
        from torch.optim.lr_scheduler import OneCycleLR
        from trainables.config import OptimizerConfig
        from trainables.optimizers import build_optimizer
        for name in ("sgd", "adam", "adamw"):
            model = torch.nn.Linear(3, 2)
            opt = build_optimizer(model.parameters(), OptimizerConfig(name=name), 0.1)
            schedule = OneCycleLR(opt, max_lr=0.5, total_steps=10)
            for _ in range(3):
                opt.zero_grad()
                model(torch.randn(4, 3)).sum().backward()
                opt.step()
                schedule.step()
            opt.load_state_dict(opt.state_dict())
        print("torch._dynamo" in sys.modules)
        torch.optim.SGD(model.parameters(), lr=0.1)
        print("torch._dynamo" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert out == ["False", "True"]  # the second: torch's own SGD, so the check can fail
