"""Datasets by name: split once per machine (``split_cache``), loaded once per process and
cached (also per device)."""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import numpy as np
import torch

from trainables.config import DatasetConfig
from trainables.data import cardio, split_cache
from trainables.data.splits import Splits, split_and_scale


def _source(cfg: DatasetConfig) -> tuple[Path | None, str]:
    """The file the dataset is read from (None for a set bundled with a package) and a digest
    of its content, which keys the split cache."""
    if cfg.name == "cardio":
        path = cardio.locate(cfg.path, cfg.sha256)
        return path, cfg.sha256 or cardio.sha256_of(path)
    return None, "scikit-learn " + importlib.metadata.version("scikit-learn")


def _arrays(path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels: of the cardio file at ``path``, else of scikit-learn's digits."""
    if path is not None:
        return cardio.load_arrays(path)
    from sklearn.datasets import load_digits  # here: importing trainables skips scikit-learn

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


@functools.lru_cache(maxsize=8)
def load_splits(cfg: DatasetConfig) -> Splits:
    """The dataset's splits on the CPU; read, cleaned and scaled once per machine (then kept in
    the user cache, ``split_cache``) and loaded once per process."""
    path, digest = _source(cfg)
    folder = cardio.cache_dir() / "splits"
    key = split_cache.cache_key(cfg, digest)
    splits = split_cache.load(folder, key)
    if splits is None:
        x, y = _arrays(path)
        splits = split_and_scale(x, y, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
        split_cache.save(folder, key, splits)
    return splits


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
