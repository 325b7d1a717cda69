"""Stratified train/val/test splits, standardized with training statistics only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def to(self, device: torch.device) -> Splits:
        moved = {f: getattr(self, f).to(device) for f in _TENSORS}
        return dataclasses.replace(self, **moved)


_TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def split_and_scale(
    x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> Splits:
    # Imported here: scikit-learn costs ~2 s of imports, which a process that never splits a
    # dataset (the report, --list, a re-evaluation worker until its first run) skips.
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_fraction / (1.0 - test_fraction),
        stratify=y_rest,
        random_state=seed,
    )
    scaler = StandardScaler().fit(x_train)

    def xs(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(scaler.transform(a).astype(np.float32))

    def ys(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Splits(
        xs(x_train),
        ys(y_train),
        xs(x_val),
        ys(y_val),
        xs(x_test),
        ys(y_test),
        n_classes=int(y.max()) + 1,
    )
