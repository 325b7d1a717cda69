"""What the Ray trainable sends to Tune: a result where the scheduler decides, with a checkpoint,
at the end, and else at most every ``SEND_EVERY_S``; the epochs between ride along with it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from sweeps import trainable
from sweeps.trainable import EARLIER, ray_trainable


def fake_trainable(epochs: int, checkpoint_every: int, last_status: str) -> Any:
    def fit(config: dict[str, Any], report: Any, checkpoint: Any = None) -> None:
        for epoch in range(1, epochs + 1):
            status = last_status if epoch == epochs else "running"
            ends = status != "running"
            state = {"epoch": epoch} if ends or epoch % checkpoint_every == 0 else None
            report({"epoch": epoch, "val_acc": epoch / 100, "status": status}, state)

    return fit


def run(
    monkeypatch: pytest.MonkeyPatch, every_s: float, epochs: int, last_status: str = "completed"
) -> list[tuple[dict[str, Any], bool]]:
    sent: list[tuple[dict[str, Any], bool]] = []
    monkeypatch.setattr(trainable, "SEND_EVERY_S", every_s)
    monkeypatch.setattr(
        trainable, "load_trainable", lambda entry: fake_trainable(epochs, 10, last_status)
    )
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(
        trainable.tune,
        "report",
        lambda m, checkpoint=None: sent.append((m, checkpoint is not None)),
    )
    ray_trainable({"family": "fixed"}, {}, None, {"fixed": (3, 9), "sgdr": (5,)})
    return sent


def epochs_in(sent: list[tuple[dict[str, Any], bool]]) -> list[int]:
    return [row["epoch"] for r, _ in sent for row in (*r.get(EARLIER, ()), r)]


def test_results_go_where_asha_decides_with_a_checkpoint_and_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = run(monkeypatch, every_s=3600.0, epochs=12)
    assert [(r["epoch"], ckpt) for r, ckpt in sent] == [
        (3, False),
        (9, False),
        (10, True),
        (12, True),
    ]
    assert epochs_in(sent) == list(range(1, 13))  # every epoch once, in order
    assert [len(r.get(EARLIER, ())) for r, _ in sent] == [2, 5, 0, 1]


def test_a_trial_that_ends_early_sends_its_last_epoch_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = run(monkeypatch, every_s=3600.0, epochs=7, last_status="diverged")
    assert [r["epoch"] for r, _ in sent] == [3, 7]
    assert sent[-1][0]["status"] == "diverged" and sent[-1][1]
    assert epochs_in(sent) == list(range(1, 8))


def test_without_a_wait_every_epoch_is_its_own_result(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = run(monkeypatch, every_s=0.0, epochs=5)
    assert [r["epoch"] for r, _ in sent] == [1, 2, 3, 4, 5]
    assert all(EARLIER not in r for r, _ in sent)


def test_a_trial_process_imports_neither_the_spec_nor_optuna() -> None:
    """A trial's worker imports sweeps.trainable; the spec's models and Optuna are the driver's,
    and would add ~0.5 s to every trial worker's start."""
    code = (
        "import sys, sweeps.trainable\n"
        "seen = lambda: sorted(m for m in ('optuna', 'sweeps.spec') if m in sys.modules)\n"
        "print(seen())\n"
        "import sweeps.run\n"
        "print(seen())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out == ["[]", "['optuna', 'sweeps.spec']"]  # then the driver's CLI: the check sees it


@pytest.mark.parametrize(
    ("metrics", "needle"),
    [
        ({"epoch": 1, "status": "running"}, "but got no val_acc (keys: epoch, status)"),
        ({"val_acc": 0.5}, "but got no epoch, status (keys: val_acc)"),
        ({"epoch": 1, "val_acc": 0.5, "status": "done"}, "status must be one of running, "),
        ({"epoch": 1, "val_acc": "high", "status": "running"}, "val_acc must be a number"),
        ({"epoch": 1, "val_acc": "0.7", "status": "running"}, "but got '0.7'"),
        ({"epoch": 1, "val_acc": True, "status": "running"}, "val_acc must be a number"),
        ({"epoch": "e1", "val_acc": 0.7, "status": "running"}, "epoch must be a number"),
        ({"epoch": 1.5, "val_acc": 0.7, "status": "running"}, "epoch must be a whole number"),
    ],
)
def test_a_report_that_breaks_the_contract_is_named(metrics: dict[str, Any], needle: str) -> None:
    with pytest.raises(trainable.TrainableContractError, match=r"^trainable my:fit: ") as info:
        trainable.checked(metrics, "my:fit")
    assert needle in str(info.value)


def test_a_non_finite_val_acc_is_a_diverged_end() -> None:
    ok = {"epoch": 3, "val_acc": 0.7, "status": "running", "lr": 0.1}
    assert trainable.checked(ok, None) == ok
    # numpy's numbers are numbers, and go on as Python's.
    same = trainable.checked({**ok, "epoch": np.int64(3), "val_acc": np.float32(0.5)}, None)
    assert same == {**ok, "val_acc": 0.5} and type(same["epoch"]) is int
    for bad in (float("nan"), float("inf")):
        out = trainable.checked({**ok, "val_acc": bad}, None)
        assert out == {**ok, "val_acc": 0.0, "status": "diverged"}
