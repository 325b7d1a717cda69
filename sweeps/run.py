"""CLI: ``python -m sweeps.run NAME|FILE.yaml [--set k=v ...]``. Parses, then calls run_sweep."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

# MLflow logs its schema migrations at INFO when it is imported; keep the CLI's stderr to our lines.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

import optuna
from pydantic import ValidationError
from rich.console import Console

from search_spaces import FAMILIES, define_by_run
from sweeps.custom import load_trainable
from sweeps.errors import (
    EXIT_INTERRUPTED,
    OneLineParser,
    SweepInterrupted,
    SweepsError,
    fail,
    format_validation_error,
    uri_named,
)
from sweeps.preflight import check_inputs, check_not_file_store
from sweeps.registry import describe
from sweeps.spec import SweepSpec, load_spec
from trainables import DataError

EXIT_NO_RESULT = 1  # the sweep ran, but without its whole result (every trial of a family, or
# a re-evaluation run, failed)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m sweeps.run",
        description="Run a learning-rate schedule sweep: does CLR beat a tuned fixed rate?",
    )
    p.add_argument("sweep", nargs="?", help="a built-in sweep name (see --list) or a YAML file")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="dotted.key=value",
        help="override a spec field, e.g. --set search.trials_per_family=4 (repeatable)",
    )  # fmt: skip
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                   "else sqlite mlflow.db in the working directory)")  # fmt: skip
    p.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else local)")
    p.add_argument("--storage", help="Ray storage_path (shared storage for several nodes)")
    p.add_argument("--max-concurrent", type=int, help="at most N trials at once")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest unfinished sweep of this spec (same storage)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and sample; start nothing")
    p.add_argument("--list", action="store_true", help="list the built-in sweeps")
    return p


def dry_run(spec: SweepSpec, console: Console, samples: int = 3) -> None:
    """The spec, its budget and a few sampled configs per family. Here rather than in
    ``sweeps.sweep``: a dry run answers in a second without importing Ray Tune or MLflow."""
    console.print(spec.to_yaml(), highlight=False, markup=False)
    budget = spec.search.trials_per_family
    console.print(
        f"budget: {len(spec.families)} families x {budget} trials x up to {spec.train.epochs} "
        f"epochs = at most {len(spec.families) * budget * spec.train.epochs} trial epochs",
        highlight=False,
    )
    if spec.search.bounds == "range_test":
        console.print(
            "search.bounds is range_test: the sweep first runs an LR range test, and base_lr and "
            "max_lr come from its ranges, not from the spec's ranges the samples below use",
            highlight=False,
        )
    for family in spec.families:
        fam = FAMILIES[family]
        console.print(
            f"\n{family}: {fam.description}; samples {', '.join(fam.params)}; ASHA grace "
            f"{spec.grace_period(family)} epochs",
            highlight=False,
        )
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.sampler.seed))
        fn = define_by_run(spec.search, family)
        for _ in range(samples):
            trial = study.ask()
            fn(trial)
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in trial.params.items()
            )
            console.print(f"  {shown}", highlight=False)
            study.tell(trial, 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per study otherwise
    # Off a terminal (CI, log files) rich would squeeze tables into 80 columns.
    out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140)
    err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 140)
    if args.list:
        if args.sweep:
            parser().error(f"--list takes no sweep, but got {args.sweep!r}")
        for name, desc in describe():
            out.print(f"{name:<14} {desc}", highlight=False, markup=False)
        return 0
    if not args.sweep:
        parser().error("a sweep name or YAML file is required (or --list)")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        return fail(err, f"--max-concurrent: `N >= 1` must hold, but got {args.max_concurrent}")
    try:
        spec = load_spec(args.sweep, args.overrides)
        if args.dry_run:
            load_trainable(spec.trainable)
            check_not_file_store(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", ""))
            dry_run(spec, out)
            return 0
        check_inputs(spec, args.address, args.tracking_uri, args.storage, args.resume)
        started_ray = start_beside_imports(args.address, args.tracking_uri)
        import ray  # imported by now, like the modules below

        from sweeps.sweep import RunOptions, print_summary, run_sweep

        try:
            result = run_sweep(
                spec,
                RunOptions(
                    args.tracking_uri,
                    args.address,
                    args.storage,
                    args.max_concurrent,
                    args.resume,
                    shutdown_ray=started_ray,
                ),
                err,
            )
        finally:
            if started_ray:
                ray.shutdown()  # a no-op unless run_sweep failed before its own shutdown
        print_summary(result, out)
        code = 0
        lost = result.lost
        if lost and len(lost) == len(result.outcomes):
            err.print(
                "error: every trial of every family failed, so the sweep has no result (their "
                "errors are above)",
                highlight=False,
            )
            return EXIT_NO_RESULT
        if lost:  # the verdict cannot speak for these families
            err.print(
                f"error: every trial of {', '.join(lost)} failed, so the verdict leaves "
                f"{'it' if len(lost) == 1 else 'them'} out and the parent run is marked FAILED "
                "(the errors are above); fix the cause, then run the sweep again",
                highlight=False,
                markup=False,
            )
            code = EXIT_NO_RESULT
        failed = [r for r in result.reevals if r.error]
        if failed:
            err.print(
                f"error: {len(failed)} of {len(result.reevals)} re-evaluation runs failed (first: "
                f"{failed[0].family} seed {failed[0].seed}: {failed[0].error}); the report leaves "
                "them out and the parent run is marked FAILED. Fix the cause, then redo them "
                f"with: {_resume_command(argv)}",
                highlight=False,
                markup=False,
            )
            code = EXIT_NO_RESULT
        return code
    except (SweepsError, DataError) as exc:
        return fail(err, uri_named(str(exc), args.tracking_uri))
    except ValidationError as exc:
        return fail(err, format_validation_error(exc))
    except SweepInterrupted as exc:
        err.print(
            f"interrupted: the sweep's MLflow parent run {exc.parent_run_id} is marked KILLED "
            f"and Ray kept the search's state; continue it with: {_resume_command(argv)}",
            highlight=False,
            markup=False,
        )
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        err.print("interrupted before the sweep's MLflow parent run was created: nothing to resume")
        return EXIT_INTERRUPTED


def _resume_command(argv: Sequence[str] | None) -> str:
    """This command again, with --resume."""
    again = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--resume"]
    return shlex.join(["python", "-m", "sweeps.run", *again, "--resume"])


def _import_sweep(tracking_uri: str | None) -> None:
    import sweeps.sweep  # noqa: F401  (MLflow, Tune, matplotlib, ...)
    from sweeps.tracking import preload_store, resolve_uri

    preload_store(resolve_uri(tracking_uri))


def start_beside_imports(address: str | None, tracking_uri: str | None) -> bool:
    """Start Ray (or join ``address``) while a thread imports the sweep's modules and MLflow's
    store: ~9 s of Python on one core, while Ray's own processes start on the other. True if
    a local instance was started (the caller shuts it down)."""
    import ray

    from sweeps.cluster import start_ray

    with ThreadPoolExecutor(1, thread_name_prefix="sweeps-imports") as pool:
        importing = pool.submit(_import_sweep, tracking_uri)
        started = start_ray(address)
        try:
            importing.result()
        except BaseException:
            if started:
                ray.shutdown()
            raise
    return started


if __name__ == "__main__":
    sys.exit(main())
