"""Compiled graphs kept for later processes.

With ``cpp_wrapper`` Inductor builds each graph into a native library, which its own disk cache
keeps. A fresh process still has to import Inductor, trace the graph and key it before that
cache finds the library: ~4.5 s of every new Ray worker (docs/benchmarks.md). Here, once a
process has compiled a graph, a small index file names the library; a later process with the
same key loads it directly and calls it the way Inductor's generated module does. The library
is the same file, so the computation is the same bit for bit.

The key covers all that shapes the graph: the caller's parts (architecture, shapes, dtypes,
options), torch's and Python's versions, the CPU's vector ISA, the Inductor settings in the
environment and the source of the modules that build the graph. A missing or unloadable
library falls back to compiling, which writes the entry again.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from trainables.files import write_atomically

# The suffix of the module names under which Inductor loads a cpp_wrapper library.
_ENTRY = "inductor_entry_cpp"
# The library reads this address (a C function of torch's) from the environment when loaded.
_DATA_PTR_ENV = "_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR"
_FORMAT = 1


def store_dir() -> Path:
    """Beside Inductor's own cache (its default location, or $TORCHINDUCTOR_CACHE_DIR), so that
    clearing that cache clears this index too. Computed here: importing Inductor to ask it
    costs seconds, which is what this module saves."""
    base = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not base:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = f"uid_{os.getuid()}"
        user = re.sub(r'[\\/:*?"<>|]', "_", user)
        base = os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
    return Path(base) / "sweeps-graphs"


def graph_key(parts: tuple[Any, ...], sources: Iterable[str]) -> str:
    """A digest of ``parts`` (reprs) and of everything else a library depends on."""
    h = hashlib.sha256()
    settings = sorted(
        (k, v) for k, v in os.environ.items()
        if k.startswith("TORCHINDUCTOR_") and k != "TORCHINDUCTOR_CACHE_DIR"
    )  # fmt: skip
    for part in (
        _FORMAT, torch.__version__, sys.implementation.cache_tag,
        torch.backends.cpu.get_cpu_capability(), settings, parts,
    ):  # fmt: skip
        h.update(repr(part).encode())
    for path in sorted(set(sources)):
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def libraries() -> set[str]:
    """The cpp_wrapper libraries this process has loaded (to tell which one a compile added)."""
    return {name for name in sys.modules if name.endswith("." + _ENTRY)}


def save(key: str, before: set[str]) -> None:
    """Index the one library loaded since ``before`` under ``key``; nothing if there is not
    exactly one (the graph was not built as a library, or shared one already loaded)."""
    new = libraries() - before
    if len(new) != 1:
        return
    name = new.pop()
    path = getattr(sys.modules[name], "__file__", None)
    if not path:
        return
    entry = json.dumps({"format": _FORMAT, "module": name, "library": path}).encode()
    # A read-only or full disk costs later processes the compile, nothing more.
    with contextlib.suppress(OSError):
        write_atomically(store_dir() / f"{key}.json", lambda f: f.write(entry))


def load(key: str) -> Callable[..., Any] | None:
    """The graph indexed under ``key``, as ``(*tensors) -> outputs``; None if there is none or it
    cannot be loaded."""
    try:
        entry = json.loads((store_dir() / f"{key}.json").read_text())
        name, path = entry["module"], entry["library"]
        if entry.get("format") != _FORMAT or not os.path.isfile(path):
            return None
        module = sys.modules.get(name) or _load_library(name, path)
        return _call(getattr(module, _ENTRY))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError, RuntimeError):
        return None


def _load_library(name: str, path: str) -> ModuleType:
    guards: Any = torch._C._dynamo.guards
    os.environ[_DATA_PTR_ENV] = str(guards._torchinductor_pyobject_tensor_data_ptr)
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[name] = module  # as Inductor registers it, so a later compile reuses it
    return module


def _call(entry: Callable[[Any], Any]) -> Callable[..., Any]:
    """The library's entry point with tensors in and out, as Inductor's module wraps it: the
    inputs go in as handles, the outputs come back as handles the caller owns."""
    to_handles = torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors
    from_handles = torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs

    def call(*args: torch.Tensor) -> Any:
        return from_handles(entry(to_handles(list(args))))

    call.direct = True  # type: ignore[attr-defined]  # no per-call wrappers, as steps._direct
    return call
