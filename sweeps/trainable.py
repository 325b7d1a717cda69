"""The thin Ray wrapper around ``trainables.train_loop``: checkpoints in, ``tune.report`` out."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables import train_loop

STATE_FILE = "state.pt"


def _report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, Path(d) / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def ray_trainable(config: dict[str, Any], shared: dict[str, Any]) -> None:
    """Ray's function trainable: the sampled ``config`` plus the spec's ``shared`` sections."""
    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:  # a retried or restored trial continues from its last checkpoint
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, weights_only=False)
    train_loop({**shared, **config}, _report, checkpoint=state)
