"""Static checks of docker/: CI has no Docker engine, so check what can be checked without one.

- hadolint lints the Dockerfile;
- compose.yaml validates against the Compose specification's JSON schema (the copy vendored in
  check-jsonschema, so no network);
- every ``ray``/``mlflow`` command line in compose.yaml is parsed by that tool's own click CLI
  and its flags are checked against the tool's ``--help``;
- the wiring the CLIs cannot see: service and volume references, the worker's head address,
  the MLflow store, the secrets, the non-root user and the entrypoint of the image.

None of these tests skips: a missing tool is a failure, because CI installs the dev extra.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / "env.example"
README = DOCKER / "README.md"
DOCKERIGNORE = REPO / ".dockerignore"
IMAGE_REQUIREMENTS = DOCKER / "image_requirements.py"

HEAD, WORKER, GPU_WORKER, MLFLOW, POSTGRES = (
    "ray-head", "ray-worker", "ray-worker-gpu", "mlflow", "postgres",
)  # fmt: skip
RAY_SERVICES = (HEAD, WORKER, GPU_WORKER)
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET")
# Only what the issue asks for: the values a user must set, everything else has a default.
REQUIRED_VARIABLES = {
    "RAY_AUTH_TOKEN",
    "POSTGRES_PASSWORD",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
}
TOOL_TIMEOUT_S = 120


def tool(name: str) -> str:
    """The tool from the running interpreter's environment (the venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    assert found, f"{name} is not installed; it comes with the dev extra (pip install -e '.[dev]')"
    return found


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False, **kw
    )


# ---- compose variable interpolation (the subset compose.yaml uses, checked strictly) ----------


class MissingVariableError(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


_EXPR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-|:\?|\?|:\+|\+)(.*))?", re.DOTALL)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Resolve ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, nesting and ``$$``."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if j >= len(value):
                    raise ValueError(f"an unclosed ${{ in {value!r}")
                if value.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                depth -= value[j] == "}"
                j += 1
            out.append(_resolve(value[i + 2 : j - 1], env))
            i = j
        elif (m := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)", value[i:])) is not None:
            out.append(env.get(m.group(1), ""))
            i += m.end()
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _resolve(expr: str, env: Mapping[str, str]) -> str:
    m = _EXPR.fullmatch(expr)
    if m is None:
        raise ValueError(f"compose cannot interpolate ${{{expr}}}")
    name, op, arg = m.groups()
    val = env.get(name)
    is_set = bool(val) if op and op.startswith(":") else val is not None
    if op in (":-", "-"):
        return val if is_set and val is not None else interpolate(arg, env)
    if op in (":?", "?"):
        if not is_set or val is None:
            raise MissingVariableError(name, interpolate(arg, env))
        return val
    if op in (":+", "+"):
        return interpolate(arg, env) if is_set else ""
    return val or ""


def variables(text: str) -> tuple[set[str], set[str]]:
    """All variable names the text refers to, and those marked required with ``?``."""
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", text))
    return names, required


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(x, env) for x in node]
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    return node


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the `<<` merge keys
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


@pytest.fixture(scope="module")
def user_env() -> dict[str, str]:
    """What a user's docker/.env sets: the required variables, nothing else."""
    return {name: f"test-{name.lower()}" for name in REQUIRED_VARIABLES}


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], user_env: dict[str, str]) -> dict[str, Any]:
    """compose.yaml as compose would see it with that .env (defaults filled in)."""
    return resolve(raw_compose, user_env)


def argv_of(service: dict[str, Any]) -> list[str]:
    """The process a service runs: its entrypoint followed by its command."""
    argv: list[str] = []
    for key in ("entrypoint", "command"):
        part = service.get(key)
        if part is None:
            continue
        argv += shlex.split(part) if isinstance(part, str) else [str(x) for x in part]
    return argv


def healthcheck_argv(service: dict[str, Any]) -> list[str] | None:
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test and test[0] == "CMD":
        return [str(x) for x in test[1:]]
    if isinstance(test, list) and test and test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    if isinstance(test, str):
        return shlex.split(test)
    return None


