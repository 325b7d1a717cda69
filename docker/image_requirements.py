"""Print the image's pinned requirements, one a line, read from pyproject.toml.

The Dockerfile installs these before it copies the code, so an edit to the code does not
reinstall Ray and MLflow. Besides the project's own dependencies the image needs:

- the ``postgres`` extra (psycopg2), because the compose MLflow service stores runs in Postgres;
- MLflow's ``auth`` extra (Flask-WTF), because that service runs ``--app-name basic-auth``, which
  refuses to import without it.

Usage: ``python image_requirements.py [PYPROJECT] [--torch]``; ``--torch`` prints only the torch
pin, which the Dockerfile installs first from the PyTorch index of the chosen base.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

EXTRAS = ("postgres",)
ADD_EXTRAS = {"mlflow": "auth"}
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?(.*)$")


def _with_extra(req: str, extra: str) -> str:
    m = _NAME.match(req.strip())
    if m is None:
        raise SystemExit(f"image_requirements: cannot parse the requirement {req!r}")
    name, extras, rest = m.group(1), m.group(2), m.group(3)
    have = [e.strip() for e in extras[1:-1].split(",")] if extras else []
    if extra not in have:
        have.append(extra)
    return f"{name}[{','.join(have)}]{rest}"


def _name(req: str) -> str:
    m = _NAME.match(req.strip())
    return m.group(1).lower().replace("_", "-") if m else ""


def requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    out = []
    for req in reqs:
        extra = ADD_EXTRAS.get(_name(req))
        out.append(_with_extra(req, extra) if extra else req.strip())
    return out


def torch_pin(reqs: list[str]) -> str:
    pins = [r for r in reqs if _name(r) == "torch"]
    if len(pins) != 1 or "==" not in pins[0]:
        raise SystemExit(
            "image_requirements: pyproject.toml must pin torch exactly once with ==, "
            f"but got {pins}"
        )
    return pins[0]


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    path = Path(args[0]) if args else Path("pyproject.toml")
    reqs = requirements(path)
    pin = torch_pin(reqs)
    print(pin if "--torch" in argv else "\n".join(reqs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
