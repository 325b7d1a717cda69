"""The LR range test: the rate schedule, the suggestion rules on curves with known answers, a
real run on digits, the derived spec, the MLflow run and the CLI."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.optim.lr_scheduler import LinearLR

import sweeps.lr_find as lf
from search_spaces import FloatRange, define_by_run, in_bounds
from sweeps.lr_find import (
    RangeTest,
    RangeTestError,
    RangeTestSettings,
    Suggestion,
    apply_range_test,
    build_range_schedule,
    log_range_test,
    range_test,
    smooth,
    suggest,
)
from sweeps.spec import load_spec
from sweeps.tracking import SweepTracker

REPO = Path(__file__).resolve().parents[2]

# -- the schedule ---------------------------------------------------------------------------------


def _schedule_lrs(min_lr: float, max_lr: float, steps: int, mode: lf.Mode) -> np.ndarray:
    """The rate of each of ``steps`` batches, stepped as range_test steps it."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    sched = build_range_schedule(opt, min_lr, max_lr, steps, mode)
    out = []
    for i in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients: a no-op that keeps torch's step-order check quiet
        if i < steps - 1:
            sched.step()
    return np.asarray(out)


@pytest.mark.parametrize("mode", ["exp", "linear"])
@pytest.mark.parametrize(("min_lr", "max_lr", "steps"), [(1e-5, 10.0, 200), (1e-3, 0.3, 10)])
def test_schedule_runs_exactly_from_min_to_max_and_rises(
    mode: lf.Mode, min_lr: float, max_lr: float, steps: int
) -> None:
    lrs = _schedule_lrs(min_lr, max_lr, steps, mode)
    assert lrs.size == steps
    assert lrs[0] == pytest.approx(min_lr, rel=1e-12)
    assert lrs[-1] == pytest.approx(max_lr, rel=1e-9)
    assert np.all(np.diff(lrs) > 0)
    if mode == "exp":  # a constant ratio: evenly spaced in log
        ratios = lrs[1:] / lrs[:-1]
        np.testing.assert_allclose(ratios, (max_lr / min_lr) ** (1 / (steps - 1)), rtol=1e-9)
    else:  # a constant difference
        np.testing.assert_allclose(np.diff(lrs), (max_lr - min_lr) / (steps - 1), rtol=1e-6)


def test_torch_linear_lr_rejects_factors_above_one() -> None:
    # Why the linear schedule starts the optimizer at max_lr and scales up from min/max.
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        LinearLR(opt, start_factor=1.0, end_factor=1e6, total_iters=9)


def test_smooth_is_the_bias_corrected_ema() -> None:
    x = [4.0, 2.0, 1.0]
    avg = [2.0, 2.0, 1.5]  # 0.5 avg + 0.5 x from 0
    want = [avg[0] / 0.5, avg[1] / 0.75, avg[2] / 0.875]  # / (1 - 0.5^(t+1))
    np.testing.assert_allclose(smooth(x, 0.5), want)
    np.testing.assert_allclose(smooth(x, 0.0), x)


# -- suggest on curves with known answers -------------------------------------------------------

XS, W, XR = -2.5, 0.3, -0.5  # steepest fall at 10^XS; rise from 10^XR
GRID = np.linspace(-5.0, 1.0, 200)  # log10 of 1e-5 .. 10, exp spacing
STEP = GRID[1] - GRID[0]


def _curve(x: np.ndarray) -> np.ndarray:
    """2.5 falling to 0.5 as a tanh in log10(lr), flat, then rising quadratically after XR."""
    return 1.5 - np.tanh((x - XS) / W) + np.where(x > XR, 3.0 * (x - XR) ** 2, 0.0)


# Analytic answers: tanh falls fastest at its centre, where the rise is still zero; the loss has
# done 95 % of its 2.0 fall where tanh((x - XS) / W) = 0.9; the minimum is where the rise starts.
STEEPEST_X = XS
MAX_X = XS + W * math.atanh(0.9)  # -2.058
MIN_X = XR


