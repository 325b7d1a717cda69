"""CLI: ``python -m sweeps.submit NAME|FILE [--address http://HEAD:8265]``: a sweep as a Ray job.

The job runs ``python -m sweeps.run`` on the cluster's head node, with this project as its
``working_dir``. This process checks the spec first (a typo fails here, not on the cluster), uploads
the code, then follows the job's log until the job ends. ``--status`` and ``--logs`` answer later.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import secrets
import shlex
import shutil
import site
import socket
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from sweeps.errors import (
    EXIT_INTERRUPTED,
    OneLineParser,
    SweepsError,
    fail,
    first_line,
    format_validation_error,
    redact,
)
from sweeps.registry import builtin_names
from sweeps.spec import SweepSpec, load_spec

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

EXIT_OK, EXIT_JOB_FAILED = 0, 1
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sweeps", "search_spaces", "trainables")  # all `python -m sweeps.run` imports
# Never uploaded: environments, VCS state, caches, run outputs, data, secrets. gitignore syntax,
# the same as Ray's own `excludes`; .gitignore and .rayignore files apply on top, as in Ray.
EXCLUDES = [
    ".git/", ".venv/", "venv/", "**/__pycache__/", "*.py[cod]", "*.egg-info/", ".mypy_cache/",
    ".ruff_cache/", ".pytest_cache/", ".cache/", "build/", "dist/", ".gl/",
    "/data/", "*.csv", "*.zip", "*.parquet",
    "mlruns/", "mlartifacts/", "mlflow.db", "*.db", "sweeps_results/", "ray_results/",
    "docs/img/", ".env", ".env.*",
]  # fmt: skip
# Where a spec file from outside the project travels inside the working_dir.
STAGED_SPECS = "_submitted_specs"
# Local variables the job needs as well; MLflow's credentials among them (see --help).
FORWARDED_ENV = (
    "SWEEPS_DATA_DIR",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
)
# The jobs SDK lets these override any address it is given; we resolve the address ourselves.
_ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
_LARGE_UPLOAD = 50 * 2**20
_CHATTY_LOGGERS = (
    "ray.dashboard.modules.job.sdk",
    "ray.dashboard.modules.dashboard_sdk",
    "ray._private.runtime_env.packaging",
    "ray._private.runtime_env.working_dir",
)
_HTTP_TIMEOUT_S = 60.0  # per socket operation: an address that swallows packets fails, not hangs

EPILOG = """\
address: --address, else $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS when it is an http(s):// URL,
  else http://127.0.0.1:8265 (the head's dashboard; a Ray Jobs server needs ray[default]).
the job: `python -m sweeps.run NAME|FILE --set ...` in this project's code (uploaded, see
  sweeps.submit.EXCLUDES), run by the first `python` on the head's PATH, which needs the
  project's dependencies (the docker/ image has them). A spec FILE from outside the project
  travels in a temporary copy of the project, under _submitted_specs/.
token authentication (Ray 2.60 has it on): set RAY_AUTH_MODE=token and the cluster's token in
  $RAY_AUTH_TOKEN or ~/.ray/auth_token; the token stays here, it is not sent along with the job.
