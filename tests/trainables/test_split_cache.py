"""split_cache: a later process gets the same splits from disk, without reading the CSV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import write_cardio_sample
from trainables import DatasetConfig
from trainables.data import cardio, clear_caches, load_splits, split_cache, splits

TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")

PROBE = r"""
import hashlib, json, sys
from trainables import DatasetConfig
from trainables.data import load_splits
s = load_splits(DatasetConfig(name="cardio", path=sys.argv[1], sha256=None))
digest = hashlib.sha256()
for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
    digest.update(getattr(s, name).numpy().tobytes())
print(json.dumps({
    "read": "pandas" in sys.modules or "sklearn" in sys.modules,
    "digest": digest.hexdigest(),
}))
"""


def _probe(csv: Path, cache: Path) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(csv)], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_later_process_loads_the_splits_without_reading_the_file(tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    write_cardio_sample(csv)
    first = _probe(csv, tmp_path / "cache")
    assert first["read"]
    second = _probe(csv, tmp_path / "cache")
    assert not second["read"]  # neither pandas nor scikit-learn was imported
    assert second["digest"] == first["digest"]


def _equal(a: splits.Splits, b: splits.Splits) -> bool:
    return a.n_classes == b.n_classes and all(
        torch.equal(getattr(a, n), getattr(b, n)) for n in TENSORS
    )


def test_a_changed_file_is_split_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = tmp_path / "c.csv"
    write_cardio_sample(csv, seed=0)
    cfg = DatasetConfig(name="cardio", path=str(csv), sha256=None)
    clear_caches()
    before = load_splits(cfg)
    assert len(list((cardio.cache_dir() / "splits").glob("*.pt"))) == 1

    clear_caches()

    def no_split(*args: object) -> splits.Splits:
        raise AssertionError("split again, though the cache holds these splits")

    with monkeypatch.context() as m:
        m.setattr("trainables.data.split_and_scale", no_split)
        assert _equal(load_splits(cfg), before)

    write_cardio_sample(csv, seed=1)  # new content, same path
    clear_caches()
    after = load_splits(cfg)
    assert not _equal(after, before)
    assert len(list((cardio.cache_dir() / "splits").glob("*.pt"))) == 2
    clear_caches()


def cached_sample(tmp_path: Path) -> tuple[DatasetConfig, splits.Splits, Path]:
    """A sample file's config, its splits, and the cache entry they were written to."""
    csv = tmp_path / "c.csv"
    write_cardio_sample(csv)
    cfg = DatasetConfig(name="cardio", path=str(csv), sha256=None)
    clear_caches()
    want = load_splits(cfg)
    (entry,) = (cardio.cache_dir() / "splits").glob("*.pt")
    return cfg, want, entry


def test_an_unreadable_entry_is_rebuilt(tmp_path: Path) -> None:
    cfg, want, entry = cached_sample(tmp_path)
    entry.write_bytes(b"truncated")
    clear_caches()
    assert _equal(load_splits(cfg), want)
    assert split_cache.load(entry.parent, entry.stem) is not None  # written again
    clear_caches()


def test_an_entry_altered_inside_a_tensor_is_rebuilt(tmp_path: Path) -> None:
    cfg, want, entry = cached_sample(tmp_path)
    raw = bytearray(entry.read_bytes())
    saved = torch.load(entry, weights_only=True)
    # Flip bits inside x_train's bytes: the file still unpickles, with other numbers.
    at = bytes(raw).index(saved["x_train"].numpy().tobytes()[:64]) + 32
    raw[at : at + 8] = bytes(b ^ 0xFF for b in raw[at : at + 8])
    entry.write_bytes(bytes(raw))
    altered = torch.load(entry, weights_only=True)
    assert not torch.equal(altered["x_train"], saved["x_train"])
    assert split_cache.load(entry.parent, entry.stem) is None
    clear_caches()
    assert _equal(load_splits(cfg), want)
    assert split_cache.load(entry.parent, entry.stem) is not None  # written again
    clear_caches()


def test_the_key_covers_the_data_and_the_config() -> None:
    cfg = DatasetConfig(name="cardio")
    key = split_cache.cache_key(cfg, "abc")
    assert split_cache.cache_key(cfg, "abc") == key
    assert split_cache.cache_key(cfg, "abd") != key
    assert split_cache.cache_key(cfg.model_copy(update={"split_seed": 1}), "abc") != key
    assert split_cache.cache_key(cfg.model_copy(update={"val_fraction": 0.2}), "abc") != key


def test_a_full_disk_costs_the_cache_entry_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's writer reports a full disk as RuntimeError: the split is still returned by the
    caller, nothing is stored, and no temporary file is left behind."""
    splits_ = load_splits(DatasetConfig(name="digits", val_fraction=0.2, test_fraction=0.2))

    def full(*args: object, **kwargs: object) -> None:
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    split_cache.save(tmp_path, "k", splits_)
    assert list(tmp_path.iterdir()) == []
    assert split_cache.load(tmp_path, "k") is None