def test_suggest_known_answer_without_noise() -> None:
    s = suggest(10**GRID, _curve(GRID))
    assert abs(math.log10(s.steepest_lr) - STEEPEST_X) <= STEP / 2 + 1e-9
    # The first grid rate at which the loss is within 5 % of its fall from the minimum.
    assert MAX_X <= math.log10(s.max_lr) <= MAX_X + STEP + 1e-9
    assert abs(math.log10(s.min_loss_lr) - MIN_X) <= STEP
    assert s.base_lr_low == pytest.approx(s.max_lr / 4)
    assert s.base_lr_high == pytest.approx(s.max_lr / 3)


@pytest.mark.parametrize("seed", range(5))
def test_suggest_known_answer_with_noise(seed: int) -> None:
    noise = np.random.default_rng(seed).normal(0.0, 0.01, GRID.size)
    s = suggest(10**GRID, _curve(GRID) + noise)
    assert abs(math.log10(s.steepest_lr) - STEEPEST_X) <= 2 * STEP
    assert abs(math.log10(s.max_lr) - MAX_X) <= 2 * STEP
    # The minimum wanders over the flat bottom with noise; max_lr (a level crossing) did not.
    assert -1.9 <= math.log10(s.min_loss_lr) <= MIN_X + STEP


def test_suggest_measures_the_slope_in_log_lr_for_linear_spacing() -> None:
    lin = np.linspace(1e-4, 0.02, 200)
    s = suggest(lin, 1.5 - np.tanh((np.log10(lin) - XS) / W))
    # Steepest in d loss / d log(lr) is the tanh centre; in d loss / d lr it would be far lower.
    assert abs(math.log10(s.steepest_lr) - XS) < 0.02


def test_suggest_uses_only_the_finite_prefix() -> None:
    loss = _curve(GRID)
    cut = 170
    blown = loss.copy()
    blown[cut] = np.nan
    blown[cut + 1 :] = 1e9
    assert suggest(10**GRID, blown) == suggest(10 ** GRID[:cut], loss[:cut])


@pytest.mark.parametrize(
    ("lrs", "losses", "needle"),
    [
        (10 ** GRID[:8], _curve(GRID[:8]), "too short"),
        (10**GRID, 1.0 + 0.1 * GRID, "never falls"),  # rising all along
        (10**GRID, 1.0 + np.random.default_rng(0).normal(0, 0.005, 200), "never falls"),
        # Lowest one point after the skipped start (10 points): no falling side to read.
        (10**GRID, 1.0 + 0.1 * np.abs(np.arange(200) - 11), "points on the falling side"),
        (10**GRID, _curve(GRID)[:-1], "len(lrs) == len(smoothed_losses)"),
        (10 ** GRID[::-1], _curve(GRID), "increase strictly"),
    ],
)
def test_suggest_rejects_unreadable_curves(lrs: Any, losses: Any, needle: str) -> None:
    with pytest.raises(RangeTestError) as e:
        suggest(lrs, losses)
    assert needle in str(e.value)
    assert str(e.value).startswith(f"{e.value.field}: ")


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "needle"),
    [
        ({"min_lr": 1.0, "max_lr": 0.1}, "max_lr", "(min_lr=1.0, max_lr=0.1)"),
        ({"min_lr": 0.0}, "min_lr", "`0 < min_lr`"),
        ({"min_lr": math.nan}, "min_lr", "min_lr=nan"),
        ({"max_lr": math.inf}, "max_lr", "max_lr=inf"),
        ({"steps": 9}, "steps", "`10 <= steps <= 100000` must hold"),
        ({"steps": 10**11}, "steps", "steps=100000000000"),
        ({"mode": "cosine"}, "mode", "'cosine'"),
        ({"smoothing": 1.0}, "smoothing", "`0 <= smoothing < 1`"),
        ({"stop_factor": 1.0}, "stop_factor", "stop_factor=1.0"),
        ({"val_every": -1}, "val_every", "val_every=-1"),
    ],
)
def test_settings_errors_name_field_value_and_rule(
    kwargs: dict[str, Any], field: str, needle: str
) -> None:
    with pytest.raises(RangeTestError) as e:
        RangeTestSettings(**kwargs)
    assert e.value.field == field
    assert needle in str(e.value)
    assert "but got (" in str(e.value)


