"""A concise live view of a sweep, in place of Ray's wide tables. No Ray here."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


@dataclass
class FamilyProgress:
    budget: int
    running: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    best: float | None = None
    retries: int = 0
    started: float | None = None
    ended: float | None = None

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.monotonic()) - self.started


class SweepProgress:
    """Per family: trials done, running, stopped, diverged, best val_acc, elapsed, a bar.

    On a terminal it redraws in place; elsewhere (CI, logs) it prints one line per finished trial.
    """

    def __init__(self, families: dict[str, int], console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.families = {f: FamilyProgress(budget) for f, budget in families.items()}
        self._live: Live | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> SweepProgress:
        if self.console.is_terminal:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(None, None, None)
            self._live = None

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    # -- events -------------------------------------------------------------------------------
    # Families share one search: a family's clock runs from its first trial to its last.
    def trial_started(self, family: str) -> None:
        fp = self.families[family]
        fp.running += 1
        if fp.started is None:
            fp.started = time.monotonic()
        self._refresh()

    def _count(self, fp: FamilyProgress, status: str) -> None:
        fp.counts[status] = fp.counts.get(status, 0) + 1
        if fp.done >= fp.budget and fp.ended is None:
            fp.ended = time.monotonic()

    def trial_result(self, family: str) -> None:
        self._refresh()  # the family's best moves only as trials end, as in the summary

    def trial_ended(
        self, family: str, name: str, status: str, epochs: int, val_acc: float, note: str = ""
    ) -> None:
        fp = self.families[family]
        fp.running = max(0, fp.running - 1)
        self._count(fp, status)
        if status != "failed":  # the best final val_acc, as the summary's "best val_acc"
            fp.best = val_acc if fp.best is None else max(fp.best, val_acc)
        if self._live is None:
            best = f"{fp.best:.4f}" if fp.best is not None else "-"
            self.log(
                f"[{family} {fp.done}/{fp.budget}] {name} {status} after {epochs} epochs, "
                f"val_acc {'-' if math.isnan(val_acc) else f'{val_acc:.4f}'} "
                f"(family best {best}, {fp.elapsed():.0f}s)" + (f": {note}" if note else "")
            )
        self._refresh()

    def trial_restored(self, family: str, status: str, val_acc: float | None) -> None:
        """A trial the interrupted run already finished: counted, not re-announced."""
        fp = self.families[family]
        self._count(fp, status)
        if val_acc is not None and status != "failed":
            fp.best = val_acc if fp.best is None else max(fp.best, val_acc)
        self._refresh()

    def trial_retried(self, family: str, name: str, error: str) -> None:
        fp = self.families[family]
        fp.running = max(0, fp.running - 1)
        fp.retries += 1
        if self._live is None:
            self.log(
                f"[{family}] {name} failed ({error}); retrying, from its last checkpoint if it "
                "has one"
            )
        self._refresh()

    def complete_families(self) -> list[str]:
        """The families whose trials have all ended, once every family's trials have started
        (none is waiting for a slot); before that, none."""
        if any(fp.done + fp.running < fp.budget for fp in self.families.values()):
            return []
        return [f for f, fp in self.families.items() if fp.done >= fp.budget]

    # -- view ---------------------------------------------------------------------------------
    def render(self) -> RenderableType:
        table = Table(title="sweep: search", title_justify="left", expand=False)
        cols = ("family", "progress", "done", "running", "stopped", "diverged", "failed", "retried")
        for col in cols:
            table.add_column(col, justify="left" if col in ("family", "progress") else "right")
        table.add_column("best val_acc", justify="right")
        table.add_column("elapsed", justify="right")
        for fam, fp in self.families.items():
            c = fp.counts
            table.add_row(
                fam,
                ProgressBar(total=fp.budget, completed=fp.done, width=20),
                f"{fp.done}/{fp.budget}",
                str(fp.running),
                str(c.get("stopped", 0)),
                str(c.get("diverged", 0) + c.get("collapsed", 0)),
                str(c.get("failed", 0)),
                str(fp.retries),
                f"{fp.best:.4f}" if fp.best is not None else "-",
                f"{fp.elapsed():.0f}s",
            )
        return Group(table, Text("diverged counts collapsed trials too", style="dim"))


class TaskProgress:
    """A bar for a list of independent jobs (re-evaluation runs); one line per job off-terminal."""

    def __init__(self, label: str, total: int, console: Console) -> None:
        self.label, self.total, self.console = label, total, console
        self.done = 0
        self._started = time.monotonic()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> TaskProgress:
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None

    def skip(self, n: int) -> None:
        """Jobs done before (a resumed sweep): counted, not re-announced."""
        if n:
            self.done += n
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, advance=n)

    def advance(self, message: str) -> None:
        self.done += 1
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, description=f"{self.label}: {message}")
        else:
            elapsed = time.monotonic() - self._started
            self.console.print(
                f"[{self.label} {self.done}/{self.total}] {message} ({elapsed:.0f}s)",
                highlight=False,
                markup=False,
            )
