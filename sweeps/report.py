"""The verdict: statistics, plots and the comparison report, built from MLflow alone.

``python -m sweeps.report EXPERIMENT [--run-id ID] [--out DIR] [--tracking-uri URI]`` rebuilds
it from any machine that reaches the tracking store.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from search_spaces import FAMILIES
from sweeps import plots, stats
from sweeps.driver import DRIVER_TAG, driver_host, live_driver
from sweeps.errors import (
    EXIT_USER_ERROR,
    OneLineParser,
    SweepsError,
    format_validation_error,
    redact,
    uri_named,
)
from sweeps.spec import SweepSpec
from sweeps.tracking import (
    TRIAL_STATUSES,
    nested_runs,
    open_existing_store,
    resolve_uri,
)
from trainables import TrialConfig
from trainables.lr_schedules import schedule_rates

# A download bar per spec.yaml would clutter the sweep's own progress output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

BASELINE = "fixed"
TARGET_FRACTION = 0.99  # epochs to reach 99 % of the tuned fixed family's final val_acc
ACCURACY = (0.0, 1.0)  # the range of an accuracy: intervals are cut at it
PLOTS = {
    "lr_curves.png": "LR curve of each family's best config",
    "val_acc_bands.png": "val_acc over epochs (re-evaluation seeds, mean ± std)",
    "lr_vs_val_acc.png": "Peak rate against val_acc for every trial",
    "test_acc.png": "Test accuracy per family (re-evaluation seeds)",
    "epochs_used.png": "Epochs each trial used under early stopping",
}


@dataclass(frozen=True)
class TrialRow:
    name: str
    family: str
    status: str
    params: dict[str, str]
    val_acc: float
    epochs: int
    error: str = ""  # a failed trial's last error line
    retries: int = 0

    @property
    def peak_lr(self) -> float:
        return float(self.params.get("max_lr") or self.params["base_lr"])


@dataclass(frozen=True)
class ReevalRow:
    family: str
    rank: int
    seed: int
    status: str
    params: dict[str, str]
    test_acc: float
    val_acc: list[float]
    error: str = ""


@dataclass
class ReportData:
    run_id: str
    spec: SweepSpec
    trials: list[TrialRow]
    reevals: list[ReevalRow]
    metrics: dict[str, float]
    iters_per_epoch: int


@dataclass
class FamilyRow:
    family: str
    summary: stats.Summary
    comparison: stats.Comparison | None
    epochs_to_target: float | None
    reached: int
    seeds: int
    search_epochs: int
    search_seconds: float
    counts: dict[str, int]


@dataclass
class Report:
    data: ReportData
    rows: list[FamilyRow]
    target: float | None
    sentences: list[str]
    headline: str
    # The p-value each compared family is judged by (Holm-adjusted when several are).
    judged: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        """The Markdown table: the same from a fresh sweep and from a rebuild."""
        head = (
            "| family | test acc (mean ± std) | 95 % CI | Δ vs fixed | p (Welch) | p (Holm) "
            "| epochs to target | search epochs | search s | trials c/s/d/x/f |"
        )
        lines = [head, "|" + "---|" * 10]
        for r in self.rows:
            s, c = r.summary, r.comparison
            ci = "-" if math.isnan(s.ci_low) else f"{s.ci_low:.2%} – {s.ci_high:.2%}"
            acc = "-" if math.isnan(s.mean) else f"{s.mean:.2%}"
            acc += f" ± {s.std * 100:.2f} pp" if s.n > 1 else ""  # one seed has no spread
            delta = "-" if c is None or math.isnan(c.diff) else f"{c.diff * 100:+.2f} pp"
            p = _p_cell(c.p_value if c is not None and c.testable else None)
            holm = _p_cell(self.judged.get(r.family))
            ett = "-" if r.epochs_to_target is None else f"{r.epochs_to_target:.1f}"
            ett += f" ({r.reached}/{r.seeds})" if r.seeds and self.target is not None else ""
            counts = "/".join(str(r.counts.get(k, 0)) for k in TRIAL_STATUSES)
            lines.append(
                f"| {r.family} | {acc} | {ci} | {delta} | {p} | {holm} "
                f"| {ett} | {r.search_epochs} | {r.search_seconds:.0f} | {counts} |"
            )
        return "\n".join(lines)

    def failures(self) -> list[str]:
        """One line per failed trial (which, when, after how many retries, and why), then one
        per failed re-evaluation run."""
        return [
            f"{t.name} failed after {t.epochs} epochs and {t.retries} retries: {t.error or '?'}"
            for t in sorted(self.data.trials, key=lambda t: t.name)
            if t.status == "failed"
        ] + [
            f"reeval-{r.family}-{r.rank}-s{r.seed} failed: {r.error or '?'}"
            for r in self.data.reevals
            if r.status == "failed"
        ]


def _p_cell(p: float | None) -> str:
    """A table cell: format_p without its "p" ("0.14", "< 0.001"), or "-"."""
    return "-" if p is None else stats.format_p(p).removeprefix("p ").removeprefix("= ")


# -- collecting from MLflow -------------------------------------------------------------------
def _children(client: MlflowClient, run: Run, role: str) -> list[Run]:
    runs = nested_runs(client, run.info.experiment_id, run.info.run_id, role)
    return sorted(runs, key=lambda r: r.info.run_name or "")


def find_sweep_run(client: MlflowClient, experiment: str, run_id: str | None) -> Run:
    """The given parent run, or the experiment's latest sweep run."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SweepsError(
            f"experiment {experiment!r}: must exist in the tracking store "
            f"{redact(client.tracking_uri)!r}, but it does not"
        )
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception:  # MLflow raises its own error types for unknown ids
            raise SweepsError(f"--run-id: run {run_id!r} must exist, but it does not") from None
        if run.data.tags.get("sweeps.role") != "sweep":
            raise SweepsError(
                f"--run-id: run {run_id!r} must be a sweep's parent run, but its sweeps.role is "
                f"{run.data.tags.get('sweeps.role')!r}"
            )
        return run
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="tags.`sweeps.role` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise SweepsError(
            f"experiment {experiment!r}: must hold a sweep run to report on, but it has none"
        )
    return runs[0]