the job's environment: PYTHONUNBUFFERED=1; MLFLOW_TRACKING_URI (--tracking-uri, else the local
  $MLFLOW_TRACKING_URI); and, when set here, SWEEPS_DATA_DIR (a path on the cluster's nodes),
  MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN,
  MLFLOW_TRACKING_INSECURE_TLS, and every --env NAME. These credentials travel to the cluster:
  they are stored with the job and shown in the dashboard to everyone who can open it.
exit codes: 0 the job SUCCEEDED (or was submitted, with --no-wait; with --status: it has not
  FAILED and was not STOPPED); 1 it FAILED or was STOPPED,
  or the dashboard stopped answering while we waited; 2 a mistake here (spec, option, address,
  token, unknown job id); 130 interrupted (the job keeps running).
"""


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m sweeps.submit",
        description="Run a sweep on a Ray cluster as a Ray job, and follow its log.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sweep", nargs="?", help="a built-in sweep name or a YAML file")
    p.add_argument("--address", help="the Ray dashboard, http://HEAD:8265 (see below)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="dotted.key=value",
        help="override a spec field (repeatable); checked here, then passed to the job",
    )  # fmt: skip
    p.add_argument("--tracking-uri", help="MLflow tracking URI, as the cluster reaches it")
    p.add_argument("--storage", help="Ray storage_path on the cluster (shared by its nodes)")
    p.add_argument("--max-concurrent", type=int, help="at most N trials at once")
    p.add_argument(
        "--env", dest="env", action="append", default=[], metavar="NAME[=VALUE]",
        help="also set NAME in the job's environment (its local value if no VALUE; repeatable)",
    )  # fmt: skip
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("--status", metavar="JOB_ID", help="print a job's status")
    p.add_argument("--logs", metavar="JOB_ID", help="print a job's log so far")
    return p


# -- address and connection ---------------------------------------------------------------------
def resolve_address(cli_value: str | None) -> str:
    """The dashboard's URL: --address, else an http(s) $RAY_API_SERVER_ADDRESS/$RAY_ADDRESS."""
    if cli_value:
        address = cli_value.strip().rstrip("/")
        if "://" not in address:
            address = f"http://{address}"
        if not address.startswith(("http://", "https://")):
            raise SweepsError(
                "--address: the Ray dashboard's http(s)://HEAD:8265 URL must be given, but got "
                f"{cli_value!r} (ray:// and GCS addresses are for `python -m sweeps.run`)"
            )
        return address
    for name in _ADDRESS_ENV:
        value = os.environ.get(name, "").strip()
        if value.startswith(("http://", "https://")):
            return value.rstrip("/")
    return DEFAULT_ADDRESS


@contextmanager
def _without_address_env() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in _ADDRESS_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: str) -> JobSubmissionClient:
    """A client for the Jobs API at ``address``; a user error if it is unreachable or refuses us."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    for name in _CHATTY_LOGGERS:  # per-file INFO lines about packaging; we print one summary
        logging.getLogger(name).setLevel(logging.ERROR)

    try:
        with _without_address_env():
            return JobSubmissionClient(address)
    except AuthenticationError as exc:
        raise SweepsError(
            f"--address: the Ray dashboard at {address} must accept this client's token (set "
            "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or "
            f"~/.ray/auth_token), but it answered: {first_line(exc)}"
        ) from None
    except (OSError, RuntimeError, ValueError) as exc:  # requests' errors are OSErrors
        raise SweepsError(
            f"--address: the Ray dashboard at {address} must be reachable, but {first_line(exc)}"
        ) from None


# -- what travels to the cluster ----------------------------------------------------------------
def _ignore_rules(lines: Sequence[str]) -> Any:
    # Ray's own copy of pathspec, which its packer matches with: the same rules, the same files.
    from ray._private.thirdparty.pathspec import PathSpec

    return PathSpec.from_lines("gitwildmatch", lines)


def upload_files(root: Path) -> list[Path]:
    """The files (relative to ``root``) that Ray packs from ``root`` with :data:`EXCLUDES`.

    Mirrors Ray's rules: EXCLUDES, then every .gitignore (unless
    RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1) and .rayignore, each relative to its own directory.
    """
    ignore_files = [".rayignore"]
    if os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1":
        ignore_files.append(".gitignore")
    found: list[Path] = []

    def walk(directory: Path, rules: list[tuple[Path, Any]]) -> None:
        rules = list(rules)
        for name in ignore_files:
            f = directory / name
            if f.is_file():
                rules.append((directory, _ignore_rules(f.read_text().splitlines())))
        for child in sorted(directory.iterdir()):
            is_dir = child.is_dir()
            if any(
                spec.match_file(child.relative_to(base).as_posix() + ("/" if is_dir else ""))
                for base, spec in rules
            ):
                continue
            if is_dir:
                walk(child, rules)
            elif child.is_file():
                found.append(child.relative_to(root))

    walk(root, [(root, _ignore_rules(EXCLUDES))])
    return found


def is_checkout(root: Path) -> bool:
    """A source tree (pyproject.toml beside the packages), not an installed copy."""
    return (root / "pyproject.toml").is_file() and all((root / p).is_dir() for p in PACKAGES)


def _installed_files() -> list[tuple[Path, Path]]:
    """(source, relative destination) of every file of the installed packages."""
    out = []
    for pkg in PACKAGES:
        found = importlib.util.find_spec(pkg)
        if found is None or not found.submodule_search_locations:
            raise SweepsError(f"package {pkg!r}: must be importable here, but it is not")
        src = Path(next(iter(found.submodule_search_locations)))
        out += [
            (f, Path(pkg) / f.relative_to(src))
            for f in sorted(src.rglob("*"))
            if f.is_file() and "__pycache__" not in f.parts
        ]
    return out


@dataclass(frozen=True)
class WorkingDir:
    path: Path  # what runtime_env["working_dir"] names
    spec_arg: str  # what `python -m sweeps.run` gets there: a name or a relative path
    files: int
    size: int  # bytes before compression


@contextmanager
def working_dir(
    sweep: str, root: Path = PROJECT_ROOT, extra: Sequence[Path] = ()
) -> Iterator[WorkingDir]:
    """The project root when everything the job needs is in it, else a temporary copy.

    A built-in name, or a spec file inside the project that Ray uploads, runs from the project
    root as it is. A spec file from elsewhere, ``extra`` modules or packages (the spec's own
    trainable: ``trainable_modules``), or an installed, non-checkout sweeps get a temporary
    directory with the project's uploadable files, the extras at its top (where the job's
    driver and workers import from), and the spec under ``_submitted_specs/``: one
    self-contained working_dir, so the entrypoint names the spec by a relative path and nothing
    depends on where Ray unpacks a second package. It lives until ``submit_job`` has uploaded it.
    """
    spec_file = None if sweep in builtin_names() else Path(sweep).expanduser().resolve()
    if is_checkout(root):
        sources = [(root / rel, rel) for rel in upload_files(root)]
        uploaded = {rel for _, rel in sources}
        if spec_file is None and not extra:
            yield _described(root, sweep, sources)
            return
        inside = None
        if spec_file is not None and spec_file.is_relative_to(root):
            inside = spec_file.relative_to(root)
        if inside is not None and inside in uploaded and not extra:
            yield _described(root, inside.as_posix(), sources)
            return
    else:
        sources = _installed_files()
    for path in extra:
        # Import names at the working_dir's top: a folder's, a module file's stem.
        taken = {
            Path(rel.parts[0]).stem if len(rel.parts) == 1 else rel.parts[0] for _, rel in sources
        }
        name = path.stem if path.is_file() else path.name
        if name in taken:
            raise SweepsError(
                f"trainable: its module {str(path)!r} must not share its name with a top-level "
                f"entry of the project, which the job imports from the same folder, but "
                f"{name!r} does"
            )
        files = [path] if path.is_file() else [f for f in sorted(path.rglob("*")) if f.is_file()]
        sources += [
            (f, Path(path.name) / f.relative_to(path) if path.is_dir() else Path(path.name))
            for f in files
            if "__pycache__" not in f.parts
        ]
    with tempfile.TemporaryDirectory(prefix="sweeps-submit-") as tmp:
        stage = Path(tmp)
        for src, rel in sources:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, stage / rel)
        arg = sweep
        # What must reach the job: (its path there, what the error names it); every module
        # file of a package, which may be a namespace package without __init__.py.
        needed = [
            (rel, f"trainable {str(p)!r}")
            for p in extra
            for _, rel in sources
            if rel.parts[0] == p.name and rel.suffix == ".py"
        ]
        if spec_file is not None:
            rel = Path(STAGED_SPECS) / spec_file.name
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(spec_file, stage / rel)
            needed.append((rel, f"spec file {sweep!r}"))
            arg = rel.as_posix()
            sources.append((spec_file, rel))
        kept = set(upload_files(stage))
        for rel, what in needed:
            if rel not in kept:
                raise SweepsError(
                    f"{what}: must not match an ignore rule of the upload (.gitignore, .rayignore "
                    f"or sweeps.submit.EXCLUDES), but {rel} does"
                )
        yield _described(stage, arg, sources)


def _described(path: Path, spec_arg: str, sources: list[tuple[Path, Path]]) -> WorkingDir:
    return WorkingDir(path, spec_arg, len(sources), sum(src.stat().st_size for src, _ in sources))


def trainable_modules(entry: str | None, root: Path = PROJECT_ROOT) -> list[Path]:
    """The spec's own trainable when the upload lacks it: its top-level package (a folder) or
    module (a .py file) as this machine imports it (by its import name, a link not followed), to
    travel in the working_dir. None for one the checkout's upload holds at its top (where the
    job imports from), an installed one (the nodes need it installed, as torch), or one this
    machine cannot import (then the cluster may have it)."""
    if entry is None:
        return []
    top = entry.partition(":")[0].split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    if found is None:
        return []
    if found.submodule_search_locations is not None:
        places = list(found.submodule_search_locations)
        if len(places) != 1:  # a namespace package spread over folders: nothing to pick
            return []
        path = Path(places[0])
    elif found.origin and found.origin.endswith(".py"):
        path = Path(found.origin)
    else:  # built in, or compiled
        return []
    real = path.resolve()
    paths = sysconfig.get_paths()
    installed = {
        Path(p).resolve()
        for p in (paths["purelib"], paths["platlib"], paths["stdlib"], *site.getsitepackages(),
                  site.getusersitepackages())
    }  # fmt: skip
    if any(real.is_relative_to(d) for d in installed):
        return []
    if is_checkout(root) and path.parent.resolve() == root.resolve():
        # The entry's own module file decides: a package may hold ignored files it never imports.
        try:
            module = importlib.util.find_spec(entry.partition(":")[0])
        except (ImportError, ValueError):
            module = None
        own = (Path(module.origin) if module is not None and module.origin else path).resolve()
        if own.is_relative_to(root.resolve()) and (
            own.relative_to(root.resolve()) in set(upload_files(root))
        ):
            return []  # the checkout's upload carries it, at the top
    return [path]


def job_env(tracking_uri: str | None, extra: Sequence[str]) -> dict[str, str]:
    """The job's env_vars: what it needs, and only what is set (see the --help epilog)."""
    env = {"PYTHONUNBUFFERED": "1"}
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    for name in FORWARDED_ENV:
        if os.environ.get(name):
            env[name] = os.environ[name]
    for item in extra:
        name, sep, value = item.partition("=")
        if not name.isidentifier():
            raise SweepsError(f"--env: `NAME[=VALUE]` syntax must hold, but got {item!r}")
        if not sep:
            if name not in os.environ:
                raise SweepsError(f"--env {name}: must be set here (or give {name}=VALUE)")
            value = os.environ[name]
        env[name] = value
    return env


