"""Seconds from ``python -m sweeps.run cardio_clr`` to its search and to its first finished trial.

Each round starts the CLI in a fresh folder (a fresh MLflow store), reads its progress lines,
and interrupts it after the first trial. With ``--against DIR`` the rounds alternate between this
checkout and the sweeps checkout in DIR (each on ``PYTHONPATH``), in turns, and the medians of
both and of the pairwise differences are printed: the box's speed moves by tens of percent within
minutes, so only runs side by side compare.

    SWEEPS_DATA_DIR=../shared/data python benchmarks/start_time.py --rounds 8 --against ../old
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_start(source: Path, folder: Path) -> tuple[float, float]:
    """(seconds to the "sweep ..." line, seconds to the first finished trial) of one CLI run."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeps.run", "cardio_clr"], cwd=folder, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    search = first = float("nan")
    for line in proc.stderr:
        if line.startswith("sweep "):
            search = time.monotonic() - t0
        elif line.startswith("[") and " 1/" in line.split("]")[0]:
            first = time.monotonic() - t0
            break
    proc.send_signal(signal.SIGINT)  # the sweep marks its MLflow run KILLED and stops Ray
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if first != first:  # NaN: no trial finished
        raise SystemExit(f"{source}: the CLI ended before a trial finished ({proc.returncode})")
    return search, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--against", type=Path, help="another sweeps checkout to alternate with")
    args = ap.parse_args()
    sides = {"this": REPO} | ({"against": args.against.resolve()} if args.against else {})
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                folder = Path(tmp) / f"{name}-{r}"
                folder.mkdir()
                search, first = one_start(sides[name], folder)
                seen[name].append((search, first))
                print(f"round {r} {name}: search at {search:.1f} s, first trial {first:.1f} s")
                shutil.rmtree(folder, ignore_errors=True)
                time.sleep(3)  # Ray's processes of the last run exit
    for name, runs in seen.items():
        search = statistics.median(s for s, _ in runs)
        first = statistics.median(f for _, f in runs)
        print(f"{name} ({sides[name]}): median search at {search:.1f} s, first trial {first:.1f} s")
    if args.against:
        for i, what in enumerate(("search at", "first trial")):
            diffs = [a[i] - b[i] for a, b in zip(seen["against"], seen["this"], strict=True)]
            print(
                f"against - this, {what}: median {statistics.median(diffs):+.1f} s "
                f"({sum(d > 0 for d in diffs)} of {len(diffs)} rounds faster here)"
            )


if __name__ == "__main__":
    main()
