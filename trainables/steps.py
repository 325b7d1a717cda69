"""The training step and the val pass of ``train_loop``: eager, or on the CPU one graph compiled
once per machine (``grad_fn``, ``eval_fn``; later processes load it through ``graph_store``):
torch's own autograd (``torch.func``) traced into a graph, its smallest GEMMs rewritten
(``graph_passes``), and compiled by Inductor. For plain SGD the graph also applies torch's SGD
update. The update rule and the batches are the same in every path.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.sgd import sgd as sgd_update

from trainables import graph_passes, graph_store
from trainables.config import TrialConfig
from trainables.graph_passes import small_gemms
from trainables.lr_schedules import mark_stepped
from trainables.optimizers import SGD

# (x, y) of one batch -> its mean loss (detached), after one optimizer step on that batch.
Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# One compiled graph: (*parameters, x, y) -> (loss, *gradients); or, where it applies the SGD
# update itself, (*parameters, lr, x, y) -> (loss,), updating the parameters in place; or the
# val pass, (*parameters, x, y) -> (loss, correct, classes predicted).
GradFn = Callable[..., Any]

# A CPU trial with at least this many full batches (epochs x batches) of at least COMPILE_MIN_BATCH
# rows gets the compiled step. The compile costs seconds once per process and per batch shape
# (then nothing for every later trial); each step saves ~0.3 ms, so a sweep of 50-epoch cardio
# trials (6,850 steps each) repays it within a trial or two, while the short trials of the tests
# and of digits (480 steps) stay eager. Tiny batches stay eager too: the slow tests use them to
# make trials last seconds, and their timing must not change under them. The choice depends on
# the config only, so a config trains the same way in any process, and a resumed trial as it
# started.
COMPILE_MIN_STEPS = 2000
COMPILE_MIN_BATCH = 32
# "auto" (the rule above), "always" or "never": an operator's escape hatch, e.g. for a host
# without a C++ compiler (which also falls back to eager by itself, with a warning).
COMPILE_ENV = "SWEEPS_COMPILE"
COMPILE_MODES = ("auto", "always", "never")


def graph_update(opt: torch.optim.Optimizer) -> bool:
    """Whether the compiled graph can apply ``opt``'s update in place of ``opt.step()``: plain SGD
    over one parameter group. Without momentum it keeps no state, so the optimizer (its state
    dict, a checkpoint) cannot tell the difference. Not with weight decay: traced into the graph,
    torch 2.13's Inductor got the weights wrong (off by up to 1e-2 after one step, measured)."""
    if type(opt) not in (SGD, torch.optim.SGD) or len(opt.param_groups) != 1:
        return False
    group = opt.param_groups[0]
    return not (
        group["momentum"] or group["weight_decay"] or group["maximize"] or group["differentiable"]
    )


_GRAPHS: dict[tuple[Any, ...], GradFn | None] = {}
# Trials in threads of one process (Optuna's n_jobs) would otherwise compile at once, and
# Inductor's config patching is not thread-safe.
_COMPILE_LOCK = threading.Lock()