def entrypoint(spec_arg: str, args: argparse.Namespace) -> str:
    """The job's shell command. The tracking URI goes by env var, so no password shows here."""
    cmd = ["python", "-m", "sweeps.run", spec_arg]
    for override in args.overrides:
        cmd += ["--set", override]
    if args.storage:
        cmd += ["--storage", args.storage]
    if args.max_concurrent is not None:
        cmd += ["--max-concurrent", str(args.max_concurrent)]
    return shlex.join(cmd)


def lost_output_warnings(env: dict[str, str], spec: SweepSpec, storage: str | None) -> list[str]:
    """What would land in the job's temporary working directory on the head, and be lost."""
    out = []
    uri = env.get("MLFLOW_TRACKING_URI")
    if uri is None:
        out.append(
            "warning: no --tracking-uri and no $MLFLOW_TRACKING_URI: unless the cluster sets one, "
            "the job logs to an sqlite mlflow.db in its temporary working directory on the head"
        )
    elif not uri.startswith(("http://", "https://", "databricks")):
        out.append(
            f"warning: the job opens {redact(uri)} on the head node, and a new experiment there "
            "keeps its artifacts (the report) in ./mlruns of the job's temporary working "
            "directory; an MLflow server (http://...) keeps them"
        )
    if not (storage or spec.storage):
        out.append(
            "warning: no --storage: Ray's trial results go to the job's temporary working "
            "directory on the head; several nodes need a shared path (NFS, s3://...)"
        )
    return out


