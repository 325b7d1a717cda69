"""The LR curve of each family, tested directly as a function of the step."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch

from trainables import TrialConfig, build_lr_schedule

ITERS = 10  # iterations per epoch


def cfg(family: str, **kw: Any) -> TrialConfig:
    base: dict[str, Any] = dict(
        dataset={"name": "digits"}, model={"name": "mlp"}, optimizer={"name": "sgd"},
        train={"epochs": 12, "batch_size": 32}, family=family, base_lr=0.01,
    )  # fmt: skip
    base.update(kw)
    return TrialConfig.model_validate(base)


def make(c: TrialConfig, momentum: float = 0.0) -> tuple[torch.optim.Optimizer, Any]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=c.base_lr, momentum=momentum)
    return opt, build_lr_schedule(opt, c, ITERS)


def curve(c: TrialConfig, steps: int, momentum: float = 0.0) -> list[float]:
    opt, sched = make(c, momentum)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def smith_triangular(it: int, base: float, top: float, step: int) -> float:
    cycle = math.floor(1 + it / (2 * step))
    x = abs(it / step - 2 * cycle + 1)
    return base + (top - base) * max(0.0, 1 - x)


def test_fixed_is_constant() -> None:
    assert curve(cfg("fixed", base_lr=0.05), 50) == [0.05] * 50


def test_triangular_equals_smiths_formula() -> None:
    c = cfg("triangular", base_lr=0.01, max_lr=0.1, step_size_epochs=2)
    lrs = curve(c, 120)
    for it, lr in enumerate(lrs):
        assert lr == pytest.approx(smith_triangular(it, 0.01, 0.1, 2 * ITERS), rel=1e-9)


def test_lr_at_chosen_steps_per_family() -> None:
    step = 2 * ITERS
    tri = curve(cfg("triangular", max_lr=0.1, step_size_epochs=2), 4 * step + 1)
    assert (tri[0], tri[step], tri[2 * step]) == pytest.approx((0.01, 0.1, 0.01))
    tri2 = curve(cfg("triangular2", max_lr=0.1, step_size_epochs=2), 4 * step + 1)
    assert tri2[step] == pytest.approx(0.1)
    assert tri2[3 * step] == pytest.approx(0.01 + 0.09 / 2)  # second cycle at half amplitude
    exp = curve(cfg("exp_range", max_lr=0.1, step_size_epochs=2, gamma=0.99), 4 * step + 1)
    assert exp[step] == pytest.approx(0.01 + 0.09 * 0.99**step)
    one = curve(cfg("one_cycle", max_lr=0.1), 12 * ITERS)
    assert one[0] == pytest.approx(0.01)  # initial rate is base_lr (div_factor = max/base)
    assert max(one) == pytest.approx(0.1, rel=1e-3)
    assert one[-1] < 0.01 / 100  # anneals far below base_lr by the end
    sgdr = curve(cfg("sgdr", max_lr=0.1, step_size_epochs=3, t_mult=1), 7 * ITERS)
    assert sgdr[0] == pytest.approx(0.1)
    half = 3 * ITERS // 2
    assert sgdr[half] == pytest.approx(0.01 + 0.09 * 0.5)  # cosine midpoint of T_0
    assert sgdr[3 * ITERS] == pytest.approx(0.1)  # warm restart after T_0 epochs
    assert sgdr[3 * ITERS - 1] < 0.011


def test_sgdr_t_mult_doubles_the_period() -> None:
    lrs = curve(cfg("sgdr", max_lr=0.1, step_size_epochs=2, t_mult=2), 7 * ITERS)
    restarts = [i for i in range(1, len(lrs)) if lrs[i] > lrs[i - 1]]
    assert restarts == [2 * ITERS, 6 * ITERS]


@pytest.mark.parametrize(
    "family_kw",
    [
        {"family": "triangular", "max_lr": 0.1, "step_size_epochs": 2},
        {"family": "exp_range", "max_lr": 0.1, "step_size_epochs": 2, "gamma": 0.999},
        {"family": "one_cycle", "max_lr": 0.1},
        {"family": "sgdr", "max_lr": 0.1, "step_size_epochs": 2, "t_mult": 1},
    ],
)
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_momentum_is_not_silently_changed(family_kw: dict[str, Any], momentum: float) -> None:
    opt, sched = make(cfg(**family_kw), momentum)
    for _ in range(37):
        opt.step()
        sched.step()
        assert opt.param_groups[0]["momentum"] == momentum


@pytest.mark.parametrize(
    "family_kw",
    [
        {"family": "triangular2", "max_lr": 0.1, "step_size_epochs": 2},
        {"family": "exp_range", "max_lr": 0.1, "step_size_epochs": 2, "gamma": 0.99},
        {"family": "one_cycle", "max_lr": 0.1},
        {"family": "sgdr", "max_lr": 0.1, "step_size_epochs": 2, "t_mult": 2},
    ],
)
def test_schedule_state_survives_save_and_restore_mid_cycle(family_kw: dict[str, Any]) -> None:
    c = cfg(**family_kw)
    full = curve(c, 90)
    opt, sched = make(c)
    for _ in range(53):  # mid-cycle
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    opt2, sched2 = make(c)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    rest = []
    for _ in range(90 - 53):
        rest.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert rest == pytest.approx(full[53:], rel=1e-12)
