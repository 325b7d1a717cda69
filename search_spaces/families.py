"""LR schedule families: which parameters each one samples.

The torch side (``trainables.lr_schedules``) builds the curve for the same names; a contract test
checks that both registries agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FamilyName = Literal["fixed", "triangular", "triangular2", "exp_range", "one_cycle", "sgdr"]


@dataclass(frozen=True)
class Family:
    name: str
    params: tuple[str, ...]
    # A cyclic family must not be judged by ASHA before its first full cycle ends.
    cyclic: bool
    description: str


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("fixed", ("base_lr",), False, "constant rate base_lr (the tuned baseline)"),
        Family(
            "triangular",
            ("base_lr", "max_lr", "step_size_epochs"),
            True,
            "CLR triangle between base_lr and max_lr",
        ),
        Family(
            "triangular2",
            ("base_lr", "max_lr", "step_size_epochs"),
            True,
            "CLR triangle whose amplitude halves every cycle",
        ),
        Family(
            "exp_range",
            ("base_lr", "max_lr", "step_size_epochs", "gamma"),
            True,
            "CLR triangle whose amplitude decays by gamma per iteration",
        ),
        Family(
            "one_cycle",
            ("base_lr", "max_lr"),
            True,
            "1cycle: warm up from base_lr to max_lr, then anneal (one cycle over the whole run)",
        ),
        Family(
            "sgdr",
            ("base_lr", "max_lr", "step_size_epochs", "t_mult"),
            True,
            "cosine annealing with warm restarts: max_lr to base_lr over T_0 = step_size_epochs",
        ),
    )
}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)


def cycle_epochs(family: str, step_size_epochs: int, epochs: int) -> int:
    """Epochs until the first full cycle of ``family`` ends (0 for non-cyclic families)."""
    if not FAMILIES[family].cyclic:
        return 0
    if family == "one_cycle":
        return epochs  # its one cycle is the whole run
    if family == "sgdr":
        return step_size_epochs  # T_0 is the whole first cosine period
    return 2 * step_size_epochs  # CLR: half a cycle is one step size
