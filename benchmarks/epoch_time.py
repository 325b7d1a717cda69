"""How fast is one cardio epoch? ``train_loop`` against a naive DataLoader loop and the FLOP floor.

In one process, with one torch thread, on the spec's cardio data (triangular2, seed 0):

1. ``train_loop``: ms per epoch (training plus the val pass it reports), the median over
   ``--repeats`` epochs after the first (reported apart), for both step paths (eager; compiled,
   see ``trainables.steps.grad_fn``), plus the time from a trial's start to its first epoch;
2. before: the loop ``train_loop`` had before issue 7a (a fancy-indexed batch, unfused SGD, a loss
   sum per step), on the same model, data and schedule, with the same val pass;
3. naive: ``DataLoader(TensorDataset(x, y), batch_size=350, shuffle=True)`` with a plain
   ``nn.Sequential``, SGD, ``zero_grad``/``backward``/``step`` and a per-batch ``CyclicLR`` step;
4. floor: the epoch's matmul FLOPs (forward ``2·n·Σ in·out`` over the layers, backward ~2x that,
   so ``3·2·n·Σ in·out``) at the single-thread float32 rate of a 1024^3 ``torch.mm``.

Every time is given as wall and as CPU time of this process: on a shared machine the wall time
includes waiting for a core, the CPU time does not. ``--ablation`` adds the changes of issue 7a
one at a time (training steps only, no val pass), interleaved so that load hits them alike.
``--lean-ab ROUNDS`` times only the compiled step's graph built lean (pooled buffers, no per-call
input checks) against without, alternated in one process; ``--rates-ab ROUNDS`` the LR schedule
stepped through an epoch before its batches (as ``train_loop`` does) against after each batch.

    SWEEPS_DATA_DIR=../shared/data python benchmarks/epoch_time.py [--repeats 7] [--fresh-cache]
        [--ablation] [--lean-ab ROUNDS] [--rates-ab ROUNDS] [--device cuda]

``--device cuda`` times the same loops on a GPU (``gpu_main``).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CyclicLR
from torch.utils.data import DataLoader, TensorDataset

from sweeps.spec import load_spec
from trainables import TrialConfig, train_loop
from trainables.data import load_splits
from trainables.lr_schedules import build_lr_schedule
from trainables.models import build_model
from trainables.steps import COMPILE_ENV, Step, build_eval, build_step, evaluate, grad_fn
from trainables.train_loop import run_batches

POINT = {"family": "triangular2", "base_lr": 0.01, "max_lr": 0.3, "step_size_epochs": 2}


@dataclass
class Clock:
    """Wall and CPU seconds since ``start``."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)

    def lap(self) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        out = (w - self.wall, c - self.cpu)
        self.wall, self.cpu = w, c
        return out


@dataclass
class Run:
    first_epoch: float  # wall s of the first epoch (its epoch_seconds)
    epochs: list[tuple[float, float]]  # (wall, cpu) s of each later epoch
    to_first: tuple[float, float]  # (wall, cpu) s from the train_loop call to the first report
    val_acc: float

    def median(self, i: int) -> float:
        return statistics.median(e[i] for e in self.epochs)


def trial_config(epochs: int, device: str = "cpu") -> TrialConfig:
    overrides = [f"train.epochs={epochs}", f"train.device={device}", "early_stopping.name=none"]
    spec = load_spec("cardio_clr", overrides)  # one trial: no ASHA, so any --repeats is valid
    return TrialConfig.model_validate(spec.trial_config(POINT, seed=0))


def run_train_loop(cfg: TrialConfig, mode: str) -> Run:
    os.environ[COMPILE_ENV] = mode
    laps: list[tuple[float, float]] = []
    rows: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        laps.append(clock.lap())
        rows.append(metrics)

    clock = Clock()
    train_loop(cfg, report)
    # laps[0] runs from the call: the trial's setup plus its first epoch.
    return Run(rows[0]["epoch_seconds"], laps[1:], laps[0], float(rows[-1]["val_acc"]))