def cli_command_lines(compose: dict[str, Any]) -> dict[str, list[str]]:
    """Every ray/mlflow command line in the file: the services' processes and health checks."""
    lines: dict[str, list[str]] = {}
    for name, svc in compose["services"].items():
        for label, argv in (("", argv_of(svc)), (" healthcheck", healthcheck_argv(svc))):
            if argv and argv[0] in ("ray", "mlflow"):
                lines[f"{name}{label}"] = argv
    return lines


# Parses command lines with each tool's own click command, without running it: make_context
# resolves every option, converts its type (an INTEGER port, a Choice of app names) and raises
# for an unknown one. It also returns the command's help, the text `TOOL SUB --help` prints.
# One child process for all lines: Ray and MLflow are slow to import and stay out of pytest.
_PARSE = r"""
import json, sys
from importlib.metadata import entry_points
import click

def command_for(prog):
    eps = {ep.value: ep for ep in entry_points(group="console_scripts", name=prog)}
    assert len(eps) == 1, f"{prog}: {sorted(eps)}"
    obj = next(iter(eps.values())).load()
    if not isinstance(obj, click.Command):  # ray's script is main(), which runs the group `cli`
        obj = sys.modules[obj.__module__].cli
    return obj

def parse(argv):
    cmd, name, args, ctx = command_for(argv[0]), argv[0], list(argv[1:]), None
    while isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=name, parent=ctx)
        name = args.pop(0) if args else ""
        sub = cmd.get_command(ctx, name)
        if sub is None:
            return {"error": f"{argv[0]} has no subcommand {name!r}", "help": ""}
        cmd = sub
    help_text = cmd.get_help(click.Context(cmd, info_name=name, parent=ctx))
    try:
        with cmd.make_context(name, args, parent=ctx) as sub_ctx:
            return {"options": dict(sub_ctx.params), "help": help_text}
    except click.ClickException as exc:
        return {"error": exc.format_message(), "help": help_text}

print(json.dumps([parse(a) for a in json.load(sys.stdin)], default=str))
"""
# A line each tool must reject: proves the parser above is not a rubber stamp.
BROKEN_LINES = {
    "broken ray": ["ray", "start", "--head", "--no-such-flag"],
    "broken mlflow": ["mlflow", "server", "--app-name", "no-such-app"],
}