def submission_id(spec: SweepSpec) -> str:
    return f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


# -- following a job ----------------------------------------------------------------------------
def follow(
    client: JobSubmissionClient,
    job_id: str,
    out: TextIO,
    err: TextIO,
    poll_s: float = 2.0,
    patience_s: float = 120.0,
) -> int:
    """Print the job's log as it grows; the exit code of its outcome.

    Polls ``get_job_logs`` and prints what lies past the last offset, rather than the websocket
    ``tail_job_logs``: a poll survives a dashboard restart, a proxy's idle timeout and a brief
    network gap (retried for ``patience_s``), where a dropped websocket ends the stream.
    """
    offset, last_contact = 0, time.monotonic()
    while True:
        try:
            # Status before logs: once it is terminal, the log read after it is complete.
            info = client.get_job_info(job_id)
            logs = client.get_job_logs(job_id)
            last_contact = time.monotonic()
        except (OSError, RuntimeError) as exc:
            if time.monotonic() - last_contact > patience_s:
                print(
                    f"error: lost contact with the dashboard for {patience_s:.0f} s "
                    f"({first_line(exc)}); job {job_id} may still be running: "
                    f"python -m sweeps.submit --status {job_id}",
                    file=err,
                )
                return EXIT_JOB_FAILED
            time.sleep(poll_s)
            continue
        if len(logs) < offset:  # the log was replaced; show it again from the start
            offset = 0
        if len(logs) > offset:
            out.write(logs[offset:])
            out.flush()
            offset = len(logs)
        if info.status.is_terminal():
            return _outcome(job_id, str(info.status), info.message, err)
        time.sleep(poll_s)