def run_params(run: Run) -> dict[str, str]:
    """A trial's or re-evaluation's run params; those a killed driver never sent (older
    versions' resumes did not restore them) from its ``sweeps.config`` tag, which its creation
    wrote."""
    config = json.loads(run.data.tags.get("sweeps.config", "{}"))
    known = FAMILIES[run.data.tags["sweeps.family"]].params if config else ()
    return {**{k: str(config[k]) for k in known if k in config}, **run.data.params}


def collect(client: MlflowClient, parent: Run) -> ReportData:
    with tempfile.TemporaryDirectory() as d:
        path = client.download_artifacts(parent.info.run_id, "spec.yaml", d)
        try:
            spec = SweepSpec.model_validate(yaml.safe_load(Path(path).read_text()))
        except ValidationError as exc:  # a spec that this version's rules refuse
            raise SweepsError(
                f"run {parent.info.run_id}: its spec.yaml must be valid for this version of "
                f"sweeps, but {format_validation_error(exc, model=SweepSpec)}"
            ) from None
    trials = [
        TrialRow(
            name=r.info.run_name or "",
            family=r.data.tags["sweeps.family"],
            status=r.data.tags.get("sweeps.status", "failed"),
            params=run_params(r),
            val_acc=r.data.metrics.get("final_val_acc", float("nan")),
            epochs=int(r.data.metrics.get("epochs_used", 0)),
            error=r.data.tags.get("sweeps.error", ""),
            retries=int(r.data.tags.get("sweeps.retries", "0")),
        )
        for r in _children(client, parent, "trial")
    ]
    reevals = [
        ReevalRow(
            family=r.data.tags["sweeps.family"],
            rank=int(r.data.tags["sweeps.rank"]),
            seed=int(r.data.tags["sweeps.seed"]),
            status=r.data.tags.get("sweeps.status", "failed"),
            params=run_params(r),
            test_acc=r.data.metrics.get("test_acc", float("nan")),
            val_acc=[
                m.value
                for m in sorted(
                    client.get_metric_history(r.info.run_id, "val_acc"), key=lambda m: m.step
                )
            ],
            error=r.data.tags.get("sweeps.error", ""),
        )
        for r in _children(client, parent, "reeval")
    ]
    # A resume redoes a failed re-evaluation run as a new run, which replaces it here.
    latest: dict[tuple[str, int, int], ReevalRow] = {}
    for row in reevals:
        key = (row.family, row.rank, row.seed)
        if key not in latest or latest[key].status == "failed":
            latest[key] = row
    reevals = list(latest.values())
    iters = next(
        (int(t.params["iters_per_epoch"]) for t in trials if "iters_per_epoch" in t.params), 1
    )
    return ReportData(parent.info.run_id, spec, trials, reevals, dict(parent.data.metrics), iters)