@pytest.fixture(scope="module")
def parsed(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each ray/mlflow command line parsed by its CLI: its options or error, and its help."""
    lines = {**cli_command_lines(compose), **BROKEN_LINES}
    proc = run([sys.executable, "-c", _PARSE], input=json.dumps(list(lines.values())))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: {**r, "argv": argv} for (k, argv), r in zip(lines.items(), results, strict=True)}


def options(parsed: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    assert "options" in parsed[key], f"{key}: {parsed[key].get('error')}"
    return parsed[key]["options"]


# ---- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue  # Docker drops comment lines, also inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued instruction"
    return out


def stages(instrs: list[tuple[str, str]]) -> tuple[list[str], dict[str, tuple[str, list]]]:
    """The global ARGs, and each stage by name: (its base, its instructions)."""
    global_args: list[str] = []
    found: dict[str, tuple[str, list]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in instrs:
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].lower() == "as" else f"#{len(found)}"
            current = []
            found[name] = (parts[0], current)
        elif current is None:
            assert word == "ARG", f"only ARG may precede the first FROM, not {word}"
            global_args.append(rest)
        else:
            current.append((word, rest))
    return global_args, found


def arg_default(instrs: list[tuple[str, str]], name: str) -> str | None:
    for word, rest in instrs:
        if word == "ARG" and rest.partition("=")[0] == name:
            return rest.partition("=")[2] or None
    return None


@pytest.fixture(scope="module")
def dockerfile() -> tuple[list[str], dict[str, tuple[str, list]]]:
    return stages(dockerfile_instructions(DOCKERFILE.read_text()))


def test_hadolint_passes() -> None:
    proc = run([tool("hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)])
    assert proc.returncode == 0, f"hadolint found problems:\n{proc.stdout}{proc.stderr}"


def test_image_runs_as_a_non_root_user_that_exists(dockerfile: tuple) -> None:
    _, found = dockerfile
    final = list(found.values())[-1][1]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage must set USER; without it the container runs as root"
    user = users[-1].partition(":")[0]
    assert user not in ("root", "0", ""), f"USER must not be root, but is {users[-1]!r}"
    # The user needs a passwd entry and a home: platformdirs puts the data cache under $HOME.
    creates = " ".join(rest for word, rest in final if word == "RUN" and "useradd" in rest)
    assert re.search(rf"useradd\b[^&;]*--uid[ =]{user}\b", creates), (
        f"USER {user} must be created in the final stage (useradd --uid {user})"
    )
    assert re.search(r"useradd\b[^&;]*--create-home", creates), "the user needs a home directory"


def test_entrypoint_is_the_sweeps_cli(dockerfile: tuple) -> None:
    _, found = dockerfile
    final = list(found.values())[-1][1]
    entrypoints = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert entrypoints, "the final stage must set an ENTRYPOINT"
    # Exec form (JSON) so arguments such as `cardio_clr` reach the CLI and signals reach Python.
    assert json.loads(entrypoints[-1]) == ["python", "-m", "sweeps.run"]
    run_py = REPO / "sweeps" / "run.py"
    assert run_py.is_file(), "the entrypoint's module sweeps/run.py is missing"
    assert re.search(r"^if __name__ == .__main__.:", run_py.read_text(), re.M), (
        "`python -m sweeps.run` does nothing without a __main__ guard in sweeps/run.py"
    )


def test_dockerfile_has_a_cpu_default_and_a_cuda_base(dockerfile: tuple) -> None:
    global_args, found = dockerfile
    assert "VARIANT=cpu" in global_args, "the CPU base must be the default (ARG VARIANT=cpu)"
    final_base = list(found.values())[-1][0]
    assert final_base == "base-${VARIANT}", (
        f"the image must start from base-${{VARIANT}}, not {final_base}"
    )
    assert found["base-cpu"][0] == "python:3.11-slim"
    assert found["base-cuda"][0].startswith("nvidia/cuda:") and "runtime" in found["base-cuda"][0]
    assert (
        arg_default(found["base-cpu"][1], "TORCH_INDEX_URL")
        == "https://download.pytorch.org/whl/cpu"
    )
    cuda_index = arg_default(found["base-cuda"][1], "TORCH_INDEX_URL") or ""
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", cuda_index), cuda_index
    cuda_runs = " ".join(rest for word, rest in found["base-cuda"][1] if word == "RUN")
    assert "python3.11 -m venv /opt/venv" in cuda_runs, "the CUDA base must provide Python 3.11"
    # Both bases must say where their torch comes from, and only in the final stage is it used.
    for base in ("base-cpu", "base-cuda"):
        envs = " ".join(rest for word, rest in found[base][1] if word == "ENV")
        assert "TORCH_INDEX_URL=${TORCH_INDEX_URL}" in envs, f"{base} must pass the index on (ENV)"


def test_torch_is_installed_from_the_pytorch_index_before_the_rest(dockerfile: tuple) -> None:
    _, found = dockerfile
    final = list(found.values())[-1][1]
    runs = " && ".join(rest for word, rest in final if word == "RUN")
    torch_at = runs.find('--index-url "${TORCH_INDEX_URL}" --requirement /tmp/torch.txt')
    rest_at = runs.find("--requirement /tmp/requirements.txt")
    project_at = runs.find("pip install --no-cache-dir .")
    assert torch_at >= 0, "torch must be installed from ${TORCH_INDEX_URL}"
    assert 0 <= torch_at < rest_at < project_at, (
        "order must be: torch from the PyTorch index, the pinned requirements, the project; "
        "otherwise pip resolves torch==2.13.0 from PyPI and pulls the CUDA build"
    )
    copies = [rest for word, rest in final if word == "COPY"]
    assert ". ." in copies, "the project must be copied in (COPY . .) before `pip install .`"


def image_requirements(*args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(IMAGE_REQUIREMENTS), *args])


def test_image_requirements_follow_pyproject() -> None:
    proc = image_requirements(str(REPO / "pyproject.toml"))
    assert proc.returncode == 0, proc.stderr
    reqs = proc.stdout.split()
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (torch,) = [d for d in project["dependencies"] if d.startswith("torch")]
    (mlflow,) = [d for d in project["dependencies"] if d.startswith("mlflow")]
    assert torch in reqs, "the image must install the torch version pyproject.toml pins"
    # The compose MLflow server runs --app-name basic-auth, which needs mlflow's auth extra.
    assert mlflow.replace("mlflow", "mlflow[auth]", 1) in reqs
    for dep in project["optional-dependencies"]["postgres"]:
        assert dep in reqs, f"{dep}: the MLflow service needs the postgres extra"
    only = image_requirements(str(REPO / "pyproject.toml"), "--torch")
    assert only.returncode == 0 and only.stdout.split() == [torch]


def test_image_requirements_refuse_an_unpinned_torch(tmp_path: Path) -> None:
    bad = tmp_path / "pyproject.toml"
    bad.write_text(
        '[project]\ndependencies = ["torch>=2", "mlflow==3.17.2"]\n'
        '[project.optional-dependencies]\npostgres = ["psycopg2-binary==2.9.13"]\n'
    )
    proc = image_requirements(str(bad))
    assert proc.returncode != 0 and "torch" in proc.stderr


# ---- .dockerignore ------------------------------------------------------------------------------


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per pattern, with Docker's rules: `*` stays in one path segment,
    `**` spans segments, a pattern that matches a folder excludes everything in it."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line.lstrip("!").strip().lstrip("/")
        rx, i = "", 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif pat[i] == "[":
                end = pat.index("]", i)
                rx, i = rx + pat[i : end + 1], end + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        rules.append((negate, re.compile(rx + r"\Z")))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    result = False
    for negate, rx in rules:  # the last matching pattern decides
        if any(rx.match(p) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    rules = dockerignore_rules()
    needed = ["pyproject.toml", "README.md", "docker/Dockerfile", "docker/image_requirements.py"]
    for pkg in ("sweeps", "search_spaces", "trainables"):
        needed += [str(p.relative_to(REPO)) for p in (REPO / pkg).rglob("*") if p.is_file()]
    needed = [p for p in needed if "__pycache__" not in p and not p.endswith(".pyc")]
    assert any(p.startswith("sweeps/specs/") for p in needed)
    kept_out = [p for p in needed if ignored(p, rules)]
    assert not kept_out, f".dockerignore drops files `pip install .` needs: {kept_out}"
    unwanted = [
        ".venv/bin/python", ".git/HEAD", "mlruns/0/meta.yaml", "mlflow.db", "mlartifacts/1/a",
        "data/cardio_train.csv", "elsewhere/cardio_train.csv", ".mypy_cache/x", ".ruff_cache/x",
        ".pytest_cache/x", "sweeps/__pycache__/run.cpython-311.pyc", "docker/.env",
        "ray_results/exp/trial", "sweeps_results/x",
    ]  # fmt: skip
    sent = [p for p in unwanted if not ignored(p, rules)]
    assert not sent, f".dockerignore must keep these out of the build context: {sent}"


# ---- compose.yaml -----------------------------------------------------------------------------


def test_compose_matches_the_compose_spec() -> None:
    # A proxy that refuses every connection: if the check tried to download its schema (or
    # anything else), it would fail here instead of quietly needing the network in CI.
    offline = {
        **os.environ,
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    offline |= {"http_proxy": offline["HTTP_PROXY"], "https_proxy": offline["HTTPS_PROXY"]}
    offline.pop("NO_PROXY", None)
    offline.pop("no_proxy", None)
    argv = [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]
    proc = run(argv, env=offline)
    assert proc.returncode == 0, (
        f"compose.yaml breaks the compose spec:\n{proc.stdout}{proc.stderr}"
    )


def test_compose_schema_check_catches_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  ray-head:\n    image: x\n    entrypiont: [ray]\n")
    argv = [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)]
    assert run(argv).returncode != 0, "the schema check must reject an unknown service key"


def test_the_services_the_issue_asks_for(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {HEAD, WORKER, GPU_WORKER, MLFLOW, POSTGRES}


def test_every_ray_and_mlflow_command_parses_with_its_own_cli(parsed: dict) -> None:
    for key in BROKEN_LINES:
        assert "error" in parsed[key], f"the parser accepted a broken line: {key}"
    errors = {k: v["error"] for k, v in parsed.items() if k not in BROKEN_LINES and "error" in v}
    assert not errors, f"command lines their own CLI rejects: {errors}"
    assert {HEAD, WORKER, GPU_WORKER, MLFLOW, f"{HEAD} healthcheck"} <= set(parsed)


def flags_missing_from_help(argv: list[str], help_text: str) -> list[str]:
    flags = [a.partition("=")[0] for a in argv[2:] if a.startswith("--")]
    return [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", help_text)]


def test_every_flag_appears_in_the_tools_help(parsed: dict) -> None:
    broken = parsed["broken ray"]
    assert flags_missing_from_help(broken["argv"], broken["help"]) == ["--no-such-flag"]
    assert "--dashboard-host" in parsed[HEAD]["help"] and "--app-name" in parsed[MLFLOW]["help"]
    for where, line in parsed.items():
        if where not in BROKEN_LINES:
            missing = flags_missing_from_help(line["argv"], line["help"])
            assert not missing, f"{where}: `{' '.join(line['argv'][:2])} --help` lacks {missing}"


def test_depends_on_names_real_services_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        deps = {d: {} for d in deps} if isinstance(deps, list) else deps
        for dep, how in deps.items():
            assert dep in services, f"{name} depends on {dep}, which is no service"
            assert dep != name
            if (how or {}).get("condition") == "service_healthy":
                hc = services[dep].get("healthcheck") or {}
                assert hc.get("test") and not hc.get("disable"), (
                    f"{name} waits for {dep} to be healthy, but {dep} has no health check"
                )
            # compose refuses a default service that depends on one only a profile starts
            if not svc.get("profiles"):
                assert not services[dep].get("profiles"), f"{name} depends on profiled {dep}"
    assert services[MLFLOW]["depends_on"][POSTGRES]["condition"] == "service_healthy"
    assert services[WORKER]["depends_on"][HEAD]["condition"] == "service_healthy"


def mounts(svc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) for each entry under a service's volumes."""
    out = []
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            out.append((v["type"], v.get("source", ""), v["target"]))
            continue
        parts = v.split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append((kind, source, target))
    return out


def test_named_volumes_and_configs_are_declared_and_used(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in compose["services"].items():
        for kind, source, target in mounts(svc):
            assert target.startswith("/"), f"{name}: mount target {target!r} must be absolute"
            if kind == "volume" and source:
                assert source in declared, f"{name} mounts volume {source!r}, not declared"
                used.add(source)
        for cfg in svc.get("configs", []):
            src = cfg["source"] if isinstance(cfg, dict) else cfg
            assert src in (compose.get("configs") or {}), f"{name} uses undeclared config {src}"
    assert declared == used, f"declared volumes nothing mounts: {declared - used}"


def test_ray_nodes_share_storage_and_data(compose: dict[str, Any]) -> None:
    services = compose["services"]
    shared = {
        s: {t: src for k, src, t in mounts(services[s]) if k == "volume"} for s in RAY_SERVICES
    }
    head_shared = shared[HEAD].get("/shared")
    assert head_shared, "the head must mount a named volume at /shared for Tune's storage_path"
    for s in RAY_SERVICES:
        assert shared[s].get("/shared") == head_shared, f"{s} must mount the head's /shared volume"
        assert any(t == "/data" for _, _, t in mounts(services[s])), f"{s} must mount /data"
        assert services[s]["environment"]["SWEEPS_DATA_DIR"] == "/data"
    # The README's storage path must lie on that volume, or trials on other nodes lose results.
    storage = re.search(r"--set storage=(\S+)", README.read_text())
    assert storage and storage.group(1).startswith("/shared/"), "README: --set storage=/shared/..."


def test_worker_joins_the_head_by_service_name(parsed: dict, compose: dict[str, Any]) -> None:
    head = options(parsed, HEAD)
    assert head["head"] and head["block"], "the head must run `ray start --head --block`"
    for worker in (WORKER, GPU_WORKER):
        opts = options(parsed, worker)
        assert opts["block"] and not opts["head"], f"{worker}: ray start --address=... --block"
        host, _, port = str(opts["address"]).rpartition(":")
        assert host == HEAD, f"{worker} must join the head service, not {host!r}"
        assert int(port) == head["port"], (
            f"{worker} joins port {port}, the head is on {head['port']}"
        )
    hc = options(parsed, f"{HEAD} healthcheck")
    assert str(hc["address"]).endswith(f":{head['port']}"), "the health check must ask the GCS"


def published(svc: dict[str, Any]) -> dict[int, str]:
    """container port -> the host side (ip:port) it is published on."""
    out = {}
    for p in svc.get("ports", []):
        *host, container = str(p).split(":")
        out[int(container.split("/")[0])] = ":".join(host)
    return out


def test_head_publishes_gcs_and_dashboard(parsed: dict, compose: dict[str, Any]) -> None:
    head = options(parsed, HEAD)
    assert head["dashboard_host"] == "0.0.0.0", "a dashboard on loopback is unreachable via Docker"
    ports = published(compose["services"][HEAD])
    assert head["port"] == 6379 and 6379 in ports, "publish the GCS port 6379"
    assert head["dashboard_port"] == 8265 and 8265 in ports, "publish the dashboard/job port 8265"
    assert ports[8265].endswith(":8265"), "the README sends clients to 127.0.0.1:8265"


def test_workers_scale_and_the_gpu_worker_has_a_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for s in (WORKER, GPU_WORKER):
        # --scale starts N copies: a fixed name or a host port would clash between them.
        assert "container_name" not in services[s], f"{s} cannot scale with a container_name"
        assert not services[s].get("ports"), f"{s} cannot scale with published ports"
    assert not services[WORKER].get("profiles"), "the CPU worker must start without a profile"
    gpu = services[GPU_WORKER]
    assert gpu.get("profiles") == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert gpu["build"]["args"]["VARIANT"] == "cuda", "the GPU worker needs the CUDA image"
    assert services[WORKER]["build"]["args"]["VARIANT"] == "cpu"


def test_images_build_from_this_dockerfile(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name == POSTGRES:
            assert svc["image"] == "postgres:16"
            continue
        build = svc["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO, f"{name}: the build context must be the repo root (pip install .)"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        assert svc.get("entrypoint"), f"{name} must override the image's sweeps.run entrypoint"


def test_ray_token_auth_is_on_everywhere(compose: dict[str, Any], user_env: dict) -> None:
    for s in RAY_SERVICES:
        env = compose["services"][s]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", f"{s}: RAY_AUTH_MODE must be token"
        assert env["RAY_AUTH_TOKEN"] == user_env["RAY_AUTH_TOKEN"], f"{s}: token from .env"


def test_secrets_have_no_defaults(raw_compose: dict[str, Any]) -> None:
    """Without docker/.env compose must stop, not start with a built-in password."""
    names, required = variables(COMPOSE.read_text())
    assert required == REQUIRED_VARIABLES
    for name, svc in raw_compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if any(w in key for w in SECRET_WORDS) and isinstance(value, str):
                try:
                    interpolate(value, {})
                except MissingVariableError:
                    continue
                pytest.fail(f"{name}: {key} has a built-in default; it must come from .env")
    with pytest.raises(MissingVariableError):
        resolve(raw_compose["configs"], {})  # the auth store's URL holds the DB password
    # Every variable is documented in env.example, the required ones as blanks to fill.
    example = ENV_EXAMPLE.read_text()
    for var in names:
        assert re.search(rf"^#? ?{var}=", example, re.M), f"env.example must document {var}"
    for var in REQUIRED_VARIABLES:
        assert re.search(rf"^{var}=$", example, re.M), f"env.example: `{var}=` to fill in"


def test_mlflow_server_uses_postgres_artifacts_volume_and_basic_auth(
    parsed: dict, compose: dict[str, Any]
) -> None:
    opts = options(parsed, MLFLOW)
    store = urlsplit(opts["backend_store_uri"])
    assert store.scheme.startswith("postgresql"), "the backend store must be Postgres"
    assert store.hostname == POSTGRES and store.port == 5432 and store.path == "/mlflow"
    pg_env = compose["services"][POSTGRES]["environment"]
    assert store.username == pg_env["POSTGRES_USER"] and store.path[1:] == pg_env["POSTGRES_DB"]
    assert store.password == pg_env["POSTGRES_PASSWORD"], "MLflow and Postgres disagree"
    svc = compose["services"][MLFLOW]
    volume_targets = {t for kind, _, t in mounts(svc) if kind == "volume"}
    assert opts["artifacts_destination"] in volume_targets, "artifacts must live on a volume"
    assert opts["app_name"] == "basic-auth"
    assert opts["host"] == "0.0.0.0" and opts["port"] in published(svc)
    # Ray nodes reach MLflow as http://mlflow:5000; its Host-header check must let that in.
    allowed = opts["allowed_hosts"].split(",")
    for host in ("mlflow:5000", "127.0.0.1:5000", "localhost:5000"):
        assert any(re.fullmatch(re.escape(a).replace(r"\*", ".*"), host) for a in allowed), host
    for s in RAY_SERVICES:
        uri = urlsplit(compose["services"][s]["environment"]["MLFLOW_TRACKING_URI"])
        assert uri.hostname == MLFLOW and uri.port == opts["port"], f"{s} logs elsewhere"


def test_mlflow_auth_store_is_configured(compose: dict[str, Any]) -> None:
    svc = compose["services"][MLFLOW]
    env = svc["environment"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] and env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    (cfg,) = [c for c in svc["configs"] if c["target"] == env["MLFLOW_AUTH_CONFIG_PATH"]]
    ini = configparser.ConfigParser()
    ini.read_string(compose["configs"][cfg["source"]]["content"])
    auth_db = urlsplit(ini["mlflow"]["database_uri"])
    assert auth_db.hostname == POSTGRES and auth_db.path == "/mlflow_auth"
    assert ini["mlflow"]["default_permission"] in ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
    # Postgres must create that database on first start.
    pg = compose["services"][POSTGRES]
    inits = [c for c in pg["configs"] if c["target"].startswith("/docker-entrypoint-initdb.d/")]
    sql = " ".join(compose["configs"][c["source"]]["content"] for c in inits)
    assert re.search(r"CREATE DATABASE\s+mlflow_auth\b", sql, re.I)


def test_postgres_has_a_volume_and_a_health_check(compose: dict[str, Any]) -> None:
    pg = compose["services"][POSTGRES]
    assert ("volume", "pgdata", "/var/lib/postgresql/data") in mounts(pg)
    argv = healthcheck_argv(pg)
    assert argv and argv[0] == "pg_isready", "postgres needs a pg_isready health check"
    # Over TCP: during first-start initialisation the image serves only the Unix socket.
    assert any(a.startswith(("--host=", "-h")) for a in argv), "pg_isready must check over TCP"


def test_interpolation_helper_follows_compose() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d}/${UNSET:-d}/${EMPTY:-d}/${EMPTY-d}/$$X", env) == "v/d/d//$X"
    assert interpolate("${UNSET:-${SET:-x}}", env) == "v"
    with pytest.raises(MissingVariableError):
        interpolate("${EMPTY:?must be set}", env)


def test_readme_documents_bring_up_submit_and_uis(compose: dict[str, Any]) -> None:
    flat = " ".join(README.read_text().replace("\\\n", " ").split())
    for needle in (
        "docker compose -f docker/compose.yaml up -d",
        "--scale ray-worker=",
        "--profile gpu",
        "python -m sweeps.submit cardio_clr --address http://127.0.0.1:8265",
        "RAY_AUTH_MODE=token",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "SWEEPS_DATA_DIR",
        "http://127.0.0.1:5000",
        "http://127.0.0.1:8265",
    ):
        assert needle in flat, f"docker/README.md must mention {needle!r}"
    mlflow_port = next(iter(published(compose["services"][MLFLOW])))
    assert f"--tracking-uri http://mlflow:{mlflow_port}" in flat
