"""PNG plots for the comparison report; each function takes plain data and writes one file.

Built on ``matplotlib.figure.Figure`` rather than pyplot: such figures never enter pyplot's global
registry, so nothing needs closing, no display is needed and repeated reports do not leak memory.
No MLflow, Ray or torch here: the report gathers the numbers and these functions only draw them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from sweeps.tracking import TRIAL_STATUSES

if TYPE_CHECKING:
    from sweeps.lr_find import RangeTest  # torch: not for a module that only draws

__all__ = [
    "TrialPoint",
    "accuracy_strip",
    "epochs_used",
    "family_color",
    "lr_curves",
    "lr_vs_val_acc",
    "plot_range_test",
    "val_acc_bands",
]

PathArg = str | os.PathLike[str]

DPI = 110

# Fixed colours per known family so that every plot of one report agrees. Red and orange are left
# out: they mark diverged and collapsed trials in lr_vs_val_acc.
_FAMILY_COLORS = {
    "fixed": "#333333",
    "triangular": "tab:blue",
    "triangular2": "tab:green",
    "exp_range": "tab:purple",
    "one_cycle": "tab:brown",
    "sgdr": "tab:cyan",
}
_SPARE_COLORS = ("tab:pink", "tab:olive", "tab:gray", "#1f3b73", "#6b8e23", "#8b4513")

# Status markers: (marker, face colour or None for "family colour", edge colour or None, label).
_STATUS_STYLE: dict[str, tuple[str, str | None, str | None, str]] = {
    "completed": ("o", None, None, "completed"),
    "stopped": ("o", "none", None, "stopped early by ASHA"),
    "diverged": ("x", "red", "red", "diverged"),
    "collapsed": ("^", "darkorange", "darkorange", "collapsed"),
    "failed": ("s", "none", "dimgray", "failed"),
}


@dataclass(frozen=True)
class TrialPoint:
    """One trial for ``lr_vs_val_acc``: its family, its rate (base_lr, or max_lr for a cyclic
    family), the val_acc it reached and how it ended (one of ``TRIAL_STATUSES``)."""

    family: str
    lr: float
    val_acc: float
    status: str

    def __post_init__(self) -> None:
        if self.status not in TRIAL_STATUSES:
            raise ValueError(
                f"`status` must be one of {', '.join(TRIAL_STATUSES)}, but got {self.status!r}"
            )


def family_color(family: str, order: Sequence[str] = ()) -> str:
    """The colour of ``family``; unknown families take spare colours by their place in
    ``order`` so that the same report colours them the same way in every plot."""
    if family in _FAMILY_COLORS:
        return _FAMILY_COLORS[family]
    unknown = [f for f in order if f not in _FAMILY_COLORS]
    i = unknown.index(family) if family in unknown else 0
    return _SPARE_COLORS[i % len(_SPARE_COLORS)]


def _new_figure(size: tuple[float, float] = (8.0, 5.0)) -> tuple[Figure, Axes]:
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def _save(fig: Figure, path: PathArg) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    fig.clear()  # drop the artists now rather than whenever the figure is collected
    return out


def _no_data(ax: Axes, what: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"no {what} to show",
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=12,
        color="gray",
        bbox={"facecolor": "white", "edgecolor": "none"},  # readable over a chance line
    )


def _note(ax: Axes, text: str) -> None:
    # Below the x label, outside the data, so that it never hides points or the legend; the
    # constrained layout makes room for it.
    ax.annotate(
        text,
        xy=(0.0, 0.0),
        xycoords="axes fraction",
        xytext=(0, -34),
        textcoords="offset points",
        ha="left",
        va="top",
        fontsize=8,
        color="dimgray",
    )


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def _jitter(n: int, seed: int, width: float = 0.28) -> np.ndarray:
    # Seeded so a rebuilt report draws the very same picture.
    return np.random.default_rng(seed).uniform(-width / 2, width / 2, n)


def lr_curves(
    curves: Mapping[str, Sequence[float]],
    iters_per_epoch: int,
    path: PathArg,
    title: str = "Learning rate of each family's best config",
) -> Path:
    """One LR curve per family, sampled once per batch (x in fractional epochs, log y)."""
    if iters_per_epoch < 1:
        raise ValueError(f"`iters_per_epoch >= 1` must hold, but got {iters_per_epoch}")
    fig, ax = _new_figure()
    order = list(curves)
    drawn = 0
    for family, curve in curves.items():
        y = np.asarray(curve, dtype=float).ravel()
        # A log axis cannot show a rate <= 0; masking keeps matplotlib from clipping it to 1e-300.
        y = np.where(np.isfinite(y) & (y > 0), y, np.nan)
        if not np.isfinite(y).any():
            continue
        x = np.arange(y.size) / iters_per_epoch
        ax.plot(x, y, color=family_color(family, order), label=family, lw=1.6)
        drawn += 1
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate (log scale)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if drawn:
        ax.legend(title="family", loc="best")
    else:
        _no_data(ax, "learning-rate curves")
    return _save(fig, path)


def _stack(seeds: Sequence[Sequence[float]]) -> np.ndarray:
    """Seeds as rows, padded with NaN: a trial that ran fewer epochs has no value there."""
    length = max((len(s) for s in seeds), default=0)
    out = np.full((len(seeds), length), np.nan)
    for i, s in enumerate(seeds):
        out[i, : len(s)] = np.asarray(s, dtype=float)
    return out


def _band_stats(m: np.ndarray, band: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, lower and upper band per epoch over the finite values only (no warnings on
    all-NaN epochs, which np.nanmean would emit)."""
    valid = np.isfinite(m)
    count = valid.sum(axis=0)
    has = count > 0
    total = np.where(valid, m, 0.0).sum(axis=0)
    mean = np.where(has, total / np.maximum(count, 1), np.nan)
    if band == "minmax":
        lo = np.where(has, np.where(valid, m, np.inf).min(axis=0), np.nan)
        hi = np.where(has, np.where(valid, m, -np.inf).max(axis=0), np.nan)
        return mean, lo, hi
    dev2 = np.where(valid, (m - mean) ** 2, 0.0).sum(axis=0)
    # One seed at an epoch has no spread to show: the band collapses onto the line.
    std = np.where(count > 1, np.sqrt(dev2 / np.maximum(count - 1, 1)), 0.0)
    return mean, mean - std, mean + std


