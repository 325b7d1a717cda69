"""sweeps.stats against scipy and hand-computed formulas, on fixed numbers."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from sweeps.report import PLOTS, ReevalRow, ReportData, analyse, html_page, markdown, notes
from sweeps.spec import load_spec
from sweeps.stats import (
    Comparison,
    epochs_to_target,
    format_p,
    holm,
    overall_verdict,
    summarize,
    verdict,
    welch,
)

A = [0.731, 0.728, 0.735, 0.733, 0.729]
B = [0.722, 0.725, 0.719, 0.724, 0.721]
# Unequal sizes and spreads, so Welch's df differs clearly from the pooled n_a + n_b - 2.
C = [0.70, 0.74, 0.69, 0.75, 0.72, 0.71, 0.73]
D = [0.720, 0.722, 0.721]


def _cmp(diff: float, lo: float, hi: float, p: float, reason: str | None = None) -> Comparison:
    return Comparison(diff, lo, hi, 2.0, 8.0, p, 5, 5, 0.73 + diff, 0.73, 0.95, reason)


# --- summarize -----------------------------------------------------------------------------------


def test_summarize_matches_numpy_and_scipy_t_interval() -> None:
    s = summarize(A)
    assert s.n == 5
    assert s.mean == pytest.approx(np.mean(A), abs=1e-15)
    assert s.std == pytest.approx(np.std(A, ddof=1), rel=1e-12)
    lo, hi = sps.t.interval(0.95, 4, loc=np.mean(A), scale=sps.sem(A))
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo, rel=1e-12), pytest.approx(hi, rel=1e-12))
    assert s.ci_low < s.mean < s.ci_high


def test_summarize_confidence_level_changes_the_interval() -> None:
    s90, s99 = summarize(A, 0.90), summarize(A, 0.99)
    lo, hi = sps.t.interval(0.99, 4, loc=np.mean(A), scale=sps.sem(A))
    assert (s99.ci_low, s99.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert s99.ci_high - s99.ci_low > s90.ci_high - s90.ci_low
    assert s99.confidence == 0.99


def test_summarize_single_value_has_zero_std_and_no_interval() -> None:
    s = summarize([0.73])
    assert (s.n, s.mean, s.std) == (1, 0.73, 0.0)
    assert math.isnan(s.ci_low) and math.isnan(s.ci_high)


def test_summarize_identical_values_give_a_zero_width_interval() -> None:
    s = summarize([0.7, 0.7, 0.7])
    assert (s.std, s.ci_low, s.ci_high) == (0.0, pytest.approx(0.7), pytest.approx(0.7))


def test_summarize_empty_is_all_nan() -> None:
    s = summarize([])
    assert s.n == 0
    assert all(math.isnan(x) for x in (s.mean, s.std, s.ci_low, s.ci_high))


@pytest.mark.parametrize("bad", [[0.7, float("nan")], [0.7, float("inf")]])
def test_summarize_rejects_non_finite_values(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="must hold only finite values"):
        summarize(bad)


@pytest.mark.parametrize("conf", [0.0, 1.0, 95.0])
def test_confidence_out_of_range_is_named(conf: float) -> None:
    with pytest.raises(ValueError, match=re.escape(f"confidence={conf!r}")):
        summarize(A, conf)
    with pytest.raises(ValueError, match="0 < confidence < 1"):
        welch(A, B, conf)


# --- welch ---------------------------------------------------------------------------------------


def _welch_df_by_hand(a: list[float], b: list[float]) -> float:
    va = np.var(a, ddof=1) / len(a)
    vb = np.var(b, ddof=1) / len(b)
    return float((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))


@pytest.mark.parametrize(("a", "b"), [(A, B), (C, D), (D, C)])
def test_welch_matches_scipy_and_the_satterthwaite_df(a: list[float], b: list[float]) -> None:
    c = welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert c.testable and c.reason is None
    assert c.t == pytest.approx(ref.statistic, rel=1e-12)
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert c.df == pytest.approx(_welch_df_by_hand(a, b), rel=1e-12)
    assert c.df == pytest.approx(ref.df, rel=1e-12)
    assert c.diff == pytest.approx(np.mean(a) - np.mean(b), abs=1e-15)
    assert (c.n_a, c.n_b) == (len(a), len(b))
    assert (c.mean_a, c.mean_b) == (pytest.approx(np.mean(a)), pytest.approx(np.mean(b)))


def test_welch_df_is_not_the_pooled_df() -> None:
    # Guards the test above: with these groups a pooled-variance df would be caught.
    assert welch(C, D).df != pytest.approx(len(C) + len(D) - 2, abs=0.5)


@pytest.mark.parametrize(("a", "b"), [(A, B), (C, D)])
def test_welch_difference_interval_by_hand(a: list[float], b: list[float]) -> None:
    c = welch(a, b, confidence=0.95)
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    df = _welch_df_by_hand(a, b)
    half = sps.t.ppf(0.975, df) * se
    diff = np.mean(a) - np.mean(b)
    assert c.ci_low == pytest.approx(diff - half, rel=1e-10)
    assert c.ci_high == pytest.approx(diff + half, rel=1e-10)
    # scipy's own interval for the same test agrees.
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (c.ci_low, c.ci_high) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_welch_interval_excludes_zero_exactly_when_p_below_alpha() -> None:
    for a, b in [(A, B), (C, D)]:
        c = welch(a, b)
        assert (c.p_value < 0.05) == (c.ci_low > 0 or c.ci_high < 0)
    assert welch(A, B).p_value < 0.05  # the fixed numbers are clearly apart
    assert welch(C, D).p_value > 0.05  # these are not


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # the scipy reference call
def test_welch_one_group_without_variance_is_still_testable() -> None:
    c = welch([0.72, 0.72, 0.72], A)
    assert c.testable
    assert c.df == pytest.approx(len(A) - 1)  # all the uncertainty comes from A
    assert c.p_value == pytest.approx(sps.ttest_ind([0.72] * 3, A, equal_var=False).pvalue)


@pytest.mark.parametrize(
    ("a", "b", "reason", "diff"),
    [
        ([0.73], B, "at least 2 values per group, but got n=1 and n=5", 0.73 - np.mean(B)),
        (A, [], "n=5 and n=0", float("nan")),
        ([], [], "n=0 and n=0", float("nan")),
        ([0.74, 0.74], [0.72, 0.72, 0.72], "both groups have zero variance", 0.02),
        ([0.72, 0.72], [0.72, 0.72], "both groups have zero variance", 0.0),
    ],
)
def test_welch_degenerate_cases_give_nan_p_and_a_reason(
    a: list[float], b: list[float], reason: str, diff: float
) -> None:
    c = welch(a, b)
    assert not c.testable
    assert c.reason is not None and reason in c.reason
    for x in (c.p_value, c.t, c.df, c.ci_low, c.ci_high):
        assert math.isnan(x)
    if math.isnan(diff):
        assert math.isnan(c.diff)
    else:
        assert c.diff == pytest.approx(diff)


def test_welch_rejects_nan_input() -> None:
    with pytest.raises(ValueError, match="`b` must hold only finite values"):
        welch(A, [0.7, float("nan"), 0.71])


# --- epochs_to_target ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("curve", "target", "expected"),
    [
        ([0.5, 0.6, 0.7, 0.72], 0.7, 3),  # equal counts as reached
        ([0.5, 0.6, 0.7, 0.72], 0.71, 4),
        ([0.75, 0.6], 0.7, 1),  # 1-based: the first epoch is 1
        ([0.5, 0.6, 0.65], 0.7, None),
        ([], 0.7, None),
        ([float("nan"), 0.69, 0.71], 0.7, 3),  # NaN never reaches the target
        ([float("nan")] * 3, 0.0, None),
        ([0.4, 0.8, 0.3], 0.7, 2),  # first crossing, even if it drops again
    ],
)
def test_epochs_to_target(curve: list[float], target: float, expected: int | None) -> None:
    assert epochs_to_target(curve, target) == expected


# --- p formatting and Holm -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (0.0123, "p = 0.012"),
        (0.7134, "p = 0.71"),
        (0.0004, "p < 0.001"),
        (1.0, "p = 1.00"),
        (0.04996, "p = 0.04996"),  # "0.05" would hide that it is below alpha
        (0.0501, "p = 0.05"),
        (float("nan"), "p = n/a"),
    ],
)
def test_format_p(p: float, text: str) -> None:
    assert format_p(p) == text


def test_holm_by_hand() -> None:
    # sorted: b 0.01 (x3 = 0.03), a 0.02 (x2 = 0.04), c 0.04 (x1 = 0.04), d NaN ignored
    adj = holm({"a": 0.02, "b": 0.01, "c": 0.04, "d": float("nan")})
    assert adj["b"] == pytest.approx(0.03)
    assert adj["a"] == pytest.approx(0.04)
    assert adj["c"] == pytest.approx(0.04)
    assert math.isnan(adj["d"])


def test_holm_is_monotone_and_capped() -> None:
    # raw x-multipliers would be 0.03*3=0.09, 0.031*2=0.062: the running max keeps order
    adj = holm({"a": 0.03, "b": 0.031, "c": 0.9})
    assert adj["a"] == pytest.approx(0.09)
    assert adj["b"] == pytest.approx(0.09)
    assert adj["c"] == pytest.approx(0.9)
    assert holm({"a": 0.6, "b": 0.7})["a"] == 1.0


# --- verdict -------------------------------------------------------------------------------------


def test_verdict_beats() -> None:
    s = verdict("triangular2", _cmp(0.0042, 0.0010, 0.0074, 0.0123))
    assert s == "triangular2 beats tuned fixed by +0.42 pp (95 % CI +0.10 to +0.74 pp, p = 0.012)"


def test_verdict_worse() -> None:
    s = verdict("exp_range", _cmp(-0.0080, -0.0120, -0.0040, 0.0031))
    assert s == (
        "exp_range is worse than tuned fixed by 0.80 pp (95 % CI -1.20 to -0.40 pp, p = 0.0031)"
    )


def test_verdict_no_significant_difference() -> None:
    s = verdict("one_cycle", _cmp(0.0005, -0.0030, 0.0040, 0.71))
    assert s == (
        "one_cycle: no significant difference from tuned fixed "
        "(+0.05 pp, 95 % CI -0.30 to +0.40 pp, p = 0.71)"
    )


def test_verdict_alpha_and_baseline_are_used() -> None:
    c = _cmp(0.0042, 0.0010, 0.0074, 0.0123)
    assert verdict("sgdr", c, alpha=0.01).startswith("sgdr: no significant difference from")
    assert verdict("sgdr", c, baseline="SGD 0.01").startswith("sgdr beats SGD 0.01 by")


def test_verdict_from_real_welch_numbers() -> None:
    c = welch(A, B)
    s = verdict("triangular", c)
    assert s.startswith(f"triangular beats tuned fixed by +{c.diff * 100:.2f} pp (95 % CI ")
    assert f"{c.ci_low * 100:+.2f} to {c.ci_high * 100:+.2f} pp" in s
    assert s.endswith(f"{format_p(c.p_value)})")
    assert verdict("triangular", welch(B, A)).startswith("triangular is worse than tuned fixed by ")


def test_verdict_degenerate_says_why_it_cannot_be_tested() -> None:
    s = verdict("sgdr", welch([0.731], B))
    assert s.startswith("sgdr vs tuned fixed cannot be tested: ")
    assert "at least 2 values per group, but got n=1 and n=5" in s
    assert f"(difference {(0.731 - np.mean(B)) * 100:+.2f} pp)" in s
    empty = verdict("sgdr", welch([], B))
    assert "cannot be tested" in empty and "difference" not in empty and "nan" not in empty
    flat = verdict("sgdr", welch([0.7, 0.7], [0.7, 0.7]))
    assert "zero variance" in flat and "p =" not in flat


def test_verdict_judges_by_the_p_value_it_is_given() -> None:
    c = _cmp(0.0160, 0.0014, 0.0306, 0.036)
    assert verdict("triangular", c).startswith("triangular beats tuned fixed by +1.60 pp")
    s = verdict("triangular", c, p_value=0.072, p_label="Holm-adjusted over 2 families")
    assert s == (
        "triangular: no significant difference from tuned fixed (+1.60 pp, 95 % CI +0.14 to "
        "+3.06 pp, p = 0.072, Holm-adjusted over 2 families)"
    )


def test_intervals_are_cut_at_what_the_values_can_be() -> None:
    two = [0.60, 0.95]  # 2 seeds: t = 12.7, the raw interval spans -150 % to +290 %
    raw, cut = summarize(two), summarize(two, support=(0.0, 1.0))
    assert raw.ci_low < 0 and raw.ci_high > 1
    assert (cut.ci_low, cut.ci_high) == (0.0, 1.0) and cut.mean == raw.mean
    near, plain = summarize([0.70, 0.71, 0.72], support=(0.0, 1.0)), summarize([0.70, 0.71, 0.72])
    assert (near.ci_low, near.ci_high) == (plain.ci_low, plain.ci_high)
    w_raw, w_cut = welch(two, [0.1, 0.9]), welch(two, [0.1, 0.9], support=(0.0, 1.0))
    assert w_raw.ci_low < -1 and w_raw.ci_high > 1
    assert (w_cut.ci_low, w_cut.ci_high) == (-1.0, 1.0)
    assert w_cut.p_value == w_raw.p_value and w_cut.diff == w_raw.diff


# --- overall_verdict -----------------------------------------------------------------------------


def test_overall_picks_the_largest_significant_gain_after_holm() -> None:
    results = {
        "triangular": _cmp(0.0030, 0.0010, 0.0050, 0.004),  # Holm: 0.004 x 3 = 0.012
        "triangular2": _cmp(0.0060, 0.0005, 0.0115, 0.02),  # Holm: 0.02 x 2 = 0.04
        "one_cycle": _cmp(0.0090, -0.0010, 0.0190, 0.30),  # largest diff, not significant
    }
    s = overall_verdict(results)
    assert s == (
        "triangular2 significantly beats the tuned fixed rate by +0.60 pp "
        "(95 % CI +0.05 to +1.15 pp, p = 0.04, Holm-adjusted over 3 families)."
    )


def test_overall_holm_can_remove_a_win() -> None:
    results = {
        "triangular": _cmp(0.0030, 0.0001, 0.0059, 0.03),  # Holm: 0.03 x 2 = 0.06
        "exp_range": _cmp(-0.0010, -0.0040, 0.0020, 0.50),
    }
    s = overall_verdict(results)
    assert s == (
        "No CLR family significantly beats the tuned fixed rate "
        "(best: triangular, +0.30 pp, p = 0.06, Holm-adjusted over 2 families)."
    )
    raw = overall_verdict(results, correction=False)
    assert raw.startswith("triangular significantly beats the tuned fixed rate by +0.30 pp")
    assert raw.endswith("p = 0.03).")


def test_overall_significant_loss_is_not_a_win() -> None:
    results = {"exp_range": _cmp(-0.0080, -0.0120, -0.0040, 0.001)}
    assert overall_verdict(results) == (
        "No CLR family significantly beats the tuned fixed rate "
        "(best: exp_range, -0.80 pp, p = 0.001). Significantly worse than the tuned fixed rate: "
        "exp_range by 0.80 pp (p = 0.001)."
    )


def test_overall_names_the_families_significantly_worse_after_holm() -> None:
    results = {
        "triangular": _cmp(-0.0026, -0.0045, -0.0007, 0.021),  # Holm: 0.042
        "one_cycle": _cmp(-0.0005, -0.0030, 0.0020, 0.53),
    }
    assert overall_verdict(results) == (
        "No CLR family significantly beats the tuned fixed rate (best: one_cycle, -0.05 pp, "
        "p = 0.53, Holm-adjusted over 2 families). Significantly worse than the tuned fixed "
        "rate: triangular by 0.26 pp (p = 0.042, Holm-adjusted over 2 families)."
    )
    results["sgdr"] = _cmp(0.0040, 0.0020, 0.0060, 0.001)  # Holm: 0.003
    s = overall_verdict(results)
    assert s.startswith("sgdr significantly beats the tuned fixed rate by +0.40 pp")
    assert s.endswith("Significantly worse than the tuned fixed rate: triangular by 0.26 pp "
                      "(p = 0.042, Holm-adjusted over 3 families).")  # fmt: skip


def test_overall_ignores_untestable_families_and_reports_when_none_testable() -> None:
    ok = _cmp(0.0040, 0.0010, 0.0070, 0.01)
    bad = welch([0.9], B)
    s = overall_verdict({"sgdr": bad, "triangular": ok})
    # one testable family: no Holm label, sgdr (diff ~ +18 pp) cannot win untested
    assert s.startswith("triangular significantly beats the tuned fixed rate by +0.40 pp")
    assert "Holm" not in s
    none = overall_verdict({"sgdr": bad})
    assert none.startswith("No CLR family could be tested against the tuned fixed rate (sgdr: ")
    assert overall_verdict({}) == "No CLR family was compared with the tuned fixed rate."


def _data(
    families: str, tested: dict[str, list[float]], collapsed: tuple[str, ...] = ()
) -> ReportData:
    spec = load_spec("digits_lr", [f"search.families=[{families}]"])
    reevals = [
        ReevalRow(f, 1, 1000 + i, "collapsed" if f in collapsed else "completed", {}, acc, [acc])
        for f, accs in tested.items()
        for i, acc in enumerate(accs)
    ]
    return ReportData("run", spec, [], reevals, {}, 1)


@pytest.mark.parametrize(
    ("families", "tested", "why"),
    [
        ("triangular,one_cycle", {"triangular": [0.9, 0.91]}, "has no tuned fixed family"),
        ("fixed", {"fixed": [0.9, 0.91]}, "no other family to compare with"),
        ("fixed,triangular", {"triangular": [0.9, 0.91]}, "fixed family has no test accuracy"),
    ],
)
def test_no_verdict_says_why(families: str, tested: dict[str, list[float]], why: str) -> None:
    headline = analyse(_data(families, tested)).headline
    assert headline.startswith("No verdict: ") and why in headline, headline


def test_a_verdict_where_both_sides_were_tested() -> None:
    tested = {"fixed": [0.90, 0.91, 0.90], "triangular": [0.95, 0.96, 0.95]}
    data = _data("fixed,triangular", tested)
    assert not analyse(data).headline.startswith("No verdict")


def test_no_verdict_when_the_fixed_rate_collapsed_to_chance() -> None:
    tested = {"fixed": [0.10, 0.11, 0.10], "triangular": [0.95, 0.96, 0.95]}
    report = analyse(_data("fixed,triangular", tested, collapsed=("fixed",)))
    assert report.headline.startswith(
        "No verdict: the tuned fixed family's best config collapsed to chance in every "
        "re-evaluation seed"
    ), report.headline
    assert report.target is None  # 99 % of chance is no target
    report = analyse(_data("fixed,triangular", tested, collapsed=("fixed", "triangular")))
    assert report.headline.startswith("No verdict: every family's best config collapsed")
    assert "lower search.base_lr and search.max_lr" in report.headline
    # A CLR family that collapsed is a result, not a reason to withhold the verdict.
    report = analyse(_data("fixed,triangular", tested, collapsed=("triangular",)))
    assert not report.headline.startswith("No verdict")


def test_the_table_shows_what_the_numbers_support(tmp_path: Path) -> None:
    tested = {
        "fixed": [0.90, 0.91, 0.90],
        "triangular": [0.60, 0.99],  # 2 seeds: the interval is cut at 100 %
        "one_cycle": [0.93],  # 1 seed: no spread, no interval
    }
    report = analyse(_data("fixed,triangular,one_cycle", tested))
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
            for r in report.table().splitlines()[2:]}  # fmt: skip
    assert report.table().splitlines()[0].count("|") == 11
    assert rows["one_cycle"][:2] == ["93.00%", "-"]
    assert rows["triangular"][0].startswith("79.50% ± ")
    assert rows["triangular"][1].startswith("0.00% – 100.00%")
    assert rows["fixed"][2:5] == ["-", "-", "-"]  # no Δ or p against itself
    p_welch, p_holm = rows["triangular"][3], rows["triangular"][4]
    assert float(p_holm) >= float(p_welch)
    two = {"fixed": [0.90, 0.91, 0.90], "triangular": [0.93, 0.94], "one_cycle": [0.92, 0.91]}
    sentences = analyse(_data("fixed,triangular,one_cycle", two)).sentences
    assert len(sentences) == 2
    assert all(s.endswith(", Holm-adjusted over 2 families)") for s in sentences), sentences
    assert "on 1 degree of freedom" in markdown(report)  # triangular's 2 seeds
    # The HTML page says what the Markdown says under the table.
    images = {}
    for name in PLOTS:
        images[name] = tmp_path / name
        images[name].write_bytes(b"png")
    page = html_page(report, images)
    for note in notes(report):
        assert f"<p>{html.escape(note).replace('`', '')}</p>" in page.replace("<code>", "").replace(
            "</code>", ""
        )
    assert "<code>reeval.seeds</code>" in page and "`" not in page
    assert report.data.spec.spec_hash() in page
    three = {"fixed": [0.90, 0.91, 0.90], "triangular": [0.93, 0.94, 0.92]}
    assert "degree of freedom" not in markdown(analyse(_data("fixed,triangular", three)))
    no_fixed = analyse(_data("triangular,one_cycle", {"triangular": [0.9, 0.91]}))
    assert all(cell.split("|")[6].strip() == "-" for cell in no_fixed.table().splitlines()[2:])