def test_range_test_validates_before_reading_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> None:
        raise AssertionError("data read before the settings were checked")

    monkeypatch.setattr(lf, "load_dataset", boom)
    with pytest.raises(RangeTestError, match=r"^steps: "):
        range_test(load_spec("digits_lr"), RangeTestSettings(steps=3))


# -- a real run on digits -------------------------------------------------------------------------


def test_progress_comes_by_the_clock_as_well_as_by_the_quarter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[lf.Progress] = []
    range_test(
        load_spec("digits_lr"),
        RangeTestSettings(min_lr=1e-3, max_lr=3.0, steps=40),
        progress=seen.append,
    )
    assert [p.step for p in seen] == [10, 20, 30, 40]
    seen.clear()
    monkeypatch.setattr(lf, "PROGRESS_SECONDS", 0.0)
    range_test(
        load_spec("digits_lr"),
        RangeTestSettings(min_lr=1e-3, max_lr=3.0, steps=40),
        progress=seen.append,
    )
    assert [p.step for p in seen] == list(range(1, 41))


@pytest.fixture(scope="module")
def digits_test() -> RangeTest:
    return range_test(load_spec("digits_lr"), RangeTestSettings(val_every=20))


@pytest.mark.parametrize(
    ("smoothed", "falling"),
    [
        ([3.0, 2.0, 1.0, 0.9], True),  # still going down at the last rate
        ([3.0, 1.0, 0.62, 0.63], True),  # flat at its minimum
        ([3.0, 1.0, 0.629, 1.11], False),  # turned up: cardio's curve that said "try larger"
        ([3.0, 1.0, 0.6, float("nan")], False),
    ],
)
def test_a_larger_max_lr_is_advised_only_while_the_loss_has_not_turned_up(
    digits_test: RangeTest, smoothed: list[float], falling: bool
) -> None:
    r = dataclasses.replace(digits_test, smoothed=np.array(smoothed))
    assert lf.still_falling(r) is falling


def test_digits_with_adam_stops_once_the_loss_blows_up(digits_test: RangeTest) -> None:
    r = digits_test
    cfg = r.settings
    assert r.stopped_early
    assert 20 < r.steps_run < cfg.steps
    sm = r.smoothed
    # It stopped at the first batch whose smoothed loss exceeded 4x the best before it.
    assert sm[-1] > cfg.stop_factor * sm[:-1].min()
    assert all(sm[i] <= cfg.stop_factor * sm[:i].min() for i in range(1, r.steps_run - 1))
    assert sm[:-1].min() < 0.5 * sm[0]  # it learned before it blew up


def test_digits_records_rates_losses_and_val_acc(digits_test: RangeTest) -> None:
    r = digits_test
    n = r.steps_run
    assert r.lrs.shape == r.losses.shape == r.smoothed.shape == (n,)
    gamma = (r.settings.max_lr / r.settings.min_lr) ** (1 / (r.settings.steps - 1))
    np.testing.assert_allclose(r.lrs, r.settings.min_lr * gamma ** np.arange(n), rtol=1e-9)
    np.testing.assert_allclose(r.smoothed, smooth(r.losses, r.settings.smoothing))
    assert r.val_steps.tolist() == list(range(19, n, 20))
    assert r.val_acc.shape == r.val_steps.shape
    assert np.all((r.val_acc >= 0) & (r.val_acc <= 1))
    assert r.val_acc.max() > 0.8  # digits is learnable on the way up
    assert r.seconds > 0


def test_digits_suggestion_is_sane(digits_test: RangeTest) -> None:
    s = digits_test.suggestion
    assert 1e-3 <= s.max_lr <= 1.0
    assert s.steepest_lr <= s.max_lr <= s.min_loss_lr
    assert s.base_lr_low == pytest.approx(s.max_lr / 4)
    assert s.base_lr_high == pytest.approx(s.max_lr / 3)
    assert s == suggest(digits_test.lrs, digits_test.smoothed)