def val_acc_bands(
    curves: Mapping[str, Sequence[Sequence[float]]],
    path: PathArg,
    band: str = "std",
    title: str = "Validation accuracy over epochs (best config per family, over seeds)",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Mean val_acc per epoch and family with a ±1 std band (``band="std"``, sample std) or the
    min–max range (``band="minmax"``) over seeds. Seeds may differ in length: each epoch uses
    the seeds that reached it. ``ylim`` zooms in on the plateau, where the families differ."""
    if band not in ("std", "minmax"):
        raise ValueError(f"`band` must be 'std' or 'minmax', but got {band!r}")
    fig, ax = _new_figure()
    order = list(curves)
    empty: list[str] = []
    ragged = False
    for family, seeds in curves.items():
        m = _stack(seeds)
        if not np.isfinite(m).any():
            empty.append(family)
            continue
        ragged = ragged or len({len(s) for s in seeds}) > 1
        mean, lo, hi = _band_stats(m, band)
        x = np.arange(1, m.shape[1] + 1)
        color = family_color(family, order)
        n = len(seeds)
        ax.plot(x, mean, color=color, lw=1.8, label=f"{family} (n={n} seed{'s' * (n != 1)})")
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if len(empty) < len(curves):
        what = "±1 std" if band == "std" else "min–max"
        ax.legend(title=f"family (band: {what})", loc="lower right")
    else:
        _no_data(ax, "validation curves")
    notes = []
    if ragged:
        notes.append("seeds ran for different numbers of epochs: each epoch averages those present")
    if empty and len(empty) < len(curves):
        notes.append(f"no data: {', '.join(empty)}")
    if notes:
        _note(ax, "; ".join(notes))
    return _save(fig, path)


def lr_vs_val_acc(
    points: Sequence[TrialPoint],
    path: PathArg,
    chance: float | None = None,
    title: str = "Learning rate vs validation accuracy: where high rates fail",
) -> Path:
    """Every trial at (its rate, its val_acc), log x; family by colour, outcome by marker.

    Diverged (red x) and collapsed (orange triangle) trials stand out whatever their family.
    ``chance`` draws a dashed line at chance accuracy, where collapsed trials end up.
    """
    fig, ax = _new_figure((9.0, 5.5))
    order = list(dict.fromkeys(p.family for p in points))
    shown = [p for p in points if math.isfinite(p.val_acc) and math.isfinite(p.lr) and p.lr > 0]
    hidden = len(points) - len(shown)
    for status in TRIAL_STATUSES:
        group = [p for p in shown if p.status == status]
        if not group:
            continue
        marker, face, edge, _ = _STATUS_STYLE[status]
        colors = [family_color(p.family, order) for p in group]
        kw: dict[str, Any] = {"marker": marker, "s": 46 if marker != "x" else 56, "zorder": 3}
        if status in ("diverged", "collapsed"):
            kw |= {"c": face, "linewidths": 1.6 if marker == "x" else 0.8, "zorder": 4}
            if marker != "x":
                kw["edgecolors"] = "black"
        elif face == "none":
            kw |= {"facecolors": "none", "edgecolors": edge or colors, "linewidths": 1.3}
        else:
            kw |= {"c": colors, "edgecolors": "white", "linewidths": 0.5}
        ax.scatter([p.lr for p in group], [p.val_acc for p in group], **kw)

    if chance is not None:
        ax.axhline(chance, ls="--", color="gray", lw=1.2, zorder=1)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (base_lr for fixed, max_lr for cyclic families; log scale)")
    ax.set_ylabel("validation accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)

    if not shown:
        _no_data(ax, "trials")
    handles: list[Line2D] = [
        Line2D([], [], ls="", marker="o", color=family_color(f, order), label=f)
        for f in order
        if any(p.family == f for p in shown)
    ]
    present = {p.status for p in shown}
    for status in TRIAL_STATUSES:
        if status not in present:
            continue
        marker, face, edge, label = _STATUS_STYLE[status]
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker=marker,
                label=label,
                markersize=7,
                markerfacecolor=face or "black",
                markeredgecolor=edge or "black",
                markeredgewidth=1.6 if marker == "x" else 1.0,
            )
        )
    if chance is not None:
        handles.append(Line2D([], [], ls="--", color="gray", label=f"chance ({chance:.1%})"))
    if handles:
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0,
            title="family / outcome",
        )
    if hidden:
        _note(ax, f"{hidden} trial{'s' * (hidden != 1)} not shown (no val_acc, or lr <= 0)")
    return _save(fig, path)


def accuracy_strip(
    values: Mapping[str, Sequence[float]],
    path: PathArg,
    reference: str | None = None,
    title: str = "Test accuracy of each family's best config over seeds",
) -> Path:
    """Box plot plus every seed as a jittered point, per family. ``reference`` (e.g. "fixed")
    draws that family's mean as a dashed line across the plot for comparison."""
    fig, ax = _new_figure((max(6.0, 1.3 * len(values) + 2.0), 5.0))
    order = list(values)
    labels = []
    for i, (family, vals) in enumerate(values.items()):
        pos = i + 1
        arr = _finite(vals)
        dropped = len(vals) - arr.size
        labels.append(f"{family}\n(n={arr.size}" + (f", {dropped} NaN)" if dropped else ")"))
        if not arr.size:
            continue
        color = family_color(family, order)
        ax.boxplot(
            [arr],
            positions=[pos],
            widths=0.5,
            showfliers=False,
            patch_artist=True,
            boxprops={"facecolor": "none", "edgecolor": color},
            medianprops={"color": color, "lw": 2},
            whiskerprops={"color": color},
            capprops={"color": color},
        )
        ax.scatter(
            pos + _jitter(arr.size, seed=i),
            arr,
            color=color,
            s=28,
            alpha=0.85,
            edgecolors="white",
            linewidths=0.5,
            zorder=3,
        )
    if reference is not None and reference in values and _finite(values[reference]).size:
        ref = float(_finite(values[reference]).mean())
        ax.axhline(
            ref, ls="--", color="gray", lw=1, zorder=1, label=f"{reference} mean ({ref:.2%})"
        )
        ax.legend(loc="best")
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_xlim(0.4, len(labels) + 0.6)
    ax.set_ylabel("test accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    if not any(_finite(v).size for v in values.values()):
        _no_data(ax, "test accuracies")
    return _save(fig, path)


def epochs_used(
    epochs: Mapping[str, Sequence[int]],
    max_epochs: int,
    path: PathArg,
    title: str = "Epochs each trial ran before ASHA stopped it",
) -> Path:
    """Every trial's epoch count as a jittered point per family, with the max_epochs line and
    how many trials ran the full budget."""
    if max_epochs < 1:
        raise ValueError(f"`max_epochs >= 1` must hold, but got {max_epochs}")
    fig, ax = _new_figure((max(6.0, 1.3 * len(epochs) + 2.0), 5.0))
    order = list(epochs)
    labels = []
    for i, (family, used) in enumerate(epochs.items()):
        pos = i + 1
        arr = _finite([float(e) for e in used])
        labels.append(f"{family}\n(n={arr.size})")
        if not arr.size:
            continue
        # ASHA stops trials at a few rungs, so many trials share a value: lay each value's
        # trials out side by side (a dot plot) so the row's width shows how many stopped there.
        values, counts = np.unique(arr, return_counts=True)
        spacing = min(0.06, 0.8 / max(int(counts.max()), 1))
        for value, count in zip(values, counts, strict=True):
            x = pos + (np.arange(count) - (count - 1) / 2) * spacing
            ax.scatter(
                x,
                np.full(count, value),
                s=18,
                color=family_color(family, order),
                edgecolors="white",  # keeps touching dots countable
                linewidths=0.4,
                zorder=3,
            )
            ax.annotate(
                str(count),
                (x[-1], value),
                xytext=(5, 0),
                textcoords="offset points",
                ha="left",
                va="center",
                fontsize=7,
                color="dimgray",
            )
        full = int((arr >= max_epochs).sum())
        ax.annotate(
            f"{full}/{arr.size} full",
            (pos, max_epochs),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    line = ax.axhline(
        max_epochs, ls="--", color="gray", lw=1, zorder=1, label=f"max_epochs = {max_epochs}"
    )
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_xlim(0.4, len(labels) + 0.6)
    ax.set_ylim(0, max_epochs * 1.15)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("epochs trained")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.legend(handles=[line], loc="outside lower right", fontsize=8)
    if not any(len(v) for v in epochs.values()):
        _no_data(ax, "trials")
    return _save(fig, path)


def plot_range_test(result: RangeTest, path: PathArg, title: str = "LR range test") -> Path:
    """Loss against rate (log x): raw per batch, smoothed, the steepest point, the suggested
    max_lr and Smith's base_lr band; the validation accuracy on a second axis when recorded."""
    s = result.suggestion
    lrs, raw, sm = result.lrs, result.losses, result.smoothed
    fig, ax = _new_figure()
    ax.plot(lrs, raw, color="0.7", lw=0.8, label="loss per batch")
    beta = result.settings.smoothing
    ax.plot(lrs, sm, color="tab:blue", lw=1.8, label=f"smoothed loss (β={beta:g})")
    ax.axvspan(
        s.base_lr_low,
        s.base_lr_high,
        color="tab:orange",
        alpha=0.25,
        label=f"base_lr = max_lr/4..max_lr/3 ({s.base_lr_low:.3g}..{s.base_lr_high:.3g})",
    )
    ax.axvline(s.max_lr, color="tab:green", ls="--", lw=1.5, label=f"max_lr = {s.max_lr:.3g}")
    ax.axvline(
        s.min_loss_lr, color="0.4", ls=":", lw=1, label=f"loss minimum at {s.min_loss_lr:.3g}"
    )
    at = int(np.argmin(np.abs(np.log(lrs) - math.log(s.steepest_lr))))
    ax.scatter(
        [s.steepest_lr],
        [sm[at]],
        s=60,
        color="red",
        zorder=4,
        label=f"steepest descent at {s.steepest_lr:.3g}",
    )
    finite = sm[np.isfinite(sm)]
    raw_ok = raw[np.isfinite(raw)]
    if finite.size:
        # Clip the blow-up: show the start level and the smoothed curve, not a 1e6 raw spike.
        bottom = min(float(finite.min()), float(np.quantile(raw_ok, 0.02)) if raw_ok.size else 0)
        top = float(finite.max())
        pad = 0.05 * (top - bottom) or 0.05 * abs(top) or 0.05
        ax.set_ylim(bottom - pad, top + pad)
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate (log scale, {result.settings.mode} schedule)")
    ax.set_ylabel("training loss")
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if result.val_acc.size:
        ax2 = ax.twinx()
        ax2.plot(
            lrs[result.val_steps],
            result.val_acc,
            "s",
            color="tab:purple",
            ms=4,
            label="val accuracy",
        )
        ax2.set_ylabel("validation accuracy")
        ax2.set_ylim(0, 1)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    # Below the plot, never over the curve (which runs flat through any corner at low rates).
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    how = (
        f"stopped at batch {result.steps_run} of {result.settings.steps}: smoothed loss above "
        f"{result.settings.stop_factor:g}x its best"
        if result.stopped_early
        else f"ran all {result.steps_run} batches"
    )
    ax.set_title(f"{title}\n{how}", fontsize=11)
    return _save(fig, path)
