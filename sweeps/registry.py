"""The built-in sweeps: YAML files in ``sweeps/specs``."""

from __future__ import annotations

from pathlib import Path

import yaml

from sweeps.errors import SpecError

SPECS_DIR = Path(__file__).parent / "specs"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def describe() -> list[tuple[str, str]]:
    """(name, description) of each built-in sweep."""
    out = []
    for name in builtin_names():
        data = yaml.safe_load((SPECS_DIR / f"{name}.yaml").read_text())
        out.append((name, str(data.get("description", ""))))
    return out


def resolve(name_or_path: str) -> Path:
    """The YAML file of a built-in name, or the given file."""
    if name_or_path in builtin_names():
        return SPECS_DIR / f"{name_or_path}.yaml"
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpecError(f"spec file {name_or_path!r}: must exist, but no such file")
        return path
    raise SpecError(
        f"sweep {name_or_path!r}: must be a built-in sweep ({', '.join(builtin_names())}) "
        "or a .yaml file, but it is neither"
    )