def test_range_test_is_seeded_and_leaves_global_state(digits_test: RangeTest) -> None:
    spec = load_spec("digits_lr")
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        rng = torch.get_rng_state()
        again = range_test(spec, RangeTestSettings(val_every=20))
        assert torch.equal(torch.get_rng_state(), rng)
        assert torch.get_num_threads() == threads + 1
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(again.losses, digits_test.losses)
    other = range_test(spec, RangeTestSettings(seed=1, steps=20))
    assert not np.array_equal(other.losses, digits_test.losses[:20])


def test_range_test_uses_the_sweeps_optimizer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.optim.Optimizer] = []
    real = lf.build_optimizer

    def spy(params: Any, cfg: Any, lr: float) -> torch.optim.Optimizer:
        seen.append(real(params, cfg, lr))
        return seen[-1]

    monkeypatch.setattr(lf, "build_optimizer", spy)
    spec = load_spec(
        "digits_lr", ["optimizer.name=sgd", "optimizer.momentum=0.9", "train.batch_size=32"]
    )
    r = range_test(spec, RangeTestSettings(min_lr=1e-3, max_lr=3.0, steps=40))
    (opt,) = seen
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9
    assert r.lrs[0] == pytest.approx(1e-3)


def test_linear_mode_on_digits_rises_linearly() -> None:
    r = range_test(
        load_spec("digits_lr"), RangeTestSettings(min_lr=1e-3, max_lr=0.3, steps=60, mode="linear")
    )
    n = r.steps_run
    np.testing.assert_allclose(r.lrs, 1e-3 + np.arange(n) * (0.3 - 1e-3) / 59, rtol=1e-6)


# -- the derived spec ---------------------------------------------------------------------------

SUGGESTION = Suggestion(
    steepest_lr=0.01, max_lr=0.03, base_lr_low=0.0075, base_lr_high=0.01, min_loss_lr=0.05
)


def test_apply_range_test_derives_the_ranges_and_keeps_the_rest() -> None:
    spec = load_spec("digits_lr", ["search.bounds=range_test"])
    new = apply_range_test(spec, SUGGESTION)
    assert new.search.base_lr == FloatRange(low=0.001, high=0.03, log=True)
    assert new.search.max_lr == FloatRange(low=0.01, high=0.09, log=True)
    assert new.search.bounds == "range_test"
    rest = {"base_lr", "max_lr"}
    assert new.search.model_dump(exclude=rest) == spec.search.model_dump(exclude=rest)
    assert new.model_dump(exclude={"search"}) == spec.model_dump(exclude={"search"})
    assert spec.search.base_lr == FloatRange(low=1e-4, high=3.0, log=True)  # untouched
    assert type(new).model_validate(new.model_dump()) == new


def test_apply_range_test_uses_the_steepest_point_when_it_is_lower() -> None:
    low_steep = dataclasses.replace(SUGGESTION, steepest_lr=2e-4)
    new = apply_range_test(load_spec("digits_lr"), low_steep)
    assert new.search.base_lr.low == 2e-4


def test_derived_spec_samples_inside_its_bounds_for_every_family() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = apply_range_test(load_spec("cardio_clr"), SUGGESTION)
    for family in spec.families:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        fn = define_by_run(spec.search, family)
        for _ in range(20):
            trial = study.ask()
            fn(trial)
            config = {"family": family, **trial.params}
            assert in_bounds(spec.search, config) == [], (family, config)
            study.tell(trial, 0.0)


def test_apply_range_test_keeps_a_missing_max_lr() -> None:
    spec = load_spec("digits_lr", ["search.families=[fixed]", "search.max_lr=null"])
    new = apply_range_test(spec, SUGGESTION)
    assert new.search.max_lr is None
    assert new.search.base_lr.high == 0.03


def test_apply_range_test_rejects_a_broken_suggestion() -> None:
    with pytest.raises(RangeTestError, match=r"^suggestion\.max_lr: .*must hold, but got nan"):
        apply_range_test(load_spec("digits_lr"), dataclasses.replace(SUGGESTION, max_lr=math.nan))