def _arch_key(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[Any, ...]:
    """What a compiled graph depends on: the architecture, the batch's shape and types, the
    device and the thread count."""
    return (
        repr(model),
        tuple((n, tuple(p.shape), p.dtype) for n, p in model.named_parameters()),
        tuple(x.shape), x.dtype, y.dtype, str(x.device), torch.get_num_threads(),
    )  # fmt: skip


def grad_fn(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sgd: bool = False,
    cpp_wrapper: bool = True,
    gemm_rewrites: bool = True,
    lean: bool = True,
) -> GradFn | None:
    """The compiled step of ``cross_entropy(model(x), y)`` for ``model``'s architecture and this
    batch shape: ``(*parameters, x, y) -> (loss, *grads)``, or with ``sgd``,
    ``(*parameters, lr, x, y) -> (loss,)`` with torch's plain SGD update applied in place.
    Cached per process, so a trial of the same architecture reuses it for free. None where
    compiling fails (then the caller trains eagerly). The graph does not check its inputs: pass
    tensors of the example's shapes, contiguous (``build_step`` does).

    The gradients are torch's: ``torch.func.grad_and_value`` traced by ``make_fx`` into one graph
    of forward and backward, which Inductor compiles. The weights (and the rate) are inputs, not
    constants, so the graph serves every trial. ``torch.compile`` would do the same but its guards
    and wrappers cost ~0.1 ms per call here, a third of a step; the traced graph has neither.
    ``cpp_wrapper``: Inductor calls the graph's kernels from C++ rather than from generated Python,
    ~25 us less per step. ``gemm_rewrites``: ``graph_passes.small_gemms``, ~20 us less per cardio
    step. ``lean``: pooled buffers and no per-call input checks (see ``_compile``). All three are
    off only to measure them.
    """
    key = ("step", *_arch_key(model, x, y), sgd, cpp_wrapper, gemm_rewrites, lean)
    with _COMPILE_LOCK:
        if key not in _GRAPHS:
            _GRAPHS[key] = _compile_grad_fn(model, x, y, sgd, cpp_wrapper, gemm_rewrites, lean, key)
    return _GRAPHS[key]


def _compile_grad_fn(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sgd: bool,
    cpp_wrapper: bool,
    gemm_rewrites: bool,
    lean: bool,
    key: tuple[Any, ...],
) -> GradFn | None:
    if any(True for _ in model.buffers()):
        return None  # a buffer would be baked into the graph as a constant
    names = [n for n, _ in model.named_parameters()]

    def loss(params: tuple[torch.Tensor, ...], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (xb,))
        return F.cross_entropy(logits, yb)

    grad_and_loss = torch.func.grad_and_value(loss)

    def flat(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        grads, value = grad_and_loss(args[:-2], args[-2], args[-1])
        return (value, *grads)

    def flat_sgd(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params, lr = list(args[:-3]), args[-3]
        grads, value = grad_and_loss(tuple(params), args[-2], args[-1])
        with torch.no_grad():
            # torch.optim's own SGD update, traced: what opt.step() runs, less ~40 us of Python.
            sgd_update(
                params, list(grads), [None] * len(params), foreach=False, fused=False,
                weight_decay=0.0, momentum=0.0, dampening=0.0, nesterov=False, maximize=False,
                lr=lr,  # type: ignore[arg-type]  # a tensor rate: torch handles it, types say float
            )  # fmt: skip
        return (value,)

    # The rate: a float32 scalar, as torch's fused SGD kernel applies it.
    rate = [torch.zeros((), dtype=x.dtype, device=x.device)] if sgd else []
    example: list[Any] = [p.detach() for p in model.parameters()] + rate + [x, y]
    # A rate that requires grad takes torch's tensor-rate branch (addcmul_), which traces; the
    # float branch would bake one rate into the graph. The graph is then compiled for the plain
    # rate tensor that the step passes.
    rate_rg = {len(example) - 3: x.new_zeros((), requires_grad=True)} if sgd else {}
    return _compile(
        flat_sgd if sgd else flat, example, rate_rg, cpp_wrapper, gemm_rewrites, lean,
        "training step", _stored_key(model, key),
    )  # fmt: skip


def _compile(
    fn: Callable[..., tuple[torch.Tensor, ...]],
    example: list[torch.Tensor],
    trace_as: Mapping[int, torch.Tensor],
    cpp_wrapper: bool,
    gemm_rewrites: bool,
    lean: bool,
    what: str,
    stored: str | None,
) -> GradFn | None:
    """``fn`` traced into one graph (``trace_as`` replaces some example inputs for the trace
    only), its small GEMMs rewritten, compiled by Inductor; None where that fails. A graph that
    an earlier process compiled under the key ``stored`` is loaded instead (``graph_store``)."""
    if cpp_wrapper and stored and (loaded := graph_store.load(stored)) is not None:
        return loaded
    try:
        # Imported here: Inductor takes seconds to import, and only compiled trials need it.
        from torch._inductor import compile as inductor_compile
        from torch._inductor import config as inductor_config
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.proxy_tensor import make_fx
        from torch.fx.experimental.symbolic_shapes import ShapeEnv

        # Traced on fake tensors with a static ShapeEnv: Inductor's on-disk graph cache needs
        # one, and then serves every later process (a warm compile: ~2 s less per Ray worker).
        mode = FakeTensorMode(shape_env=ShapeEnv(), static_shapes=True)
        fake: list[Any] = [mode.from_tensor(t, static_shapes=True) for t in example]
        traced_with = [
            mode.from_tensor(trace_as[i], static_shapes=True) if i in trace_as else t
            for i, t in enumerate(fake)
        ]
        with mode:
            graph = make_fx(fn)(*traced_with)
        if gemm_rewrites:
            small_gemms(graph)
        before = graph_store.libraries()
        # One pooled allocation per call instead of one per buffer, and no per-call checks of
        # the inputs' sizes and strides (the callers check them): ~12 % off a cardio step,
        # the same bits (docs/benchmarks.md).
        with inductor_config.patch(
            cpp_wrapper=cpp_wrapper, memory_planning=lean, size_asserts=not lean
        ):
            compiled = inductor_compile(graph, fake)
        if cpp_wrapper and stored:
            graph_store.save(stored, before)
    except Exception as exc:  # no C++ compiler, an unsupported platform: eager is still right
        warnings.warn(
            f"train_loop: compiling the {what} failed, running it eagerly ({exc})",
            stacklevel=4,
        )
        return None
    return _direct(compiled)


def _stored_key(model: nn.Module, key: tuple[Any, ...]) -> str | None:
    """``graph_store``'s key for a graph of ``model`` cached here under ``key``: the module
    classes' source joins it where torch does not define them (torch's version covers those).
    None, so nothing is stored or loaded, where a source cannot be read."""
    sources = [__file__, graph_passes.__file__]
    names = []
    for cls in {type(m) for m in model.modules()}:
        names.append(f"{cls.__module__}.{cls.__qualname__}")
        if not cls.__module__.startswith("torch."):
            with contextlib.suppress(TypeError):  # no file holds it: its name only
                sources.append(inspect.getfile(cls))
    try:
        return graph_store.graph_key((key, sorted(names)), sources)
    except OSError:
        return None


def _direct(compiled: Callable[..., Any]) -> GradFn:
    """Inductor's compiled graph, called without the two wrappers ``torch._inductor.compile``
    puts around it: dynamo's disable context and AOTAutograd's runtime wrapper, which switches
    grad mode off and bumps the version counters of the inputs the graph updates in place. They
    cost ~40 us a call on the 2-core dev box, 15 % of a cardio step. Neither is needed here: no
    input requires grad, and no autograd graph holds the weights across a step. Where a torch
    release does not expose the graph (``current_callable``), the wrapped callable."""
    graph = getattr(compiled, "current_callable", None)
    if graph is None:
        return compiled

    def call(*args: torch.Tensor) -> Any:
        return graph(list(args))  # Inductor's boxed convention: one list, which it empties

    call.direct = True  # type: ignore[attr-defined]
    return call


def compile_mode() -> str:
    """``$SWEEPS_COMPILE``, checked: one of COMPILE_MODES."""
    mode = os.environ.get(COMPILE_ENV, "auto")
    if mode not in COMPILE_MODES:
        raise ValueError(f"${COMPILE_ENV}: must be one of {COMPILE_MODES}, but got {mode!r}")
    return mode


def use_compiled_step(cfg: TrialConfig, device: torch.device, full_batches: int) -> bool:
    """The compile rule (see COMPILE_MIN_STEPS). CPU only: on a GPU Inductor needs Triton, and
    nothing here has measured whether it pays there."""
    mode = compile_mode()
    if device.type != "cpu" or full_batches == 0 or mode == "never":
        return False
    return mode == "always" or (
        cfg.train.batch_size >= COMPILE_MIN_BATCH
        and cfg.train.epochs * full_batches >= COMPILE_MIN_STEPS
    )


def build_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    compiled: bool,
    cpp_wrapper: bool = True,
    gemm_rewrites: bool = True,
    lean: bool = True,
) -> Step:
    """One optimizer step on a batch shaped like ``(x, y)``: compiled where asked and possible
    (with plain SGD's update inside the graph, see ``graph_update``), eager for any other shape
    (the last, partial batch) or where compiling failed."""

    def eager(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    if not compiled:
        return eager
    in_graph = graph_update(opt)
    fn = grad_fn(model, x, y, in_graph, cpp_wrapper, gemm_rewrites, lean)
    if fn is None:
        return eager
    params = list(model.parameters())
    # Detached aliases share storage with the parameters, so they follow every in-place update
    # (optimizer steps, load_state_dict) and keep autograd out of the compiled call.
    weights = [p.detach() for p in params]
    if not all(w.is_contiguous() for w in weights):
        return eager  # the graph was built for row-major weights and does not check
    fits = _fits(x, y)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if not fits(xb, yb):
            return eager(xb, yb)
        loss, *grads = fn(*weights, xb, yb)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        return loss

    if not in_graph:
        return step
    group = opt.param_groups[0]
    lr = torch.zeros((), dtype=weights[0].dtype, device=x.device)
    mark_stepped(opt)  # the graph's updates bypass opt.step()

    def step_in_graph(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if not fits(xb, yb):
            return eager(xb, yb)
        lr.fill_(group["lr"])  # the LR schedule's rate for this batch
        loss: torch.Tensor = fn(*weights, lr, xb, yb)[0]
        return loss

    return step_in_graph


def _fits(x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], bool]:
    """Whether a batch has the shapes a graph was built for, ``(x, y)``'s, and is contiguous:
    the compiled graphs skip Inductor's own checks of their inputs (see ``_compile``), and any
    other batch (the last, partial one) takes the eager step."""
    shapes = (x.shape, y.shape)

    def fits(xb: torch.Tensor, yb: torch.Tensor) -> bool:
        return (xb.shape, yb.shape) == shapes and xb.is_contiguous() and yb.is_contiguous()

    return fits


def _val_stats(
    logits: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean loss, correct predictions and distinct predicted classes, as tensors: the eager
    val pass and the compiled one compute these same ops."""
    pred = logits.argmax(dim=1)
    classes = torch.arange(logits.shape[1], device=logits.device)
    return (
        F.cross_entropy(logits, y),
        (pred == y).sum(),
        (pred.unsqueeze(1) == classes).any(dim=0).sum(),
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, int]:
    """Loss, accuracy and the number of distinct predicted classes, in one no-grad pass."""
    loss, correct, n_pred = _val_stats(model(x), y)
    return loss.item(), correct.item() / y.numel(), int(n_pred.item())


def eval_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> GradFn | None:
    """The val pass on ``(x, y)`` compiled for ``model``'s architecture: ``(*parameters, x, y) ->
    (loss, correct, classes predicted)``, the ops of ``evaluate``. Cached per process like
    ``grad_fn``; None where compiling fails. Like it, unchecked: pass ``(x, y)`` themselves,
    contiguous (``build_eval`` does)."""
    key = ("eval", *_arch_key(model, x, y))
    with _COMPILE_LOCK:
        if key not in _GRAPHS:
            _GRAPHS[key] = _compile_eval_fn(model, x, y, key)
    return _GRAPHS[key]


def _compile_eval_fn(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, key: tuple[Any, ...]
) -> GradFn | None:
    if any(True for _ in model.buffers()):
        return None
    names = [n for n, _ in model.named_parameters()]

    def flat(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = dict(zip(names, args[:-2], strict=True))
        return _val_stats(torch.func.functional_call(model, params, (args[-2],)), args[-1])

    example = [p.detach() for p in model.parameters()] + [x, y]
    return _compile(
        flat, example, {}, cpp_wrapper=True, gemm_rewrites=True, lean=True, what="val pass",
        stored=_stored_key(model, key),
    )  # fmt: skip


def build_eval(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, compiled: bool
) -> Callable[[], tuple[float, float, int]]:
    """``evaluate(model, x, y)`` as a call without arguments: compiled where asked and possible
    (the val set is the same every epoch, so one graph serves the whole trial)."""
    fn = eval_fn(model, x, y) if compiled else None
    weights = [p.detach() for p in model.parameters()]  # aliases, see build_step
    if fn is None or not all(t.is_contiguous() for t in (*weights, x, y)):
        return lambda: evaluate(model, x, y)  # (the graph does not check its inputs' strides)

    def compiled_eval() -> tuple[float, float, int]:
        loss, correct, n_pred = fn(*weights, x, y)
        return loss.item(), correct.item() / y.numel(), int(n_pred.item())

    return compiled_eval