# -- statistics ---------------------------------------------------------------------------------
def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def analyse(data: ReportData) -> Report:
    families = list(data.spec.families)
    best = {f: [r for r in data.reevals if r.family == f and r.rank == 1] for f in families}
    accs = {f: _finite([r.test_acc for r in best[f]]) for f in families}
    collapsed = [f for f in families if best[f] and all(r.status == "collapsed" for r in best[f])]
    target = None
    fixed_final = _finite([r.val_acc[-1] for r in best.get(BASELINE, []) if r.val_acc])
    if fixed_final and BASELINE not in collapsed:  # 99 % of chance is no target
        target = TARGET_FRACTION * sum(fixed_final) / len(fixed_final)
    rows, comparisons = [], {}
    for f in families:
        cmp = None
        if f != BASELINE and accs.get(BASELINE):
            cmp = stats.welch(accs[f], accs[BASELINE], support=ACCURACY)
            comparisons[f] = cmp
        hits = [stats.epochs_to_target(r.val_acc, target) for r in best[f]] if target else []
        reached = [h for h in hits if h is not None]
        counts = Counter(t.status for t in data.trials if t.family == f)
        rows.append(
            FamilyRow(
                family=f,
                summary=stats.summarize(accs[f], support=ACCURACY),
                comparison=cmp,
                epochs_to_target=sum(reached) / len(reached) if reached else None,
                reached=len(reached),
                seeds=len(best[f]),
                search_epochs=int(data.metrics.get(f"search_epochs/{f}", 0)),
                search_seconds=data.metrics.get(f"search_seconds/{f}", 0.0),
                counts=dict(counts),
            )
        )
    judged, label = stats.judged_p_values(comparisons)
    sentences = [
        stats.verdict(f, c, p_value=judged.get(f), p_label=label) for f, c in comparisons.items()
    ]
    if collapsed and (BASELINE in collapsed or set(collapsed) == set(families)):
        which = "every family's" if set(collapsed) == set(families) else "the tuned fixed family's"
        headline = (
            f"No verdict: {which} best config collapsed to chance in every re-evaluation seed, so "
            "there is no working fixed rate to compare against (lower search.base_lr"
            + (" and search.max_lr)." if len(families) > 1 else ").")
        )
    elif comparisons:
        headline = stats.overall_verdict(comparisons)
    elif BASELINE not in families:
        headline = "No verdict: the sweep has no tuned fixed family to compare against."
    elif len(families) == 1:
        headline = "No verdict: the sweep has no other family to compare with the fixed rate."
    else:
        headline = (
            "No verdict: the tuned fixed family has no test accuracy to compare against (no "
            "trial or re-evaluation run of it finished; see the failed runs)."
        )
    return Report(data, rows, target, sentences, headline, judged)


# -- plots and files ----------------------------------------------------------------------------
def _lr_curve(spec: SweepSpec, family: str, params: dict[str, str], iters: int) -> list[float]:
    # MLflow's params are strings; the config's model reads them as the numbers they spell.
    sampled = {k: params[k] for k in FAMILIES[family].params}
    cfg = TrialConfig.model_validate(spec.trial_config({"family": family, **sampled}))
    return schedule_rates(cfg, iters)


