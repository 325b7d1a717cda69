"""Datasets by name, loaded once per process and cached (also per device)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from trainables.config import DatasetConfig
from trainables.data import cardio
from trainables.data.splits import Splits, split_and_scale


def _arrays(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    if cfg.name == "cardio":
        return cardio.load_arrays(cfg.path, cfg.sha256)
    from sklearn.datasets import load_digits  # here: importing trainables skips scikit-learn

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


@functools.lru_cache(maxsize=8)
def load_splits(cfg: DatasetConfig) -> Splits:
    """The dataset's splits on the CPU; read, cleaned and scaled once per process."""
    x, y = _arrays(cfg)
    return split_and_scale(x, y, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)


@functools.lru_cache(maxsize=8)
def _on_device(cfg: DatasetConfig, device: str) -> Splits:
    return load_splits(cfg).to(torch.device(device))


def load_dataset(cfg: DatasetConfig, device: torch.device | str = "cpu") -> Splits:
    """The splits on ``device``: on a GPU the whole set lives there, so no batch is copied."""
    dev = str(torch.device(device))
    return load_splits(cfg) if dev == "cpu" else _on_device(cfg, dev)


def clear_caches() -> None:
    """Forget every loaded dataset, so the next load reads the file again (benchmarks time it)."""
    load_splits.cache_clear()
    _on_device.cache_clear()


__all__ = ["Splits", "cardio", "clear_caches", "load_dataset", "load_splits"]
