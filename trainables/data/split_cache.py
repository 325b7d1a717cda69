"""Finished splits kept on disk, so a fresh process skips reading, cleaning and splitting.

A new Ray worker otherwise imports pandas and scikit-learn and reads the CSV before its first
epoch: ~2.5 s of every worker on the 2-core dev box (docs/benchmarks.md). The file holds the
split tensors exactly as ``split_and_scale`` returned them, so a trial trains on the same bits.

The key covers what the splits derive from: the data (the CSV's SHA-256, or the version of the
bundled set's package), the dataset config, the versions of the libraries that read and split
it, and the source of the modules that do. A missing, unreadable or altered entry (its tensors'
digest no longer matches) is rebuilt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
from pathlib import Path
from typing import Any

import torch

from trainables.config import DatasetConfig
from trainables.data.splits import Splits
from trainables.files import write_atomically

_FORMAT = 2  # 2: with the tensors' digest
# The code between the file and the tensors: reading, cleaning, splitting and scaling.
_SOURCES = ("__init__.py", "cardio.py", "splits.py")
_PACKAGES = ("numpy", "pandas", "scikit-learn", "torch")


def cache_key(cfg: DatasetConfig, data_digest: str) -> str:
    h = hashlib.sha256()
    versions = []
    for name in _PACKAGES:
        try:
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((name, ""))
    for part in (_FORMAT, data_digest, cfg.model_dump_json(), versions):
        h.update(repr(part).encode())
    here = Path(__file__).parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    return h.hexdigest()


def digest(fields: dict[str, Any]) -> str:
    """SHA-256 over the splits' fields: a flipped bit inside a tensor still unpickles."""
    h = hashlib.sha256()
    for name in sorted(fields):
        value = fields[name]
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            h.update(repr((value.dtype, tuple(value.shape))).encode())
            h.update(value.contiguous().view(torch.uint8).numpy().data)  # its buffer, no copy
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def load(folder: Path, key: str) -> Splits | None:
    """The splits stored under ``key``, or None if there are none or they cannot be trusted."""
    try:
        saved: dict[str, Any] = torch.load(folder / f"{key}.pt", weights_only=True)
        if saved.pop("format") != _FORMAT or saved.pop("digest") != digest(saved):
            return None
        return Splits(**saved)
    except Exception:  # a torn or foreign file fails in torch's unpickler in many ways
        return None


def save(folder: Path, key: str, splits: Splits) -> None:
    fields = dataclasses.asdict(splits)
    saved = {"format": _FORMAT, "digest": digest(fields), **fields}
    # A read-only or full disk (torch's writer raises RuntimeError) costs later processes the
    # split, nothing more; two workers splitting at once never read half a file.
    with contextlib.suppress(OSError, RuntimeError):
        write_atomically(folder / f"{key}.pt", lambda f: torch.save(saved, f))