def _outcome(job_id: str, status: str, message: str | None, err: TextIO) -> int:
    if status == "SUCCEEDED":
        print(f"job {job_id} SUCCEEDED", file=err)
        return EXIT_OK
    first = (message or "").strip().splitlines()
    print(f"job {job_id} {status}: {first[0] if first else 'no message'}", file=err)
    return EXIT_JOB_FAILED


def _job_info(client: JobSubmissionClient, job_id: str, address: str) -> Any:
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        if "status code 404" in str(exc):
            raise SweepsError(
                f"job id {job_id!r}: must name a job of the cluster at {address}, but there is "
                "no such job"
            ) from None
        raise SweepsError(
            f"--address: the Ray dashboard at {address} must answer, but {first_line(exc)}"
        ) from None
    except OSError as exc:
        raise SweepsError(
            f"--address: the Ray dashboard at {address} must be reachable, but {first_line(exc)}"
        ) from None


def show_status(client: JobSubmissionClient, job_id: str, address: str, out: TextIO) -> int:
    info = _job_info(client, job_id, address)
    msg = (info.message or "").strip().splitlines()
    said = msg[0].rstrip(":") if msg else ""
    if len(msg) > 1:  # Ray appends the log's last lines: --logs shows them whole
        said += f"; see --logs {job_id}"
    print(f"{job_id}: {info.status}" + (f" ({said})" if said else ""), file=out)
    return EXIT_JOB_FAILED if str(info.status) in ("FAILED", "STOPPED") else EXIT_OK