def draw(report: Report, out: Path) -> dict[str, Path]:
    data = report.data
    fams = list(data.spec.families)
    best = {f: [r for r in data.reevals if r.family == f and r.rank == 1] for f in fams}
    # From a best config's run that has its rates (a killed driver may have lost some params).
    sources = {
        f: next((r.params for r in best[f] if set(FAMILIES[f].params) <= set(r.params)), None)
        for f in fams
    }
    curves = {
        f: _lr_curve(data.spec, f, params, data.iters_per_epoch)
        for f, params in sources.items()
        if params is not None
    }
    points = [
        plots.TrialPoint(t.family, t.peak_lr, t.val_acc, t.status)
        for t in data.trials
        if math.isfinite(t.val_acc)
    ]
    chance = data.metrics.get("data/chance_val_acc")
    return {
        "lr_curves.png": plots.lr_curves(curves, data.iters_per_epoch, out / "lr_curves.png"),
        "val_acc_bands.png": plots.val_acc_bands(
            {f: [r.val_acc for r in best[f]] for f in fams}, out / "val_acc_bands.png"
        ),
        "lr_vs_val_acc.png": plots.lr_vs_val_acc(points, out / "lr_vs_val_acc.png", chance=chance),
        "test_acc.png": plots.accuracy_strip(
            {f: [r.test_acc for r in best[f]] for f in fams},
            out / "test_acc.png",
            reference=BASELINE if BASELINE in fams else None,
        ),
        "epochs_used.png": plots.epochs_used(
            {f: [t.epochs for t in data.trials if t.family == f] for f in fams},
            data.spec.train.epochs,
            out / "epochs_used.png",
        ),
    }


def notes(report: Report) -> list[str]:
    """What the table's columns mean, then any caveat: the paragraphs under the table."""
    d = report.data
    target = "-" if report.target is None else f"{report.target:.2%}"
    return [
        f"Test accuracy: the best config of each family retrained with {d.spec.reeval.seeds} "
        "seeds on the held-out test split, which tuning never saw. 95 % CI: Student's t "
        "interval of the mean, cut at 0 % and 100 %. Δ and p (Welch): Welch's t-test against "
        "the tuned fixed family, unadjusted; p (Holm): adjusted for the number of families "
        "compared, which the verdict and the sentences above use. Epochs to target: first "
        f"epoch with val_acc ≥ {target} (99 % of the fixed family's final mean), mean over the "
        "seeds that reached it. Trials: completed/stopped/diverged/collapsed/failed.",
        *_few_seeds(report),
    ]


def markdown(report: Report) -> str:
    d = report.data
    parts = [
        f"# {d.spec.name}: does a cyclical learning rate beat a tuned fixed rate?",
        "",
        f"**Verdict.** {report.headline}",
        "",
        *[f"- {s}" for s in report.sentences],
        "",
        report.table(),
        "",
        "\n\n".join(notes(report)),
        "",
        f"MLflow parent run `{d.run_id}`, spec hash `{d.spec.spec_hash()}`.",
        "",
    ]
    if report.failures():
        parts += ["## Failed runs", "", *[f"- {f}" for f in report.failures()], ""]
    for name, caption in PLOTS.items():
        parts += [f"## {caption}", "", f"![{caption}]({name})", ""]
    return "\n".join(parts)


def _few_seeds(report: Report) -> list[str]:
    if not any(r.summary.n == 2 for r in report.rows):
        return []
    return [
        "A family with results from 2 seeds has an interval on 1 degree of freedom (t = 12.7 "
        "for 95 %), which spans most of what is possible; use `reeval.seeds` ≥ 3 for an "
        "informative one.",
    ]