def run_naive(cfg: TrialConfig, repeats: int, device: str = "cpu") -> list[tuple[float, float]]:
    d = load_splits(cfg.dataset)
    torch.manual_seed(0)
    widths = [d.n_features, *cfg.model.hidden]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(widths[-1], d.n_classes)).to(device)
    bs = cfg.train.batch_size
    loader = DataLoader(
        TensorDataset(d.x_train, d.y_train),
        batch_size=bs,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    opt = torch.optim.SGD(model.parameters(), lr=cfg.base_lr)
    iters = math.ceil(d.x_train.shape[0] / bs)
    assert cfg.max_lr is not None and cfg.step_size_epochs is not None
    sched = CyclicLR(
        opt, cfg.base_lr, cfg.max_lr, step_size_up=cfg.step_size_epochs * iters,
        mode="triangular2", cycle_momentum=False,
    )  # fmt: skip
    loss_fn = nn.CrossEntropyLoss()
    out = []
    for _ in range(repeats + 1):
        clock = Clock()
        for xc, yc in loader:
            x, y = xc.to(device), yc.to(device)  # the usual pattern: batches copied to the GPU
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        loss.item()  # waits for the GPU's queued work
        out.append(clock.lap())
    return out[1:]


def run_before(cfg: TrialConfig, repeats: int, device: str = "cpu") -> list[tuple[float, float]]:
    """The epoch of ``train_loop`` before issue 7a, verbatim but for the report."""
    d = load_splits(cfg.dataset).to(torch.device(device))
    torch.manual_seed(cfg.seed)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    model = build_model(cfg.model, d.n_features, d.n_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.base_lr)  # unfused, as before
    n, bs = d.x_train.shape[0], cfg.train.batch_size
    iters = math.ceil(n / bs)
    lr_schedule = build_lr_schedule(opt, cfg, iters)
    loss_fn = nn.CrossEntropyLoss()
    out = []
    for _ in range(repeats + 1):
        clock = Clock()
        model.train()
        perm = torch.randperm(n, generator=shuffle).to(device)
        total = torch.zeros((), device=device)
        for i in range(iters):
            idx = perm[i * bs : (i + 1) * bs]
            loss = loss_fn(model(d.x_train[idx]), d.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_schedule.step()
            total += loss.detach() * idx.numel()
        total.item()
        model.eval()
        evaluate(model, d.x_val, d.y_val)
        out.append(clock.lap())
    return out[1:]


def ablation(cfg: TrialConfig, repeats: int) -> list[tuple[str, float, float]]:
    """Median (wall, CPU) s of one epoch's training steps, each row adding one change."""
    d = load_splits(cfg.dataset)
    n, bs = d.x_train.shape[0], cfg.train.batch_size
    iters = math.ceil(n / bs)
    x, y = d.x_train, d.y_train

    def setup(fused: bool) -> tuple[nn.Module, torch.optim.Optimizer, Any, torch.Generator]:
        torch.manual_seed(0)
        model = build_model(cfg.model, d.n_features, d.n_classes)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.base_lr, fused=fused or None)
        return model, opt, build_lr_schedule(opt, cfg, iters), torch.Generator().manual_seed(0)

    def variant(
        fused: bool,
        gather: str,
        dot: bool,
        step_kind: str,
        cpp_wrapper: bool = True,
        gemm_rewrites: bool = True,
        lean: bool = True,
        ahead: bool = False,
    ) -> Callable[[], None]:
        model, opt, sched, g = setup(fused)
        loss_fn = nn.CrossEntropyLoss()

        def eager(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        step: Step = eager
        if step_kind == "in graph":  # train_loop's: the SGD update inside the compiled graph
            step = build_step(
                model, opt, x[:bs], y[:bs], compiled=True, cpp_wrapper=cpp_wrapper,
                gemm_rewrites=gemm_rewrites, lean=lean,
            )  # fmt: skip
        elif step_kind in ("inductor", "torch.compile"):  # gradients compiled, then opt.step()
            params = list(model.parameters())
            names = [k for k, _ in model.named_parameters()]
            compiled: Any
            if step_kind == "inductor":
                compiled = grad_fn(
                    model, x[:bs], y[:bs], cpp_wrapper=cpp_wrapper, gemm_rewrites=False, lean=False
                )
                assert compiled is not None
            else:

                def flat(*a: torch.Tensor) -> tuple[torch.Tensor, ...]:
                    def lf(p: tuple[torch.Tensor, ...]) -> torch.Tensor:
                        out = torch.func.functional_call(
                            model, dict(zip(names, p, strict=True)), a[-2]
                        )
                        return nn.functional.cross_entropy(out, a[-1])

                    grads, value = torch.func.grad_and_value(lf)(a[:-2])
                    return (value, *grads)

                compiled = torch.compile(flat, dynamic=False, fullgraph=True)
            weights = [p.detach() for p in params]

            def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
                if xb.shape[0] != bs:
                    return eager(xb, yb)
                loss, *grads = compiled(*weights, xb, yb)
                for p, gr in zip(params, grads, strict=True):
                    p.grad = gr
                opt.step()
                return loss

        def epoch() -> None:
            perm = torch.randperm(n, generator=g)
            if gather == "none":
                batches = [(x[i], y[i]) for i in perm.split(bs)]
            elif gather == "index":
                xs, ys = x[perm], y[perm]
                batches = [(xs[i * bs : (i + 1) * bs], ys[i * bs : (i + 1) * bs]) for i in
                           range(iters)]  # fmt: skip
            else:
                xs, ys = x.index_select(0, perm), y.index_select(0, perm)
                batches = list(zip(xs.split(bs), ys.split(bs), strict=True))
            if ahead:
                xbs, ybs = zip(*batches, strict=True)
                torch.stack(run_batches(step, sched, xbs, ybs)).sum().item()
                return
            losses, total = [], torch.zeros(())
            for xb, yb in batches:
                loss = step(xb, yb)
                sched.step()
                if dot:
                    losses.append(loss)
                else:
                    total += loss * xb.shape[0]
            (torch.stack(losses).sum() if dot else total).item()

        return epoch

    variants = [
        ("0. before: x[idx] per batch, unfused SGD, loss sum per step",
         variant(False, "none", False, "eager")),
        ("1. + one x[perm] gather per epoch, views", variant(False, "index", False, "eager")),
        ("2. + index_select and split", variant(False, "index_select", False, "eager")),
        ("3. + fused SGD", variant(True, "index_select", False, "eager")),
        ("4. + losses stacked once per epoch", variant(True, "index_select", True, "eager")),
        ("5. + compiled fwd+bwd (make_fx+Inductor), then opt.step()",
         variant(True, "index_select", True, "inductor", cpp_wrapper=False)),
        ("5'. compiled fwd+bwd via torch.compile instead",
         variant(True, "index_select", True, "torch.compile")),
        ("6. + SGD update inside the compiled graph",
         variant(True, "index_select", True, "in graph", cpp_wrapper=False, gemm_rewrites=False,
                 lean=False)),
        ("7. + Inductor's C++ wrapper",
         variant(True, "index_select", True, "in graph", gemm_rewrites=False, lean=False)),
        ("8. + thin and narrow GEMMs rewritten",
         variant(True, "index_select", True, "in graph", lean=False)),
        ("9. + pooled buffers, no per-call input checks",
         variant(True, "index_select", True, "in graph")),
        ("10. + the LR schedule stepped through the epoch before its batches (train_loop)",
         variant(True, "index_select", True, "in graph", ahead=True)),
    ]  # fmt: skip
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}
    for _, fn in variants:
        fn()  # warm-up (and compile)
    for _ in range(repeats):
        for name, fn in variants:
            clock = Clock()
            fn()
            times[name].append(clock.lap())
    return [
        (name, statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
        for name, t in times.items()
    ]


def alternate(
    rounds: int, a: Callable[[], None], b: Callable[[], None]
) -> tuple[float, float, float]:
    """``a`` and ``b`` alternated in this process, the order swapped each round, after one
    uncounted round that warms both up: the median CPU ms of each, and the median of the
    rounds' ratios a / b (on this noisy box only ratios taken side by side are read)."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds + 1):
        for is_a in (r % 2 == 0, r % 2 == 1):
            t = time.thread_time()
            (a if is_a else b)()
            if r:
                times[is_a].append(time.thread_time() - t)
    ratio = statistics.median(x / y for x, y in zip(times[True], times[False], strict=True))
    return statistics.median(times[True]) * 1e3, statistics.median(times[False]) * 1e3, ratio


def _full_batches(cfg: TrialConfig) -> tuple[Any, list[torch.Tensor], list[torch.Tensor]]:
    d = load_splits(cfg.dataset)
    bs = cfg.train.batch_size
    full = d.x_train.shape[0] // bs
    return d, list(d.x_train[: bs * full].split(bs)), list(d.y_train[: bs * full].split(bs))


def lean_ab(cfg: TrialConfig, rounds: int) -> tuple[float, float, float]:
    """The compiled step alone (an epoch's full batches a round, plain SGD in the graph), its
    graph built ``lean`` against without (``alternate``)."""
    d, xs, ys = _full_batches(cfg)
    loops = []
    for lean in (True, False):
        model = build_model(cfg.model, d.n_features, d.n_classes)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.base_lr)
        step = build_step(model, opt, xs[0], ys[0], compiled=True, lean=lean)

        def loop(step: Step = step) -> None:
            for xb, yb in zip(xs, ys, strict=True):
                step(xb, yb)

        loops.append(loop)
    return alternate(rounds, *loops)


def rates_ab(cfg: TrialConfig, rounds: int) -> tuple[float, float, float]:
    """The compiled step on an epoch's full batches with its LR schedule (``cfg``'s), the
    schedule stepped through the epoch before the batches (``run_batches``, as ``train_loop``
    does) against once after each batch (``alternate``)."""
    d, xs, ys = _full_batches(cfg)

    def setup() -> tuple[Step, Any]:
        model = build_model(cfg.model, d.n_features, d.n_classes)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.base_lr)
        schedule = build_lr_schedule(opt, cfg, len(xs))
        return build_step(model, opt, xs[0], ys[0], compiled=True), schedule

    step_a, schedule_a = setup()
    step_b, schedule_b = setup()

    def ahead() -> None:
        run_batches(step_a, schedule_a, xs, ys)

    def after_each() -> None:
        for xb, yb in zip(xs, ys, strict=True):
            step_b(xb, yb)
            schedule_b.step()

    return alternate(rounds, ahead, after_each)


def matmul_rate(size: int = 1024, repeats: int = 7, device: str = "cpu") -> float:
    """Float32 FLOP/s of a square torch.mm, best of ``repeats``: on the CPU single-thread (CPU
    time), on a GPU wall time around synchronized products."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    gpu = device != "cpu"
    clock = time.perf_counter if gpu else time.process_time
    a @ b
    best = math.inf
    for _ in range(repeats):
        if gpu:
            torch.cuda.synchronize()
        t = clock()
        for _ in range(5):
            a @ b
        if gpu:
            torch.cuda.synchronize()
        best = min(best, (clock() - t) / 5)
    return 2 * size**3 / best


def gpu_main(repeats: int, device: str) -> None:
    """(a) on a GPU: train_loop's epoch (the eager step; the compiled one is CPU-only), the old
    loop and the naive DataLoader loop, against the FLOP floor at the GPU's float32 mm rate."""
    cfg = trial_config(repeats + 1, device)
    d = load_splits(cfg.dataset)
    n, bs = d.x_train.shape[0], cfg.train.batch_size
    runs = [run_train_loop(cfg, "never") for _ in range(2)]  # the first pays CUDA's start-up
    rows = [
        ("train_loop (eager step, data on the GPU)", runs[1].median(0)),
        ("before 7a: train_loop's old loop", statistics.median(w for w, _ in
                                                               run_before(cfg, repeats, device))),
        ("naive DataLoader loop, batches copied to the GPU (no val pass)",
         statistics.median(w for w, _ in run_naive(cfg, repeats, device))),
    ]  # fmt: skip
    widths = [d.n_features, *cfg.model.hidden, d.n_classes]
    flops = 3 * 2 * n * sum(a * b for a, b in itertools.pairwise(widths))
    rate = matmul_rate(8192, device=device)
    print(
        f"cardio on {torch.cuda.get_device_name(device)}: n_train={n}, batch {bs} -> "
        f"{math.ceil(n / bs)} steps/epoch; torch {torch.__version__}; float32 mm "
        f"{rate / 1e12:.1f} TFLOP/s (8192³, TF32 {torch.backends.cuda.matmul.allow_tf32})"
    )
    print(f"\nmedians of {repeats} epochs after the first\n")
    print("| per epoch | wall ms | ÷ naive |")
    print("|---|---|---|")
    naive = rows[-1][1]
    for name, w in rows:
        print(f"| {name} | {w * 1e3:.1f} | {w / naive:.2f} |")
    print(f"| floor: matmul FLOPs / mm rate | {flops / rate * 1e3:.3f} | |")
    print(f"val_acc after {cfg.train.epochs} epochs: {runs[1].val_acc:.5f}")


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        clock = Clock()
        fn()
        w, c = clock.lap()
        walls.append(w)
        cpus.append(c)
    return statistics.median(walls), statistics.median(cpus)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=7, help="timed epochs per measurement")
    p.add_argument(
        "--fresh-cache", action="store_true", help="compile into an empty Inductor cache"
    )
    p.add_argument("--ablation", action="store_true", help="time the changes one at a time")
    p.add_argument("--device", default="cpu", help="cpu (default) or a CUDA device, e.g. cuda")
    p.add_argument(
        "--lean-ab", type=int, metavar="ROUNDS", default=0,
        help="only this: the compiled step's graph lean against not, ROUNDS alternations",
    )  # fmt: skip
    p.add_argument(
        "--rates-ab",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="only this: the LR schedule stepped ahead of an epoch's batches against after "
        "each, ROUNDS alternations",
    )
    args = p.parse_args()
    if args.device != "cpu":
        gpu_main(args.repeats, args.device)
        return
    if args.fresh_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    torch.set_num_threads(1)
    for rounds, fn, what, a, b in (
        (args.lean_ab, lean_ab, "compiled step", "lean", "not lean"),
        (args.rates_ab, rates_ab, "compiled step and LR schedule", "ahead", "after each batch"),
    ):
        if rounds:
            a_ms, b_ms, ratio = fn(trial_config(1), rounds)
            print(
                f"{what}, one epoch's full batches, medians of {rounds} alternated rounds "
                f"(CPU ms): {a} {a_ms:.2f}, {b} {b_ms:.2f}; median ratio of the rounds "
                f"{ratio:.3f}"
            )
    if args.lean_ab or args.rates_ab:
        return
    load0 = os.getloadavg()[0]
    cfg = trial_config(args.repeats + 1)

    clock = Clock()
    d = load_splits(cfg.dataset)
    load_s = clock.lap()
    # torch.optim imports torch._dynamo on the first optimizer of a process (before 7a too).
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    optim_import_s = clock.lap()
    n = d.x_train.shape[0]
    bs = cfg.train.batch_size
    iters = math.ceil(n / bs)

    eager = run_train_loop(cfg, "never")
    compiled = run_train_loop(cfg, "always")  # first compiled trial in this process: compiles
    again = run_train_loop(cfg, "always")  # a later trial: the compiled step is cached
    before = run_before(cfg, args.repeats)
    naive = run_naive(cfg, args.repeats)
    model = build_model(cfg.model, d.n_features, d.n_classes)
    val_eager = timed(lambda: evaluate(model, d.x_val, d.y_val), args.repeats)
    val_compiled = timed(build_eval(model, d.x_val, d.y_val, compiled=True), args.repeats)

    widths = [d.n_features, *cfg.model.hidden, d.n_classes]
    mac = sum(a * b for a, b in itertools.pairwise(widths))
    flops = 3 * 2 * n * mac
    rate = matmul_rate()
    floor_ms = flops / rate * 1e3

    def ms(x: float) -> str:
        return f"{x * 1e3:.1f}"

    naive_w = statistics.median(w for w, _ in naive)
    naive_c = statistics.median(c for _, c in naive)
    rows = [
        ("train_loop, compiled step", again.median(0), again.median(1)),
        ("train_loop, eager step", eager.median(0), eager.median(1)),
        (
            "before 7a: train_loop's old loop",
            statistics.median(w for w, _ in before),
            statistics.median(c for _, c in before),
        ),
        ("naive DataLoader loop (no val pass)", naive_w, naive_c),
    ]
    print(
        f"cardio: n_train={n}, batch {bs} -> {iters} steps/epoch, widths {widths}, "
        f"val rows {d.x_val.shape[0]}; torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}; {cpu_name()}, {os.cpu_count()} cores; load avg "
        f"{load0:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(
        f"floor: 3·2·n·Σ(in·out) = 3·2·{n}·{mac} = {flops / 1e6:.0f} MFLOP at "
        f"{rate / 1e9:.1f} GFLOP/s (1024³ mm, 1 thread) = {floor_ms:.1f} ms"
    )
    print(f"\nmedians of {args.repeats} epochs after the first\n")
    print("| per epoch | wall ms | CPU ms | ÷ naive (wall / CPU) | ÷ floor (CPU) |")
    print("|---|---|---|---|---|")
    for name, w, c in rows:
        print(
            f"| {name} | {ms(w)} | {ms(c)} | {w / naive_w:.2f} / {c / naive_c:.2f} | "
            f"{c * 1e3 / floor_ms:.1f} |"
        )
    print(f"| floor: matmul FLOPs / mm rate | | {floor_ms:.1f} | | 1.0 |")
    rows_val = d.x_val.shape[0]
    print(f"| (inside train_loop's epoch: the val pass, {rows_val} rows, compiled) | "
          f"{ms(val_compiled[0])} | {ms(val_compiled[1])} | | |")  # fmt: skip
    print(f"| (the same val pass, eager: eager trials and the old loop) | "
          f"{ms(val_eager[0])} | {ms(val_eager[1])} | | |")  # fmt: skip
    print("\n| per trial | wall ms | CPU ms |")
    print("|---|---|---|")
    print(f"| dataset load, first trial of a process | {ms(load_s[0])} | {ms(load_s[1])} |")
    print(
        f"| first torch.optim optimizer of a process (imports torch._dynamo) | "
        f"{ms(optim_import_s[0])} | {ms(optim_import_s[1])} |"
    )
    for name, r in (
        ("eager", eager),
        ("compiled, first trial of a process (compiles)", compiled),
        ("compiled, later trial (cached)", again),
    ):
        print(f"| to first epoch: {name} | {ms(r.to_first[0])} | {ms(r.to_first[1])} |")
    for name, r in (("eager", eager), ("compiled", again)):
        print(f"| first epoch alone: {name} | {ms(r.first_epoch)} | |")
    print(
        f"\ncompile cost (first compiled trial minus a later one, to first epoch): "
        f"{compiled.to_first[0] - again.to_first[0]:.1f} s wall (Inductor compiles in "
        "subprocesses, so the CPU column misses most of it)"
    )
    if args.ablation:
        print(f"\nablation: one epoch's {iters} training steps, medians of {args.repeats}\n")
        print("| change (cumulative) | wall ms | CPU ms |")
        print("|---|---|---|")
        for name, w, c in ablation(cfg, args.repeats):
            print(f"| {name} | {ms(w)} | {ms(c)} |")
    print(
        f"val_acc after {cfg.train.epochs} epochs: eager {eager.val_acc:.5f}, "
        f"compiled {compiled.val_acc:.5f}, again {again.val_acc:.5f}"
    )


if __name__ == "__main__":
    main()