def show_logs(client: JobSubmissionClient, job_id: str, address: str, out: TextIO) -> int:
    _job_info(client, job_id, address)  # an unknown id is a user error, not an empty log
    try:
        logs = client.get_job_logs(job_id)
    except (OSError, RuntimeError) as exc:
        raise SweepsError(
            f"--address: the Ray dashboard at {address} must answer, but {first_line(exc)}"
        ) from None
    out.write(logs)
    out.flush()
    return EXIT_OK


# -- main ---------------------------------------------------------------------------------------
def submit(args: argparse.Namespace, address: str, err: TextIO) -> tuple[JobSubmissionClient, str]:
    """Validate locally, connect, upload and submit: (client, job id)."""
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise SweepsError(f"--max-concurrent: `N >= 1` must hold, but got {args.max_concurrent}")
    spec = load_spec(args.sweep, args.overrides)  # a typo fails here, before any upload
    env = job_env(args.tracking_uri, args.env)
    client = connect(address)
    shipped = trainable_modules(spec.trainable)
    with working_dir(args.sweep, extra=shipped) as wd:
        command = entrypoint(wd.spec_arg, args)
        print(
            f"uploading {wd.path} as the job's working_dir ({wd.files} files, "
            f"{wd.size / 2**20:.1f} MiB before compression)",
            file=err,
        )
        if wd.size > _LARGE_UPLOAD:
            print("warning: that is large; list big files in .rayignore", file=err)
        for line in lost_output_warnings(env, spec, args.storage):
            print(line, file=err)
        for path in shipped:
            print(f"uploading {path} too: it holds the spec's trainable", file=err)
        try:
            job_id = client.submit_job(
                entrypoint=command,
                submission_id=submission_id(spec),
                runtime_env={"working_dir": str(wd.path), "excludes": EXCLUDES, "env_vars": env},
                metadata={"sweeps.name": spec.name, "sweeps.spec_hash": spec.spec_hash()},
            )
        except (OSError, RuntimeError, ValueError) as exc:  # upload refused, job not accepted
            raise SweepsError(
                f"the Ray cluster at {address} must accept the job, but {first_line(exc)}"
            ) from None
    print(f"submitted job {job_id}: {command}", file=err)
    print(f"dashboard: {address}/#/jobs/{job_id}", file=err)
    return client, job_id


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    queries = [q for q in (args.status, args.logs) if q]
    if len(queries) > 1 or (queries and args.sweep):
        parser().error("give a sweep, or one of --status JOB_ID and --logs JOB_ID")
    if not queries and not args.sweep:
        parser().error("a sweep name or YAML file is required (or --status/--logs JOB_ID)")
    socket.setdefaulttimeout(_HTTP_TIMEOUT_S)  # requests (the jobs SDK's client) honours it
    job_id = ""
    try:
        address = resolve_address(args.address)
        if args.status:
            return show_status(connect(address), args.status, address, out)
        if args.logs:
            return show_logs(connect(address), args.logs, address, out)
        client, job_id = submit(args, address, err)
        if args.no_wait:
            print(job_id, file=out)
            print(
                f"follow it: python -m sweeps.submit --address {address} --status {job_id} "
                f"(or --logs {job_id})",
                file=err,
            )
            return EXIT_OK
        return follow(client, job_id, out, err)
    except SweepsError as exc:
        return fail(err, str(exc))
    except ValidationError as exc:
        return fail(err, format_validation_error(exc))
    except KeyboardInterrupt:
        if job_id:
            print(
                f"\nstopped following; job {job_id} keeps running (`ray job stop --address "
                f"{address} {job_id}` ends it)",
                file=err,
            )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
