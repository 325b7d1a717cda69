"""Statistics for the report: does a CLR family beat the tuned fixed rate, by how much, how sure.

Pure numpy/scipy: no MLflow, Ray or torch, so the report can be rebuilt and tested anywhere.
Accuracies are fractions (0.73); the sentences speak in percentage points (pp).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "Comparison",
    "Summary",
    "epochs_to_target",
    "format_p",
    "holm",
    "judged_p_values",
    "overall_verdict",
    "summarize",
    "verdict",
    "welch",
]

NAN = float("nan")


@dataclass(frozen=True)
class Summary:
    """Mean and t-interval of one group (e.g. a family's test accuracy over seeds).

    ``std`` is the sample standard deviation (ddof=1), 0 for a single value. A single value has
    no interval: ``ci_low``/``ci_high`` are NaN then, because a zero-width interval would claim a
    certainty that one seed cannot give. An empty group has every statistic NaN.
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95


@dataclass(frozen=True)
class Comparison:
    """Welch's comparison of group ``a`` (a CLR family) against group ``b`` (the baseline).

    ``diff = mean(a) - mean(b)``; the interval, ``t`` and ``p_value`` (two-sided) use the
    Welch–Satterthwaite ``df``. When the test is impossible, ``reason`` says why and ``t``,
    ``df``, ``p_value`` and the interval are NaN (``diff`` is still given when both groups have
    values).
    """

    diff: float
    ci_low: float
    ci_high: float
    t: float
    df: float
    p_value: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    confidence: float = 0.95
    reason: str | None = None

    @property
    def testable(self) -> bool:
        return self.reason is None


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`0 < confidence < 1` must hold, but got confidence={confidence!r}")


def _as_finite_array(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    bad = arr[~np.isfinite(arr)]
    if bad.size:
        # A NaN accuracy means a failed run; silently dropping it would flatter the family.
        raise ValueError(
            f"`{name}` must hold only finite values, but got {bad.size} non-finite "
            f"({bad[:3].tolist()}); drop failed runs explicitly before comparing"
        )
    return arr


def _sample_var(arr: np.ndarray) -> float:
    # Identical values must give exactly 0: the float mean of [0.72] * 3 is not exactly 0.72, so
    # numpy's var is ~1e-33 and would turn "every seed agreed" into an absurd t of 1e14.
    return 0.0 if np.all(arr == arr[0]) else float(arr.var(ddof=1))


def _clip(low: float, high: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    # An interval of a bounded quantity cut at its bounds keeps its coverage: with 2 seeds
    # (t = 12.7) an accuracy's t-interval can reach far below 0 % and above 100 %.
    if bounds is None:
        return low, high
    return float(max(low, bounds[0])), float(min(high, bounds[1]))


def summarize(
    values: Sequence[float], confidence: float = 0.95, support: tuple[float, float] | None = None
) -> Summary:
    """n, mean, sample std and the t-distribution confidence interval of the mean, cut at
    ``support`` (the range the values can take, e.g. (0, 1) for an accuracy) if given."""
    _check_confidence(confidence)
    arr = _as_finite_array(values, "values")
    n = int(arr.size)
    if n == 0:
        return Summary(0, NAN, NAN, NAN, NAN, confidence)
    mean = float(arr.mean())
    if n == 1:
        return Summary(1, mean, 0.0, NAN, NAN, confidence)
    std = math.sqrt(_sample_var(arr))
    # Written out rather than t.interval(scale=sem): scipy returns NaN for scale=0, but identical
    # seeds genuinely give a zero-width interval.
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, *_clip(mean - half, mean + half, support), confidence)


def welch(
    a: Sequence[float],
    b: Sequence[float],
    confidence: float = 0.95,
    support: tuple[float, float] | None = None,
) -> Comparison:
    """Welch's unequal-variance t-test of mean(a) - mean(b), with the CI of the difference
    (cut at what two values in ``support`` can differ by, if given)."""
    _check_confidence(confidence)
    xa = _as_finite_array(a, "a")
    xb = _as_finite_array(b, "b")
    na, nb = int(xa.size), int(xb.size)
    mean_a = float(xa.mean()) if na else NAN
    mean_b = float(xb.mean()) if nb else NAN
    diff = mean_a - mean_b

    def degenerate(reason: str) -> Comparison:
        return Comparison(diff, NAN, NAN, NAN, NAN, NAN, na, nb, mean_a, mean_b, confidence, reason)

    if na < 2 or nb < 2:
        return degenerate(
            f"Welch's test needs at least 2 values per group, but got n={na} and n={nb}"
        )
    va = _sample_var(xa) / na
    vb = _sample_var(xb) / nb
    if va == 0.0 and vb == 0.0:
        # t would be ±inf or 0/0: every seed gave the same value in both groups.
        return degenerate("both groups have zero variance (every run gave the same value)")

    with warnings.catch_warnings():
        # One constant group is fine for Welch (its variance is 0); scipy still warns about
        # cancellation in computing that 0.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        res = sps.ttest_ind(xa, xb, equal_var=False)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(va + vb)
    span = None if support is None else (support[0] - support[1], support[1] - support[0])
    ci_low, ci_high = _clip(diff - half, diff + half, span)
    return Comparison(
        diff=diff,
        ci_low=ci_low,
        ci_high=ci_high,
        t=float(res.statistic),
        df=float(df),
        p_value=float(res.pvalue),
        n_a=na,
        n_b=nb,
        mean_a=mean_a,
        mean_b=mean_b,
        confidence=confidence,
    )


def epochs_to_target(curve: Sequence[float], target: float) -> int | None:
    """The first epoch (1-based) whose val_acc reaches ``target``; None if it never does.

    NaN entries (a diverged epoch) never count as reaching the target.
    """
    for epoch, value in enumerate(curve, start=1):
        if value >= target:  # False for NaN, on purpose
            return epoch
    return None


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni step-down adjusted p-values (NaN entries stay NaN and do not count)."""
    finite = sorted((p, k) for k, p in p_values.items() if not math.isnan(p))
    m = len(finite)
    adjusted = {k: NAN for k in p_values}
    running = 0.0
    for i, (p, k) in enumerate(finite):
        # The running max keeps the adjusted values in the same order as the raw ones.
        running = max(running, min(1.0, (m - i) * p))
        adjusted[k] = running
    return adjusted


def format_p(p: float, alpha: float = 0.05) -> str:
    """``p = 0.012`` style; extra digits when rounding would put p on the wrong side of alpha."""
    if math.isnan(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    for digits in (2, 3, 4, 6):
        text = f"{p:.{digits}g}"
        if (float(text) < alpha) == (p < alpha):
            break
    if "e" in text or "." not in text:
        text = f"{p:.2f}"  # 1 -> "1.00"
    return f"p = {text}"


def _pp(x: float) -> str:
    return f"{x * 100:+.2f} pp"


def _ci(cmp: Comparison) -> str:
    return f"{cmp.confidence * 100:g} % CI {cmp.ci_low * 100:+.2f} to {cmp.ci_high * 100:+.2f} pp"


def judged_p_values(
    results: Mapping[str, Comparison], correction: bool = True
) -> tuple[dict[str, float], str]:
    """The p-value each testable family is judged by, and how it was adjusted ("" if not).

    With ``correction`` and more than one testable family, Holm's: picking the best of several
    families inflates false wins.
    """
    raw = {k: c.p_value for k, c in results.items() if c.testable}
    if correction and len(raw) > 1:
        return holm(raw), f"Holm-adjusted over {len(raw)} families"
    return raw, ""


def verdict(
    family: str,
    cmp: Comparison,
    alpha: float = 0.05,
    baseline: str = "tuned fixed",
    p_value: float | None = None,
    p_label: str = "",
) -> str:
    """One sentence on ``family`` against ``baseline``, built from the numbers of ``cmp``.
    ``p_value`` (with ``p_label``, e.g. "Holm-adjusted over 5 families") replaces the test's
    own p, so that each sentence agrees with the headline."""
    if not cmp.testable:
        shown = "" if math.isnan(cmp.diff) else f" (difference {_pp(cmp.diff)})"
        return f"{family} vs {baseline} cannot be tested: {cmp.reason}{shown}"
    p = cmp.p_value if p_value is None else p_value
    numbers = f"{_ci(cmp)}, {format_p(p, alpha)}" + (f", {p_label}" if p_label else "")
    if p < alpha and cmp.diff > 0:
        return f"{family} beats {baseline} by {_pp(cmp.diff)} ({numbers})"
    if p < alpha and cmp.diff < 0:
        return f"{family} is worse than {baseline} by {_pp(-cmp.diff)[1:]} ({numbers})"
    return f"{family}: no significant difference from {baseline} ({_pp(cmp.diff)}, {numbers})"


def overall_verdict(
    results: Mapping[str, Comparison],
    alpha: float = 0.05,
    baseline: str = "the tuned fixed rate",
    correction: bool = True,
) -> str:
    """The headline: the family with the largest significant gain over the baseline, if any,
    and the families significantly worse than it.

    Significance uses :func:`judged_p_values` (Holm's adjustment by default); the sentence says
    so. The interval shown is each family's own (unadjusted) one.
    """
    if not results:
        return f"No CLR family was compared with {baseline}."
    testable = {k: c for k, c in results.items() if c.testable}
    if not testable:
        reasons = "; ".join(f"{k}: {c.reason}" for k, c in results.items())
        return f"No CLR family could be tested against {baseline} ({reasons})."
    judged, label = judged_p_values(testable, correction)

    def p_text(k: str) -> str:
        text = format_p(judged[k], alpha)
        return f"{text}, {label}" if label else text

    winners = [k for k, c in testable.items() if judged[k] < alpha and c.diff > 0]
    if winners:
        best = max(winners, key=lambda k: testable[k].diff)
        c = testable[best]
        head = f"{best} significantly beats {baseline} by {_pp(c.diff)} ({_ci(c)}, {p_text(best)})."
    else:
        best = max(testable, key=lambda k: testable[k].diff)
        head = (
            f"No CLR family significantly beats {baseline} "
            f"(best: {best}, {_pp(testable[best].diff)}, {p_text(best)})."
        )
    losers = [k for k, c in testable.items() if judged[k] < alpha and c.diff < 0]
    if not losers:
        return head
    each = "; ".join(f"{k} by {_pp(-testable[k].diff)[1:]} ({p_text(k)})" for k in losers)
    return f"{head} Significantly worse than {baseline}: {each}."
