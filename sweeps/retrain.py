"""What one re-evaluation task runs on a Ray worker: train a config from scratch, score it on the
test split.

Apart from ``sweeps.reeval`` so that the worker imports neither MLflow nor Tune (~6 s of imports
on a fresh worker, paid while the sweep waits for its re-evaluation)."""

from __future__ import annotations

import time
from typing import Any

from sweeps.custom import load_trainable, trainable_name
from trainables import test_accuracy


def retrain(config: dict[str, Any], entry: str | None) -> tuple[list[dict[str, Any]], float, float]:
    """Train ``config`` for the full run, then score the final model on the test split:
    (every reported result, test_acc, seconds).

    A custom trainable may report ``test_acc`` itself; otherwise its last checkpoint must hold
    the spec's model weights under ``"model"``, as ``train_loop``'s does."""
    history: list[dict[str, Any]] = []
    final: dict[str, Any] = {}

    def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        history.append(metrics)
        if state is not None:
            final.update(state)

    t0 = time.perf_counter()
    load_trainable(entry)(config, report, checkpoint=None)  # as the trials call it
    last = history[-1] if history else {}
    if "test_acc" not in last and "model" not in final:
        raise ValueError(
            f"trainable {trainable_name(entry)}: its last result must hold test_acc, or a "
            "report must pass its model's state_dict as state['model'], for the test split to "
            f"score it; it did neither ({len(history)} results)"
        )
    test = float(last["test_acc"]) if "test_acc" in last else test_accuracy(config, final)
    return history, test, time.perf_counter() - t0
