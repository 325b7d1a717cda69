"""sweeps.plots: every function writes a real PNG, also from awkward data, without warnings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgb

# A module import keeps the plot functions out of the test namespace.
import sweeps.plots as plots
from sweeps.plots import TrialPoint

# Awkward data must not make numpy or matplotlib warn (e.g. "Mean of empty slice").
pytestmark = pytest.mark.filterwarnings("error")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAN = float("nan")


def _read_png(path: Path, size_in: tuple[float, float]) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000  # axes, labels and title at least
    img = mpimg.imread(path)
    w, h = size_in
    assert img.shape == (round(h * plots.DPI), round(w * plots.DPI), 4)
    return img


def _has_color(img: np.ndarray, color: str, tol: int = 6) -> bool:
    rgb = (img[..., :3] * 255).round().astype(int)
    target = np.array([round(c * 255) for c in to_rgb(color)])
    return bool((np.abs(rgb - target).max(axis=-1) <= tol).any())


def _ink(img: np.ndarray) -> int:
    """Pixels that are not white: a rough measure of how much was drawn."""
    return int((img[..., :3] < 0.9).any(axis=-1).sum())


def _strip_size(n_families: int) -> tuple[float, float]:
    return (max(6.0, 1.3 * n_families + 2.0), 5.0)


# --- lr_curves -----------------------------------------------------------------------------------


def test_lr_curves_writes_a_png_with_each_family_colour(tmp_path: Path) -> None:
    steps = np.arange(200)
    curves = {
        "fixed": [0.02] * 200,
        "triangular": list(0.001 + 0.05 * np.abs(np.sin(steps / 40))),
    }
    out = plots.lr_curves(curves, iters_per_epoch=20, path=tmp_path / "sub" / "lr.png")
    assert out == tmp_path / "sub" / "lr.png"  # parent folders are created
    img = _read_png(out, (8, 5))
    assert _has_color(img, "tab:blue")  # triangular
    assert not _has_color(img, "tab:green")  # no triangular2 given


def test_lr_curves_masks_nan_and_non_positive_rates(tmp_path: Path) -> None:
    curves = {"one_cycle": [0.0, 0.01, NAN, 0.05, -1.0, 0.02], "sgdr": [NAN, 0.0]}
    img = _read_png(plots.lr_curves(curves, 2, tmp_path / "lr.png"), (8, 5))
    assert _has_color(img, "tab:brown")
    assert not _has_color(img, "tab:cyan")  # nothing plottable for sgdr


def test_lr_curves_empty_and_bad_iters(tmp_path: Path) -> None:
    empty = _read_png(plots.lr_curves({}, 10, tmp_path / "empty.png"), (8, 5))
    full = _read_png(plots.lr_curves({"sgdr": [0.1] * 50}, 10, tmp_path / "full.png"), (8, 5))
    assert _has_color(full, "tab:cyan") and not _has_color(empty, "tab:cyan")
    with pytest.raises(ValueError, match=r"iters_per_epoch >= 1.*got 0"):
        plots.lr_curves({"fixed": [0.1]}, 0, tmp_path / "bad.png")


# --- val_acc_bands -------------------------------------------------------------------------------


def test_band_stats_over_ragged_seeds_by_hand() -> None:
    m = plots._stack([[0.5, 0.6, 0.7], [0.7, 0.8], [NAN, 1.0]])
    assert m.shape == (3, 3)
    mean, lo, hi = plots._band_stats(m, "std")
    np.testing.assert_allclose(mean, [0.6, 0.8, 0.7])
    # epoch 1: std of [0.5, 0.7]; epoch 2: std of [0.6, 0.8, 1.0]; epoch 3: one seed, no band
    std = np.array([np.std([0.5, 0.7], ddof=1), np.std([0.6, 0.8, 1.0], ddof=1), 0.0])
    np.testing.assert_allclose(lo, mean - std)
    np.testing.assert_allclose(hi, mean + std)
    mean, lo, hi = plots._band_stats(m, "minmax")
    np.testing.assert_allclose(lo, [0.5, 0.6, 0.7])
    np.testing.assert_allclose(hi, [0.7, 1.0, 0.7])


def test_band_stats_all_nan_epoch_is_nan() -> None:
    mean, lo, hi = plots._band_stats(plots._stack([[NAN, 0.5], [NAN]]), "std")
    assert np.isnan(mean[0]) and np.isnan(lo[0]) and np.isnan(hi[0])
    assert (mean[1], lo[1], hi[1]) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("band", ["std", "minmax"])
def test_val_acc_bands_ragged_single_seed_nan_and_empty_family(tmp_path: Path, band: str) -> None:
    curves: dict[str, Sequence[Sequence[float]]] = {
        "fixed": [[0.6, 0.7, 0.72], [0.62, 0.69]],  # seeds of different lengths
        "triangular": [[0.61, NAN, 0.73]],  # one seed, with a NaN epoch
        "exp_range": [],  # no seeds at all
        "sgdr": [[], [NAN, NAN]],  # seeds without a value
    }
    img = _read_png(plots.val_acc_bands(curves, tmp_path / "b.png", band=band), (8, 5))
    assert _has_color(img, "tab:blue")  # fixed is dark grey, which antialiased text also makes
    assert not _has_color(img, "tab:purple") and not _has_color(img, "tab:cyan")


def test_val_acc_bands_draws_more_with_data_than_without(tmp_path: Path) -> None:
    empty = _read_png(plots.val_acc_bands({}, tmp_path / "e.png"), (8, 5))
    seeds = [[0.5 + 0.02 * i + 0.01 * s for i in range(10)] for s in range(3)]
    full = _read_png(plots.val_acc_bands({"triangular2": seeds}, tmp_path / "f.png"), (8, 5))
    assert _ink(full) > _ink(empty)
    assert _has_color(full, "tab:green")


def test_val_acc_bands_rejects_unknown_band(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'std' or 'minmax', but got 'iqr'"):
        plots.val_acc_bands({}, tmp_path / "x.png", band="iqr")


# --- lr_vs_val_acc -------------------------------------------------------------------------------


def _points() -> list[TrialPoint]:
    return [
        TrialPoint("fixed", 1e-3, 0.71, "completed"),
        TrialPoint("fixed", 1e-2, 0.73, "stopped"),
        TrialPoint("triangular", 3e-2, 0.72, "completed"),
        TrialPoint("triangular", 2.0, 0.0, "diverged"),
        TrialPoint("one_cycle", 1.5, 0.5, "collapsed"),
        TrialPoint("sgdr", 0.3, NAN, "failed"),  # no val_acc: not drawn, counted in a note
        TrialPoint("sgdr", 0.0, 0.6, "completed"),  # lr 0 cannot sit on a log axis
    ]


def test_lr_vs_val_acc_marks_diverged_red_and_collapsed_orange(tmp_path: Path) -> None:
    img = _read_png(plots.lr_vs_val_acc(_points(), tmp_path / "s.png", chance=0.5), (9, 5.5))
    assert _has_color(img, "red")
    assert _has_color(img, "darkorange")
    assert _has_color(img, "tab:blue")  # triangular's completed trial


def test_lr_vs_val_acc_without_failures_has_no_red_or_orange(tmp_path: Path) -> None:
    ok = [p for p in _points() if p.status in ("completed", "stopped")]
    img = _read_png(plots.lr_vs_val_acc(ok, tmp_path / "s.png"), (9, 5.5))
    assert not _has_color(img, "red", tol=30)
    assert not _has_color(img, "darkorange", tol=30)


def test_lr_vs_val_acc_empty_and_all_unplottable(tmp_path: Path) -> None:
    _read_png(plots.lr_vs_val_acc([], tmp_path / "e.png", chance=0.5), (9, 5.5))
    bad = [TrialPoint("fixed", 0.1, NAN, "failed"), TrialPoint("fixed", -1.0, 0.7, "completed")]
    _read_png(plots.lr_vs_val_acc(bad, tmp_path / "n.png"), (9, 5.5))


def test_trial_point_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match=r"`status` must be one of completed, .*got 'pruned'"):
        TrialPoint("fixed", 0.1, 0.7, "pruned")


# --- accuracy_strip ------------------------------------------------------------------------------


def test_accuracy_strip_is_deterministic(tmp_path: Path) -> None:
    values = {
        "fixed": [0.724, 0.722, 0.727, 0.725],
        "triangular2": [0.731, 0.733, 0.729, NAN],
        "exp_range": [0.716],  # a single seed
        "sgdr": [],  # an empty family
    }
    a = plots.accuracy_strip(values, tmp_path / "a.png", reference="fixed")
    b = plots.accuracy_strip(values, tmp_path / "b.png", reference="fixed")
    img = _read_png(a, _strip_size(4))
    assert np.array_equal(img, mpimg.imread(b))  # the jitter is seeded
    assert _has_color(img, "tab:green") and _has_color(img, "tab:purple")
    assert not _has_color(img, "tab:cyan")


def test_accuracy_strip_width_grows_and_empty_input(tmp_path: Path) -> None:
    many = {f"f{i}": [0.7 + 0.001 * i] * 3 for i in range(7)}
    _read_png(plots.accuracy_strip(many, tmp_path / "m.png"), _strip_size(7))
    _read_png(plots.accuracy_strip({}, tmp_path / "e.png"), _strip_size(0))
    _read_png(plots.accuracy_strip({"fixed": [NAN]}, tmp_path / "n.png", "fixed"), _strip_size(1))


# --- epochs_used ---------------------------------------------------------------------------------


def test_epochs_used_writes_a_png(tmp_path: Path) -> None:
    epochs = {"triangular": [1, 1, 3, 9, 30, 30], "one_cycle": [1, 3, 3, 30], "sgdr": []}
    img = _read_png(plots.epochs_used(epochs, 30, tmp_path / "e.png"), _strip_size(3))
    assert _has_color(img, "tab:blue") and _has_color(img, "tab:brown")
    assert not _has_color(img, "tab:cyan")


def test_epochs_used_empty_and_bad_max(tmp_path: Path) -> None:
    _read_png(plots.epochs_used({}, 30, tmp_path / "e.png"), _strip_size(0))
    with pytest.raises(ValueError, match=r"max_epochs >= 1.*got 0"):
        plots.epochs_used({"fixed": [1]}, 0, tmp_path / "x.png")


# --- colours and resources -----------------------------------------------------------------------


def test_family_colors_are_stable_and_distinct() -> None:
    known = ["fixed", "triangular", "triangular2", "exp_range", "one_cycle", "sgdr"]
    colors = [plots.family_color(f) for f in known]
    assert len(set(colors)) == len(known)
    assert "red" not in colors and "darkorange" not in colors  # reserved for failures
    order = ["fixed", "mine", "yours"]
    assert plots.family_color("mine", order) != plots.family_color("yours", order)
    assert plots.family_color("mine", order) == plots.family_color("mine", order)


def test_no_figures_are_left_open(tmp_path: Path) -> None:
    before = set(plt.get_fignums())
    plots.lr_curves({"fixed": [0.1] * 10}, 5, tmp_path / "a.png")
    plots.val_acc_bands({"fixed": [[0.5, 0.6]]}, tmp_path / "b.png")
    plots.lr_vs_val_acc(_points(), tmp_path / "c.png")
    plots.accuracy_strip({"fixed": [0.7]}, tmp_path / "d.png")
    plots.epochs_used({"fixed": [3]}, 9, tmp_path / "e.png")
    assert set(plt.get_fignums()) == before
