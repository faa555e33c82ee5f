"""The ``hotdog`` command: run the pipeline, plan batches for the UI, and inspect the results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hotdog_dagster.core.batches import (
    BatchSpec,
    check_sketch_overlap,
    list_batches,
    list_source_files,
    plan_folder,
    plan_sketch,
)
from hotdog_dagster.core.profile import Profile, load_profile
from hotdog_dagster.core.store import Store
from hotdog_dagster.core.watch import plan_new_files


class CliError(Exception):
    """A user error: printed as one line, no traceback."""


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        choices=["sketch", "folder"],
        default="sketch",
        help="sketch: draw the procedural hot-dog world; folder: ingest a folder (recursive) or .zip of images",
    )
    p.add_argument("--images", type=int, default=500, help="sketch: how many images to draw (default 500)")
    p.add_argument(
        "--seed", type=int, default=0, help="sketch: the stream to draw from; same seed, same images (default 0)"
    )
    p.add_argument("--path", type=Path, help="folder: the folder or zip to ingest")
    p.add_argument(
        "--partition-size",
        type=int,
        default=None,
        help="images per partition (default 100 for sketch, 1000 for folder)",
    )
    p.add_argument(
        "--rerun",
        action="store_true",
        help="folder: also re-materialise batches already taken from this folder (default: new files only)",
    )
    p.add_argument(
        "--config", type=Path, help="a run profile (YAML), e.g. configs/real.yaml; default: the embedded profile"
    )
    p.add_argument("--home", type=Path, help="data root (default $HOTDOG_HOME or ./.hotdog)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotdog",
        description="Tag and query images at scale: ingest or draw images, embed them with OpenCLIP, index them "
        "with FAISS and query them with DuckDB, all as Dagster assets. Data lives under $HOTDOG_HOME (./.hotdog).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the whole asset graph in process (the embedded default needs no download, no GPU)",
        description="Plan batches, materialise raw_images and image_embeddings for each, then the "
        "index and catalog. Runs are recorded in $DAGSTER_HOME (default $HOTDOG_HOME/dagster), so "
        "`dagster dev -w workspace.yaml` with the same DAGSTER_HOME shows them.",
    )
    _add_source_args(run)
    run.add_argument("--json", action="store_true", help="print a machine-readable summary (counts per table, paths)")

    plan = sub.add_parser(
        "plan",
        help="write batch manifests and add their partitions, without running them",
        description="For materialising from the Dagster UI, a backfill or `dagster asset materialize "
        "--partition KEY`: each partition key is backed by a manifest under $HOTDOG_HOME/batches.",
    )
    _add_source_args(plan)
    return parser


def _specs(args: argparse.Namespace, store: Store, profile: Profile) -> list[BatchSpec]:
    if args.source == "sketch":
        specs = plan_sketch(args.seed, args.images, args.partition_size or 100, size=profile.sketch_size)
        try:
            check_sketch_overlap(list_batches(store), specs)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        return specs
    if args.path is None:
        raise CliError("--source folder needs --path DIR (a folder of images, or a .zip)")
    if not args.path.exists():
        raise CliError(f"--path {args.path} does not exist")
    size = args.partition_size or 1000
    if args.rerun:
        return plan_folder(args.path, list_source_files(args.path), size)
    specs = plan_new_files(store, args.path, size, settle_seconds=0)
    if not specs:
        print(
            f"no new files in {args.path} (every file is already in a batch; use --rerun to redo them)", file=sys.stderr
        )
    return specs


def _setup(args: argparse.Namespace) -> tuple[Store, Profile]:
    try:
        profile = load_profile(args.config)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.partition_size is not None and args.partition_size <= 0:
        raise CliError(f"--partition-size must be positive, got {args.partition_size}")
    if args.images <= 0:
        raise CliError(f"--images must be positive, got {args.images}")
    return Store(args.home), profile


def cmd_run(args: argparse.Namespace) -> int:
    store, profile = _setup(args)
    specs = _specs(args, store, profile)
    from hotdog_dagster.pipeline import run_pipeline  # loads Dagster and the asset graph only when needed

    say = (lambda _msg: None) if args.json else print
    summary = run_pipeline(store, profile, specs, say=say)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": summary.ok,
                    "home": summary.home,
                    "dagster_home": summary.dagster_home,
                    "partitions": summary.partitions,
                    "failed": summary.failed,
                    "tables": summary.tables,
                    "paths": summary.paths,
                    "model": profile.model,
                },
                indent=2,
            )
        )
    else:
        print("tables: " + ", ".join(f"{k}={v}" for k, v in summary.tables.items()))
        print(f"data in {summary.home}; runs in {summary.dagster_home}")
        for key, err in summary.failed.items():
            print(f"failed {key}: {err}", file=sys.stderr)
    return 0 if summary.ok else 1


def cmd_plan(args: argparse.Namespace) -> int:
    store, profile = _setup(args)
    specs = _specs(args, store, profile)
    from hotdog_dagster.pipeline import dagster_instance, register_batches

    register_batches(store, dagster_instance(store), specs)
    for spec in specs:
        print(f"{spec.key}\t{spec.source}\t{spec.size_hint}")
    return 0


COMMANDS = {"run": cmd_run, "plan": cmd_plan}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CliError as exc:
        print(f"hotdog {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:  # bad files, specs and settings: one line, no traceback
        print(f"hotdog {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
