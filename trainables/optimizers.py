"""The optimizers a trial trains with: torch's own, called past the wrappers that import
``torch._dynamo``.

torch wraps ``Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict``,
and each optimizer's ``step``, in decorators that keep torch.compile's tracer (dynamo) out of
them. Each decorator imports ``torch._dynamo`` on its first call: 1.8-2.9 s of one core in every
fresh process on the 2-vCPU dev box, where a Ray worker's whole start took ~8 s. Nothing here
runs under dynamo (the compiled step is traced by ``make_fx``, see ``steps.grad_fn``), so
these classes call the functions inside the decorators: torch's code and bits, without the
import (``tests/trainables/test_optimizers.py``). Do not trace them with ``torch.compile``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch.optim import Optimizer

from trainables.config import OptimizerConfig


def _inner(method: Callable[..., Any]) -> Callable[..., Any]:
    """The function a decorator built with ``functools.wraps`` wraps; the method itself where a
    torch release does not decorate it (then it is merely slower)."""
    return getattr(method, "__wrapped__", method)


class _WithoutDynamo(Optimizer):
    # torch's step of the class with its wrappers taken off (``inspect.unwrap``): the grad-mode
    # one that imports dynamo, and the profiler's that Optimizer.__init__ may have put on the
    # class (it puts its own on this class's ``step``, so hooks still run).
    _torch_step: ClassVar[Callable[..., Any]]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _inner(Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _inner(Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = _inner(Optimizer.state_dict)(self)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _inner(Optimizer.load_state_dict)(self, state_dict)

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        # What torch's wrapper does around the step, less dynamo's graph breaks.
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return type(self)._torch_step(self, closure)


class SGD(_WithoutDynamo, torch.optim.SGD):
    _torch_step = staticmethod(inspect.unwrap(torch.optim.SGD.step))


class Adam(_WithoutDynamo, torch.optim.Adam):
    _torch_step = staticmethod(inspect.unwrap(torch.optim.Adam.step))


class AdamW(_WithoutDynamo, torch.optim.AdamW):
    _torch_step = staticmethod(inspect.unwrap(torch.optim.AdamW.step))


def build_optimizer(params: Any, cfg: OptimizerConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer, with torch's fused kernel where the parameters' device has one: one kernel
    call per step instead of a Python loop over tensors; the same update rule (plain SGD is
    bit-identical, momentum/Adam differ by float rounding only)."""
    params = list(params)
    fused = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )
    kw: dict[str, Any] = {"lr": lr, "weight_decay": cfg.weight_decay, "fused": fused or None}
    if cfg.name == "sgd":
        return SGD(params, momentum=cfg.momentum, **kw)
    return (Adam if cfg.name == "adam" else AdamW)(params, **kw)
