"""graph_store: a graph compiled by one process is loaded by the next without Inductor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables import graph_store

# One process's view: whether it compiled or loaded, and the step's outputs, bit for bit.
PROBE = r"""
import json, sys
import torch
from trainables.config import ModelConfig
from trainables.models import build_model
from trainables.steps import build_eval, eval_fn, grad_fn

torch.set_num_threads(1)
torch.manual_seed(0)
model = build_model(ModelConfig(name="mlp", hidden=(9, 7)), 12, 2)
x, y = torch.randn(40, 12), torch.randint(0, 2, (40,))
weights = [p.detach() for p in model.parameters()]
step = grad_fn(model, x, y, sgd=True)
losses = []
for i in range(5):
    losses.append(step(*weights, torch.tensor(0.1 * (i + 1)), x, y)[0].item())
assert eval_fn(model, x, y) is not None
print(json.dumps({
    "compiled": "torch._inductor.compile_fx" in sys.modules,
    "dynamo": "torch._dynamo" in sys.modules,
    "losses": [float.hex(v) for v in losses],
    "weights": [float.hex(v) for w in weights for v in w.flatten().tolist()],
    "val": build_eval(model, x, y, compiled=True)(),
}))
"""


def _probe(cache: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_later_process_loads_the_graph_without_inductor(tmp_path: Path) -> None:
    """The first process compiles and indexes both graphs; the next loads them, imports neither
    Inductor's compiler nor dynamo, and computes the same bits."""
    first = _probe(tmp_path)
    if not first["compiled"]:
        pytest.skip("Inductor cannot compile here (no C++ compiler?)")
    entries = sorted((tmp_path / "sweeps-graphs").glob("*.json"))
    assert len(entries) == 2  # the training step and the val pass
    second = _probe(tmp_path)
    assert not second["compiled"] and not second["dynamo"]
    assert second["losses"] == first["losses"] and second["weights"] == first["weights"]
    assert second["val"] == first["val"]


def test_the_key_covers_what_shapes_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "model.py"
    src.write_text("a = 1\n")
    key = graph_store.graph_key(("step", (350, 12)), [str(src)])
    assert graph_store.graph_key(("step", (350, 12)), [str(src)]) == key
    assert graph_store.graph_key(("step", (351, 12)), [str(src)]) != key
    monkeypatch.setenv("TORCHINDUCTOR_MAX_AUTOTUNE", "1")
    assert graph_store.graph_key(("step", (350, 12)), [str(src)]) != key
    monkeypatch.delenv("TORCHINDUCTOR_MAX_AUTOTUNE")
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert graph_store.graph_key(("step", (350, 12)), [str(src)]) != key
    monkeypatch.undo()
    src.write_text("a = 2\n")
    assert graph_store.graph_key(("step", (350, 12)), [str(src)]) != key


def test_a_missing_or_broken_entry_loads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    folder = graph_store.store_dir()
    assert folder == tmp_path / "sweeps-graphs"
    assert graph_store.load("absent") is None
    folder.mkdir()
    (folder / "garbled.json").write_text("{not json")
    assert graph_store.load("garbled") is None
    gone = {"format": 1, "module": "x.inductor_entry_cpp", "library": str(tmp_path / "gone.so")}
    (folder / "gone.json").write_text(json.dumps(gone))
    assert graph_store.load("gone") is None
    not_a_library = tmp_path / "fake.so"
    not_a_library.write_text("not ELF")
    broken = {**gone, "module": "y.inductor_entry_cpp", "library": str(not_a_library)}
    (folder / "broken.json").write_text(json.dumps(broken))
    assert graph_store.load("broken") is None


def test_save_indexes_only_one_new_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    before = graph_store.libraries()
    graph_store.save("none", before)  # nothing was loaded since
    assert not (tmp_path / "sweeps-graphs" / "none.json").exists()
    fakes = {}
    for name in ("a.inductor_entry_cpp", "b.inductor_entry_cpp"):
        fakes[name] = type(sys)(name)
        fakes[name].__file__ = str(tmp_path / f"{name}.so")
        monkeypatch.setitem(sys.modules, name, fakes[name])
    graph_store.save("two", before)  # ambiguous: which is this graph's?
    assert not (tmp_path / "sweeps-graphs" / "two.json").exists()
    graph_store.save("one", before | {"a.inductor_entry_cpp"})
    entry = json.loads((tmp_path / "sweeps-graphs" / "one.json").read_text())
    assert entry["module"] == "b.inductor_entry_cpp"
    assert entry["library"] == fakes["b.inductor_entry_cpp"].__file__
