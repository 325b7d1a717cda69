"""report._lr_curve: the per-batch rates of torch's own schedule, as a trial sees them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sweeps.report import _lr_curve
from sweeps.spec import load_spec
from trainables import TrialConfig
from trainables.lr_schedules import build_lr_schedule

PARAMS = {
    "fixed": {"base_lr": "0.05"},
    "triangular": {"base_lr": "0.01", "max_lr": "0.3", "step_size_epochs": "2"},
    "triangular2": {"base_lr": "0.01", "max_lr": "0.3", "step_size_epochs": "2"},
    "exp_range": {"base_lr": "0.01", "max_lr": "0.3", "step_size_epochs": "2", "gamma": "0.999"},
    "one_cycle": {"base_lr": "0.01", "max_lr": "0.3"},
    "sgdr": {"base_lr": "0.01", "max_lr": "0.3", "step_size_epochs": "2", "t_mult": "2"},
}


@pytest.mark.filterwarnings("error")  # e.g. torch's "lr_scheduler.step() before optimizer.step()"
@pytest.mark.parametrize("family", list(PARAMS))
def test_curve_is_what_a_trial_steps_through(family: str) -> None:
    spec = load_spec("cardio_clr", [])
    iters = 7
    got = _lr_curve(spec, family, PARAMS[family], iters)

    # What train_loop does: an optimizer step on every batch, then the schedule's step.
    typed = {k: (int(v) if k in ("step_size_epochs", "t_mult") else float(v))
             for k, v in PARAMS[family].items()}  # fmt: skip
    cfg = TrialConfig.model_validate(spec.trial_config({"family": family, **typed}))
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg.base_lr)
    schedule = build_lr_schedule(opt, cfg, iters)
    want = []
    for _ in range(spec.train.epochs * iters):
        want.append(opt.param_groups[0]["lr"])
        param.grad = torch.zeros(1)
        opt.step()
        schedule.step()
    assert got == want
    if family == "triangular":  # up for 2 epochs, down for 2
        assert got[0] == pytest.approx(0.01) and max(got) == pytest.approx(0.3)
        assert got.index(max(got)) == 2 * iters


def test_curves_leave_torch_dynamo_unimported() -> None:
    # A torch optimizer's set-up imports torch._dynamo (~3 s of the report on a 2-vCPU box):
    # the report trains nothing, so drawing its curves must not pay for it. A fresh process,
    # since this one may have imported it already.
    script = (
        "import sys\n"
        "from sweeps.report import _lr_curve\n"
        "from sweeps.spec import load_spec\n"
        f"params = {PARAMS!r}\n"
        "spec = load_spec('cardio_clr', [])\n"
        "for family, p in params.items():\n"
        "    assert len(_lr_curve(spec, family, p, 7)) == spec.train.epochs * 7\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "False"
