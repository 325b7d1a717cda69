"""Datasets by name, loaded once per process and cached (also per device).

A Ray worker is handed the driver's splits (``preload``), so it never reads the file; sklearn,
which only loading digits and splitting need, is imported there rather than at import time: with
scipy it takes ~1.5 s to import, which every fresh worker process paid before.
"""

from __future__ import annotations

import numpy as np
import torch

from trainables.config import DatasetConfig
from trainables.data import cardio
from trainables.data.splits import Splits, split_and_scale

# Plain dicts, not functools.lru_cache: preload must be able to fill them.
_SPLITS: dict[DatasetConfig, Splits] = {}
_ON_DEVICE: dict[tuple[DatasetConfig, str], Splits] = {}


def _arrays(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    if cfg.name == "cardio":
        return cardio.load_arrays(cfg.path, cfg.sha256)
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


def load_splits(cfg: DatasetConfig) -> Splits:
    """The dataset's splits on the CPU; read, cleaned and scaled once per process."""
    if cfg not in _SPLITS:
        x, y = _arrays(cfg)
        _SPLITS[cfg] = split_and_scale(x, y, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    return _SPLITS[cfg]


def preload(cfg: DatasetConfig, splits: Splits) -> None:
    """Serve ``splits`` for ``cfg`` in this process from now on, e.g. the driver's in a Ray
    worker (``tune.with_parameters`` ships them once per sweep through the object store)."""
    _SPLITS.setdefault(cfg, splits)


def load_dataset(cfg: DatasetConfig, device: torch.device | str = "cpu") -> Splits:
    """The splits on ``device``: on a GPU the whole set lives there, so no batch is copied."""
    dev = str(torch.device(device))
    if dev == "cpu":
        return load_splits(cfg)
    if (cfg, dev) not in _ON_DEVICE:
        _ON_DEVICE[cfg, dev] = load_splits(cfg).to(torch.device(dev))
    return _ON_DEVICE[cfg, dev]


def clear_caches() -> None:
    """Forget every loaded dataset, so the next load reads the file again (benchmarks time it)."""
    _SPLITS.clear()
    _ON_DEVICE.clear()


__all__ = ["Splits", "cardio", "clear_caches", "load_dataset", "load_splits", "preload"]