# -- MLflow -----------------------------------------------------------------------------------


def _synthetic(points: int) -> RangeTest:
    x = np.linspace(-5.0, 1.0, points)
    loss = _curve(x)
    loss[-1] = np.inf  # the batch that blew up
    return RangeTest(
        lrs=10**x,
        losses=loss,
        smoothed=loss,
        val_steps=np.array([9, 19]),
        val_acc=np.array([0.2, 0.6]),
        stopped_early=True,
        suggestion=suggest(10**x, loss),
        settings=RangeTestSettings(steps=points),
        seconds=1.5,
    )


@pytest.mark.slow
def test_log_range_test_nested_run_with_metrics_and_plot(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    digits_test: RangeTest,
    mlflow_store: Callable[[Path], str],
) -> None:
    monkeypatch.chdir(tmp_path)  # the sqlite store's artifacts land in ./mlruns
    uri = mlflow_store(tmp_path / "mlflow.db")
    spec = load_spec("digits_lr")
    tracker = SweepTracker(uri, spec)
    parent = tracker.start()
    run_id = log_range_test(tracker, digits_test, spec, parent_run_id=parent)

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == tracker.experiment_id
    tags = run.data.tags
    assert tags["sweeps.role"] == "lr_find"
    assert tags["mlflow.parentRunId"] == parent
    assert tags["sweeps.lr_find.stopped_early"] == "true"
    params = run.data.params
    for key in ("min_lr", "max_lr", "steps", "mode", "smoothing", "stop_factor"):
        assert params[key] == str(getattr(digits_test.settings, key))
    n = digits_test.steps_run
    for key, values in [
        ("lr_find/lr", digits_test.lrs),
        ("lr_find/loss", digits_test.losses),
        ("lr_find/smoothed_loss", digits_test.smoothed),
    ]:
        hist = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in hist] == list(range(n)), key
        np.testing.assert_allclose([m.value for m in hist], values, rtol=1e-12)
    acc = client.get_metric_history(run_id, "lr_find/val_acc")
    assert sorted(m.step for m in acc) == digits_test.val_steps.tolist()
    s = digits_test.suggestion
    assert run.data.metrics["suggested_max_lr"] == pytest.approx(s.max_lr)
    assert run.data.metrics["suggested_steepest_lr"] == pytest.approx(s.steepest_lr)
    assert run.data.metrics["suggested_base_lr_low"] == pytest.approx(s.base_lr_low)
    assert run.data.metrics["suggested_base_lr_high"] == pytest.approx(s.base_lr_high)
    assert {a.path for a in client.list_artifacts(run_id)} == {"lr_find.png", "spec.yaml"}
    png = Path(client.download_artifacts(run_id, "lr_find.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a drawn plot, not an empty canvas


@pytest.mark.slow
def test_log_range_test_standalone_batches_at_most_1000_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: Callable[[Path], str]
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    sizes: list[int] = []
    real = client.log_batch

    def spy(run_id: str, metrics: Any = (), **kw: Any) -> None:
        if metrics:
            sizes.append(len(metrics))
        real(run_id, metrics=metrics, **kw)

    monkeypatch.setattr(client, "log_batch", spy)
    # 400 rates, 399 finite losses and smoothed losses (the last is inf), 2 val_acc: 1200.
    result = _synthetic(400)
    spec = load_spec("digits_lr")
    run_id = log_range_test(client, result, spec, parent_run_id=None)
    assert max(sizes) <= 1000
    assert sizes[:-1] == [1000, 200]  # the last batch holds the suggestion metrics
    assert len(sizes) == 3
    run = client.get_run(run_id)
    assert "mlflow.parentRunId" not in run.data.tags
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == spec.tracking.experiment
    assert len(client.get_metric_history(run_id, "lr_find/loss")) == 399  # inf skipped


# -- the plot -----------------------------------------------------------------------------------


def test_plot_draws_more_with_validation_accuracy(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    r = _synthetic(200)
    bare = dataclasses.replace(r, val_steps=np.array([], dtype=int), val_acc=np.array([]))
    a = mpimg.imread(lf.plot_range_test(r, tmp_path / "a" / "with.png"))
    b = mpimg.imread(lf.plot_range_test(bare, tmp_path / "without.png"))
    assert a.shape == b.shape == (550, 880, 4)
    purple = np.array(matplotlib_color("tab:purple"))
    near = lambda img: (np.abs(img[..., :3] - purple).sum(axis=-1) < 0.05).sum()  # noqa: E731
    assert near(a) > 20
    assert near(b) == 0


def matplotlib_color(name: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(name)


# -- CLI ----------------------------------------------------------------------------------------


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "sweeps.lr_find", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_cli_tiny_real_run_logs_and_prints_the_suggestion(
    tmp_path: Path, mlflow_store: Callable[[Path], str]
) -> None:
    uri = mlflow_store(tmp_path / "mlflow.db")
    proc = _cli(["digits_lr", "--steps", "30", "--tracking-uri", uri], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max_lr" in proc.stdout and "base_lr" in proc.stdout
    assert "lr_find: batch" in proc.stderr  # progress
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("mlflow run ")]
    run_id = line.split()[2]
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["sweeps.role"] == "lr_find"
    assert run.data.params["steps"] == "30"
    assert f"{run.data.metrics['suggested_max_lr']:.4g}" in proc.stdout


@pytest.mark.slow
def test_cli_bad_numbers_are_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = _cli(["digits_lr", "--min-lr", "1", "--max-lr", "0.1"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --max-lr: `min_lr < max_lr` (finite) must hold, but got (min_lr=1.0, max_lr=0.1)"
    ]
    assert proc.stdout == ""
    assert not (tmp_path / "mlflow.db").exists()  # nothing was started


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["digits_lr", "--steps", "5"], "error: --steps: `10 <= steps <= 100000` must hold"),
        (["digits_lr", "--steps", "ten"], "error: argument --steps: invalid int value: 'ten'"),
        (["digits_lr", "--mode", "cos"], "error: argument --mode: invalid choice"),
        (["digits_lr", "--seed", str(2**70)], "error: --seed: `0 <= seed <= 4294967295` must"),
        (["digits_lr", "--seed", "-1"], "error: --seed: `0 <= seed <= 4294967295` must"),
        (["nosuchsweep"], "error: "),
        (["digits_lr", "--set", "train.batch_size=0"], "error: train.batch_size: "),
        (
            ["digits_lr", "--set", "trainable=os:getcwd"],
            "error: trainable: the range test trains the spec's model with train_loop's optimizer",
        ),
    ],
)
def test_cli_user_errors_in_process(
    args: list[str], start: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    try:
        code = lf.main([*args, "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}"])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(start), err
    assert "Traceback" not in err


def test_a_sqlite_store_in_a_missing_folder_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'nope' / 'x.db'}"
    assert lf.main(["digits_lr", "--tracking-uri", uri]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()  # MLflow made the folder


def test_a_range_test_that_fails_in_a_sweep_says_what_the_spec_can_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: Callable[[Path], str]
) -> None:
    from rich.console import Console

    from sweeps.errors import SweepsError
    from sweeps.sweep import derive_bounds

    monkeypatch.chdir(tmp_path)
    # A weight decay this strong holds the weights at 0: the loss never falls.
    spec = load_spec("digits_lr", ["search.bounds=range_test", "optimizer.weight_decay=1000"])
    tracker = SweepTracker(mlflow_store(tmp_path / "mlflow.db"), spec)
    parent = tracker.start()
    with pytest.raises(SweepsError) as info:
        derive_bounds(spec, tracker, Console(quiet=True))
    msg = str(info.value)
    assert msg.startswith("search.bounds: the LR range test must suggest the rate ranges, but ")
    assert msg.endswith(
        "see the curve with `python -m sweeps.lr_find digits_lr` (its --min-lr, --max-lr and "
        "--steps), or set search.bounds=spec with your own search.base_lr and search.max_lr"
    )
    assert tracker.outbox.flush()
    assert MlflowClient(tracker.uri).get_run(parent).data.tags["sweeps.error"] == msg
