"""Does ASHA bias the verdict? Each family's best val_acc with and without early stopping.

Runs the same sweep twice in one process (same spec, same seeds, a small budget): once with the
spec's ASHA, once with ``early_stopping.name=none``, and prints per family the best val_acc, the
difference, and the epochs each run consumed.

    SWEEPS_DATA_DIR=../shared/data python benchmarks/asha_bias.py [--trials 8] [--epochs 30]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

from sweeps.spec import load_spec
from sweeps.sweep import RunOptions, SweepResult, run_sweep


def run(sweep: str, overrides: list[str], workdir: Path, label: str) -> SweepResult:
    spec = load_spec(sweep, overrides)
    uri = f"sqlite:///{workdir / f'{label}.db'}"
    quiet = Console(stderr=True, quiet=True)
    return run_sweep(spec, RunOptions(tracking_uri=uri, storage=str(workdir / label)), quiet)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sweep", default="cardio_clr")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()
    base = [
        f"search.trials_per_family={args.trials}",
        f"train.epochs={args.epochs}",
        "reeval.seeds=1",
    ]
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        asha = run(args.sweep, base, work, "asha")
        full = run(args.sweep, [*base, "early_stopping.name=none"], work, "none")
    print(f"{args.sweep}: {args.trials} trials per family, {args.epochs} epochs max")
    print("| family | best val_acc ASHA | best val_acc none | Δ (pp) | epochs ASHA | epochs none |")
    print("|---|---|---|---|---|---|")
    tot_a = tot_n = 0
    for fam, a in asha.outcomes.items():
        n = full.outcomes[fam]
        va, vn = a.best_val_acc or 0.0, n.best_val_acc or 0.0
        tot_a += a.epochs
        tot_n += n.epochs
        print(f"| {fam} | {va:.4f} | {vn:.4f} | {(va - vn) * 100:+.2f} | {a.epochs} | {n.epochs} |")
    print(
        f"epochs: ASHA {tot_a}, none {tot_n} ({tot_n / max(tot_a, 1):.2f}x fewer with ASHA); "
        f"wall: ASHA {asha.wall_seconds:.0f}s, none {full.wall_seconds:.0f}s"
    )


if __name__ == "__main__":
    main()