def html_page(report: Report, images: dict[str, Path]) -> str:
    """A self-contained page: the images are embedded as data URIs."""
    e = html.escape
    rows = report.table().splitlines()
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    body = [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]
    table = "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
    for r in body:
        table += "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
    table += "</table>"
    figs = ""
    for name, caption in PLOTS.items():
        b64 = base64.b64encode(images[name].read_bytes()).decode()
        figs += f"<h2>{e(caption)}</h2><img alt='{e(caption)}' src='data:image/png;base64,{b64}'>"
    items = "".join(f"<li>{e(s)}</li>" for s in report.sentences)
    # The notes are Markdown: their `code` spans become <code>.
    paragraphs = "".join(
        "<p>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", e(n)) + "</p>" for n in notes(report)
    )
    failed = ""
    if report.failures():
        failed = "<h2>Failed runs</h2><ul>"
        failed += "".join(f"<li>{e(f)}</li>" for f in report.failures()) + "</ul>"
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(report.data.spec.name)}"
        f" report</title><style>{style}</style></head><body>"
        f"<h1>{e(report.data.spec.name)}: does a cyclical learning rate beat a tuned fixed "
        f"rate?</h1><p><b>Verdict.</b> {e(report.headline)}</p><ul>{items}</ul>{table}"
        f"{paragraphs}<p>MLflow parent run <code>{e(report.data.run_id)}</code>, spec hash "
        f"<code>{e(report.data.spec.spec_hash())}</code></p>{failed}{figs}"
        "</body></html>"
    )


def write(report: Report, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    images = draw(report, out)
    (out / "report.md").write_text(markdown(report))
    (out / "report.html").write_text(html_page(report, images))
    return out


def build_and_log(client: MlflowClient, parent_id: str) -> Report:
    """Build the report of a sweep from MLflow and log it under the parent run's ``report/``."""
    report = analyse(collect(client, client.get_run(parent_id)))
    with tempfile.TemporaryDirectory() as d:
        write(report, Path(d))
        client.log_artifacts(parent_id, d, "report")
    return report


# -- CLI ----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m sweeps.report", description="Rebuild a sweep's report from MLflow alone."
    )
    p.add_argument("experiment", help="the MLflow experiment (the spec's tracking.experiment)")
    p.add_argument("--run-id", help="the sweep's parent run (default: the latest)")
    p.add_argument(
        "--out", type=Path,
        help="folder for report.md, report.html and the PNGs (default: report-<the run id's first "
        "8 characters>)",
    )  # fmt: skip
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                   "else sqlite mlflow.db in the working directory)")  # fmt: skip
    args = p.parse_args(argv)
    uri = resolve_uri(args.tracking_uri)
    try:
        client = open_existing_store(uri)
        parent = find_sweep_run(client, args.experiment, args.run_id)
        pid = live_driver(parent.data.tags.get(DRIVER_TAG))
        if parent.info.status == "RUNNING" and pid is not None:
            raise SweepsError(
                f"run {parent.info.run_id}: the sweep must have ended to be reported on, but its "
                f"driver (process {pid} on this machine) still runs it; it logs the report when "
                "it ends"
            )
        if parent.info.status != "FINISHED":
            elsewhere = driver_host(parent.data.tags.get(DRIVER_TAG))
            then = (
                f"if its driver on {elsewhere} still runs, wait for it; else --resume finishes it"
                if elsewhere and parent.info.status == "RUNNING"
                else "--resume finishes it"
            )
            print(
                f"warning: sweep run {parent.info.run_id} is {parent.info.status}, not FINISHED: "
                f"the runs it left unfinished count as failed here ({then})",
                file=sys.stderr,
            )
        report = analyse(collect(client, parent))
        out = args.out or Path(f"report-{parent.info.run_id[:8]}")
        try:
            write(report, out)
        except OSError as exc:
            raise SweepsError(
                f"--out: {str(out)!r} must be a folder the report can be written to, but "
                f"{(exc.strerror or str(exc)).lower()}"
            ) from None
    except SweepsError as exc:
        print(f"error: {uri_named(str(exc), args.tracking_uri)}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(report.table())
    print(f"\n{report.headline}")
    print(f"\nreport written to {out}/report.md and {out}/report.html (from {redact(uri)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
