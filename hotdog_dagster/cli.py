"""The ``hotdog`` command: run the pipeline, plan batches for the UI, and inspect the results."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from pydantic import ValidationError

from hotdog_dagster.core.io.batches import (
    BatchSpec,
    check_sketch_overlap,
    is_materialised,
    list_batches,
    plan_diffusion,
    plan_sketch,
)
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.io.watch import folder_batches, plan_new_files
from hotdog_dagster.core.model.schedulers import SCHEDULER_NAMES
from hotdog_dagster.core.settings import Profile, load_profile

SEARCH_HELP = """\
Search the indexed images. A query is one or more weighted parts: texts and images (paths or
http(s) URLs). Per space, the query vector is the weighted sum of the parts' unit vectors,
renormalised; negative weights push away; parts with weight 0 are not encoded.

Spaces: 'image' scores each image's own vector; 'description' scores the vector of its caption;
'both' combines them: score = (Wi * s_image + Wd * s_description) / (Wi + Wd) with Wi, Wd the
--image-space-weight and --description-space-weight. Scores are cosines: an image queried with
itself scores 1 in the image space.

Blank and duplicate images are left out unless --include-flagged.

Modes: 'vector' (the cosines above), 'keyword' (BM25 over captions and prompts, text parts only),
'hybrid' (reciprocal rank fusion: score = A / (K + rank_vector) + (1 - A) / (K + rank_keyword), with
A = --alpha, the vector ranking's share as in Marqo, and K = --rrf-k, default 60).

Score modifiers (Marqo's): score = raw * (w1 * field1) * ... + (w2 * field2) + ..., from
--multiply-score-by FIELD[:W] and --add-to-score FIELD[:W] over numeric columns; a missing value
skips its modifier.

Filter grammar (any column of the catalog's search_items view: image columns, quality flags,
label scores such as a_face, p_a_face, top_label):
  field:value          exact match (quote values with spaces: caption:"a red circle")
  field:[a TO b]       inclusive range; {a TO b} exclusive; * for an open end
  field:>0.5  >= < <=  comparisons        field:*   has a value        field:hot*  wildcard
  AND  OR  NOT  ( )    NOT binds tightest, then AND, then OR; adjacent clauses mean AND
  field:(a b)          any of the values (field grouping); inside, +a required, -a excluded
  +clause  -clause     required / excluded         \\ escapes a special character

Examples:
  hotdog search "a face" --limit 10
  hotdog search --image query.png
  hotdog search --text "red circle" --text-weight 1.0 --image blue.png --image-weight 0.1
  hotdog search --text "a face" --text "a hamburger:-0.5" --filter 'a_face:[0.58 TO 0.99] AND source:sketch'
  hotdog search "a blue square" --space both --description-space-weight 0.5 --html hits.html
  hotdog search "two hot dogs" --mode hybrid --alpha 0.7 --multiply-score-by top_probability
"""


class CliError(Exception):
    """A user error: printed as one line, no traceback."""


#: --flag of each generation setting the command line sets, so a bad value names the flag the user typed.
GENERATE_FLAGS = {
    "model": "--diffusion-model",
    "prompts": "--prompt",
    "prompt_file": "--prompt-file",
    "negative_prompt": "--negative-prompt",
    "steps": "--steps",
    "guidance": "--guidance",
    "scheduler": "--scheduler",
    "width": "--width",
    "height": "--height",
    "batch_size": "--gen-batch-size",
    "seed": "--seed",
}


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        choices=["sketch", "folder", "diffusion"],
        default="sketch",
        help="sketch: draw the procedural hot-dog world; folder: ingest a folder (recursive) or .zip of images; "
        "diffusion: generate images with Stable Diffusion (options below, docs/generation.md)",
    )
    p.add_argument(
        "--images", type=int, default=500, help="sketch, diffusion: how many images to draw or generate (default 500)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="sketch: the stream to draw from, same seed same images (default 0); diffusion: the run seed every "
        "image's seed derives from (default: the profile's generate.seed)",
    )
    p.add_argument("--path", type=Path, help="folder: the folder or zip to ingest")
    p.add_argument(
        "--partition-size",
        type=int,
        default=None,
        help="images per partition (default 100 for sketch and diffusion, 1000 for folder)",
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
    gen = p.add_argument_group(
        "diffusion source",
        "Each option replaces that setting of the profile's generate section (configs/hot-dog-100k.yaml). "
        "Partitions are diffusion-s<seed>-<first index>: planning the same --seed and --partition-size again "
        "with other options replaces them (downstream then shows stale); use another --seed for a second set.",
    )
    gen.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        help="a prompt, used in turn image by image (repeatable); prompts given here replace the profile's",
    )
    gen.add_argument(
        "--prompt-file", type=Path, metavar="FILE", help="one prompt per line (# comments), after --prompt"
    )
    gen.add_argument("--negative-prompt", metavar="TEXT", help="what to steer away from (needs guidance > 1)")
    gen.add_argument("--steps", type=int, help="denoising steps (default 50; 2-8 for LCM or turbo models)")
    gen.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 7.5; 1 or less: off)")
    gen.add_argument(
        "--scheduler", metavar="NAME", help=f"sampler: {', '.join(SCHEDULER_NAMES)} (default: the model's own)"
    )
    gen.add_argument("--width", type=int, help="pixels, a multiple of 8 (default 512)")
    gen.add_argument("--height", type=int, help="pixels, a multiple of 8 (default 512)")
    gen.add_argument(
        "--gen-batch-size",
        type=int,
        metavar="N",
        help="images per denoising pass (default 4); lower it on out-of-memory",
    )
    gen.add_argument(
        "--diffusion-model",
        metavar="NAME_OR_PATH",
        help="a diffusers model folder, a Hugging Face id already in the local cache (nothing is downloaded), "
        "or tiny-random (random weights, for plumbing)",
    )


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
    run.add_argument(
        "--wait",
        action="store_true",
        help="if another `hotdog run` is using this HOTDOG_HOME, wait for it to finish (default: stop and say who)",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        help="show Dagster's and dbt's logs on the terminal instead of progress bars (default: they go to a log file)",
    )

    plan = sub.add_parser(
        "plan",
        help="write batch manifests and add their partitions, without running them",
        description="For materialising from the Dagster UI, a backfill or `dagster asset materialize "
        "--partition KEY`: each partition key is backed by a manifest under $HOTDOG_HOME/batches.",
    )
    _add_source_args(plan)
    regen = sub.add_parser(
        "regenerate",
        help="generate one stored diffusion image again and check it matches the stored file",
        description="Generate image ID again from its partition's manifest and its recorded columns (prompt, seed, "
        "model, scheduler, steps, guidance, size) and compare the pixels with the stored file. Exit status 0 when "
        "they match, 1 when they differ (other hardware or library versions can change low bits).",
    )
    regen.add_argument("id", help="the image's id (the id column of images, or a search hit's id)")
    regen.add_argument("--out", type=Path, metavar="FILE", help="also write the regenerated PNG to FILE")
    regen.add_argument("--json", action="store_true", help="print the comparison as JSON")
    regen.add_argument("--home", type=Path, help="data root (default $HOTDOG_HOME or ./.hotdog)")
    search = sub.add_parser(
        "search",
        help="search the images by text, image, weighted mixes of both, and filters",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=SEARCH_HELP,
    )
    search.add_argument("query", nargs="?", help="text to search for (a text part with --text-weight)")
    search.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="TEXT[:W]",
        help="a text part, optionally with its weight after a final colon, e.g. 'a hamburger:-0.5' (repeatable)",
    )
    search.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH_OR_URL[:W]",
        help="an image part: a file path or http(s) URL, optionally ':W' (repeatable)",
    )
    search.add_argument(
        "--text-weight", type=float, default=1.0, help="weight of text parts that give none (default 1)"
    )
    search.add_argument(
        "--image-weight", type=float, default=1.0, help="weight of image parts that give none (default 1)"
    )
    search.add_argument(
        "--space",
        choices=["image", "description", "both"],
        default="image",
        help="score against the image vectors, the caption vectors, or both (default image)",
    )
    search.add_argument(
        "--image-space-weight", type=float, default=1.0, help="weight of the image space in --space both"
    )
    search.add_argument(
        "--description-space-weight", type=float, default=1.0, help="weight of the description space in --space both"
    )
    search.add_argument(
        "--like",
        action="append",
        default=[],
        metavar="ID[:W]",
        help="an indexed image by its id, scored by its stored vector, optionally ':W' (repeatable)",
    )
    search.add_argument(
        "--mode",
        choices=["vector", "keyword", "hybrid"],
        default="vector",
        help="rank by vectors, BM25 keywords over captions and prompts, or both fused (default vector)",
    )
    search.add_argument(
        "--alpha", type=float, default=0.5, help="hybrid: the vector ranking's share of the fused score, 0..1"
    )
    search.add_argument("--rrf-k", type=float, default=60.0, help="hybrid: the rank constant of the fusion (60)")
    search.add_argument(
        "--multiply-score-by",
        action="append",
        default=[],
        metavar="FIELD[:W]",
        help="multiply the score by W x a numeric column, e.g. top_probability:1 (repeatable)",
    )
    search.add_argument(
        "--add-to-score",
        action="append",
        default=[],
        metavar="FIELD[:W]",
        help="add W x a numeric column to the score, e.g. p_a_face:0.1 (repeatable)",
    )
    search.add_argument("--filter", help="e.g. 'a_face:[0.58 TO 0.99] AND source:sketch' (grammar below)")
    search.add_argument("--limit", type=int, default=10, help="hits to return (default 10)")
    search.add_argument("--offset", type=int, default=0, help="hits to skip, for paging (default 0)")
    search.add_argument(
        "--include-flagged", action="store_true", help="include blank and duplicate images (excluded by default)"
    )
    search.add_argument(
        "--json", action="store_true", help="print hits as JSON: id, score, path and the filterable columns"
    )
    search.add_argument(
        "--html", type=Path, metavar="FILE", help="also write a self-contained gallery page of the hits"
    )
    search.add_argument("--device", default="auto", help="where to run the query encoder (default auto)")
    search.add_argument("--home", type=Path, help="data root (default $HOTDOG_HOME or ./.hotdog)")
    serve = sub.add_parser(
        "serve",
        help="a search page and a JSON API (/api/search) over the indexed images",
        description="Serve the search page and /api/search (the options of `hotdog search` as query or "
        "form fields) on a loopback port; images are served by catalog id only.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8750, help="port (default 8750)")
    serve.add_argument(
        "--max-upload-mb", type=float, default=16.0, help="largest image upload accepted, in MiB (default 16)"
    )
    serve.add_argument("--device", default="auto", help="where to run the query encoder (default auto)")
    serve.add_argument("--home", type=Path, help="data root (default $HOTDOG_HOME or ./.hotdog)")
    wk = sub.add_parser(
        "walk",
        help="register and materialise a named nearest-neighbour walk (GIF, MP4, contact sheet, map)",
        description="A walk starts at the image nearest --start inside --filter and steps each time to the "
        "nearest image not yet shown (an exact greedy tour), then is smoothed by 2-opt/Or-opt moves. It is "
        "one partition of ordered_walk and walk_animation, named NAME, so the UI can re-materialise it. "
        "Unset options come from the profile's walk section (default: the sketch world's faces).",
    )
    wk.add_argument("name", help="the walk's name (letters, digits, '.', '_' and '-'): its partition key")
    wk.add_argument("--start", help="a text, an image path or URL, or an image id (see --start-kind)")
    wk.add_argument("--start-kind", choices=["text", "image", "id"], help="what --start is (default text)")
    wk.add_argument("--filter", help="which images, in the search filter language, e.g. 'a_face:[0.58 TO 0.99]'")
    wk.add_argument("--space", choices=["image", "description", "both"], help="which vectors to walk")
    wk.add_argument("--max-length", type=int, help="frames at most")
    wk.add_argument("--no-improve", action="store_true", help="keep the greedy tour as it is")
    wk.add_argument("--size", type=int, help="side of the animation frames, pixels")
    wk.add_argument("--fps", type=float, help="animation frames per second")
    wk.add_argument("--include-flagged", action="store_true", help="also walk blank frames and duplicates")
    wk.add_argument("--config", type=Path, help="a run profile (YAML)")
    wk.add_argument("--home", type=Path, help="data root (default $HOTDOG_HOME or ./.hotdog)")
    wk.add_argument("--json", action="store_true", help="print the walk's figures and files as JSON")
    prep = sub.add_parser(
        "prepare",
        help="write the dbt manifest (dbt parse) so `dagster asset materialize` and `dg launch` can load the project",
        description="`hotdog run` and `dagster dev` prepare it themselves; run this once after installing or "
        "after editing the dbt project when you use `dagster asset materialize`, `dg launch` or `dg check defs`.",
    )
    prep.add_argument("--force", action="store_true", help="parse even when the manifest is up to date")
    ev = sub.add_parser(
        "evaluate-model",
        help="score a model on a held-out sketch set (accuracy, confusion, P@10)",
        description="Zero-shot accuracy with the confusion matrix, text-to-image precision@10 per "
        "class and colour+shape prompt, and the image-to-image checks, on sketches drawn from a "
        "seed the model never saw. Exit status 1 when a quality target is missed. To retrain the "
        "shipped weights: python scripts/train_sketch_model.py",
    )
    ev.add_argument("--model", default=None, help="model spec (default: the shipped open_clip/hotdog-sketch/bundled)")
    ev.add_argument("--seed", type=int, default=None, help="held-out seed")
    ev.add_argument("-n", type=int, default=1000, help="held-out images (default 1000)")
    ev.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def _diffusion_profile(args: argparse.Namespace, profile: Profile) -> Profile:
    """The profile with the command line's generation options on top of its ``generate`` section."""
    given_prompts = bool(args.prompt) or args.prompt_file is not None
    overrides = {
        # prompts or a prompt file on the command line replace the profile's prompts, file and all
        "prompts": (args.prompt or []) if given_prompts else None,
        "prompt_file": (str(args.prompt_file) if args.prompt_file else "") if given_prompts else None,
        "negative_prompt": args.negative_prompt,
        "steps": args.steps,
        "guidance": args.guidance,
        "scheduler": args.scheduler,
        "width": args.width,
        "height": args.height,
        "batch_size": args.gen_batch_size,
        "model": args.diffusion_model,
        "seed": args.seed,
    }
    try:
        return profile.with_overrides("generate", **overrides)
    except ValidationError as exc:
        raise CliError(_flag_errors(exc)) from None


def _flag_errors(exc: ValidationError) -> str:
    """One clause per bad value, named by its flag: ``--scheduler: unknown scheduler 'x'; valid schedulers: ...``."""
    out = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        where = GENERATE_FLAGS.get(field, f"generate.{field}" if field else "diffusion options")
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {msg}" + ("" if err["type"] == "value_error" else f" (got {err.get('input')!r})"))
    return "; ".join(out)


def _specs(args: argparse.Namespace, store: Store, profile: Profile) -> list[BatchSpec]:
    if args.source == "diffusion":
        settings = _diffusion_profile(args, profile).generate
        return plan_diffusion(settings, args.images, args.partition_size or 100)
    if args.source == "sketch":
        seed = 0 if args.seed is None else args.seed
        specs = plan_sketch(seed, args.images, args.partition_size or 100, size=profile.ingest.sketch_size)
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
    # --rerun keeps the folder's existing batches (same keys, same files) rather than re-slicing it
    # from chunk 0, which could overwrite the batches of another folder with the same name.
    # Without it, batches planned earlier but never finished (a run killed or failed half way: the
    # manifests are all written before the first batch runs) are taken again, or their files would
    # never be ingested: "only new files" must not mean "only files no manifest lists".
    taken = folder_batches(store, args.path)
    if not args.rerun:
        taken = [b for b in taken if not is_materialised(store, b.key)]
    specs = taken + plan_new_files(store, args.path, size, settle_seconds=0)
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


def _load_diffusion_model(specs: list[BatchSpec]) -> None:
    """Load the diffusion model before any run starts, so a missing model is one line (exit 2) rather than
    a failed step per batch; ``hotdog run`` executes its steps in this process, so they reuse it."""
    diffusion = [s for s in specs if s.source == "diffusion"]
    if not diffusion:
        return
    from hotdog_dagster.core.io.batches import generate_settings
    from hotdog_dagster.core.model.generation import load_pipeline

    settings = generate_settings(diffusion[0])  # one planning: every batch has the same model and device
    load_pipeline(settings.model, settings.device, settings.precision, settings.compile)


@contextlib.contextmanager
def home_lock(store: Store, wait: bool = False) -> Iterator[None]:
    """Hold ``$HOTDOG_HOME/locks/run.lock`` for a command that plans and writes the whole home.

    Two ``hotdog run`` on one home would plan the same batches, write the same partitions and
    rebuild the same index at once; the second one stops with the holder's pid instead (or waits,
    with ``--wait``). The kernel drops the lock when its holder dies, killed or not. Temporary
    files of writers that were killed are swept once the lock is held.
    """
    from hotdog_dagster.core.io.locks import Busy, file_lock, lock_path
    from hotdog_dagster.core.io.store import sweep_temporaries

    path = lock_path(store.root, "run")
    try:
        with file_lock(path, wait=None if wait else 0, what=f"HOTDOG_HOME {store.root}"):
            sweep_temporaries(store.root)
            yield
    except Busy as exc:
        raise CliError(f"{exc}; wait for it to finish, or pass --wait (hotdog run) to queue behind it") from None


def cmd_run(args: argparse.Namespace) -> int:
    store, profile = _setup(args)
    with home_lock(store, wait=args.wait):
        return _run(args, store, profile)


def _run(args: argparse.Namespace, store: Store, profile: Profile) -> int:
    specs = _specs(args, store, profile)
    _load_diffusion_model(specs)
    from hotdog_dagster.pipeline import run_pipeline  # loads Dagster and the asset graph only when needed

    log = store.root / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    images = sum(s.size_hint for s in specs)
    if args.verbose:
        summary = run_pipeline(store, profile, specs, on_step=_print_step)
        log = None
    else:
        from hotdog_dagster.console import StageBars, output_to, terminal_console

        with output_to(log) as terminal:
            console = terminal_console(terminal)
            if not args.json:
                console.print(f"{len(specs)} batch(es), {images:,} item(s); log: {log}")
            if args.json:
                summary = run_pipeline(store, profile, specs)
            else:
                with StageBars(console, images, len(specs)) as bars:
                    summary = run_pipeline(
                        store,
                        profile,
                        specs,
                        on_step=bars.step,
                        on_failure=lambda key, err: console.print(f"[red]failed[/red] {key}: {err}"),
                    )
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
                    "log": str(log) if log else None,
                    "model": profile.model.name,
                },
                indent=2,
            )
        )
    else:
        from hotdog_dagster.console import summary_table, terminal_console, where_lines

        console = terminal_console()
        console.print(summary_table(summary, log))
        for line in where_lines(summary, log):
            console.print(line, soft_wrap=True)
        for key, err in summary.failed.items():
            print(f"hotdog run: error: {key}: {err}", file=sys.stderr)
    return 0 if summary.ok else 1


def _print_step(step) -> None:  # noqa: ANN001 - a pipeline.StepDone
    where = f" [{step.partition}]" if step.partition else ""
    state = "ok" if step.ok else "FAILED"
    print(f"{step.step}{where}: {state} in {step.seconds:.1f}s", flush=True)


def cmd_plan(args: argparse.Namespace) -> int:
    store, profile = _setup(args)
    from hotdog_dagster.pipeline import dagster_instance, register_batches

    with home_lock(store):
        specs = _specs(args, store, profile)
        register_batches(store, dagster_instance(store), specs)
    for spec in specs:
        print(f"{spec.key}\t{spec.source}\t{spec.size_hint}")
    return 0


def cmd_regenerate(args: argparse.Namespace) -> int:
    from hotdog_dagster.core.model.generation import regenerate

    try:
        result = regenerate(Store(args.home), args.id, out=args.out)
    except KeyError as exc:  # an unknown id
        raise CliError(exc.args[0]) from None
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        if result.matches:
            verdict = "matches the stored file" + (
                ", byte for byte" if result.identical_file else " (same pixels, other PNG bytes)"
            )
        else:
            verdict = f"DIFFERS from the stored file (largest channel difference {result.max_abs_diff} of 255)"
        print(f"{result.image_id}: {verdict}; {result.note}")
        print(f"stored: {result.path}" + (f"\nregenerated: {result.written}" if result.written else ""))
    return 0 if result.matches else 1


def cmd_walk(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from hotdog_dagster.core.settings import describe_errors
    from hotdog_dagster.pipeline import dagster_instance, run_walk

    try:
        profile = load_profile(args.config)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    overrides = {
        "name": args.name,
        "start": args.start,
        "start_kind": args.start_kind,
        "filter": args.filter,
        "space": args.space,
        "max_length": args.max_length,
        "size": args.size,
        "fps": args.fps,
        "improve": False if args.no_improve else None,
        "include_flagged": True if args.include_flagged else None,
    }
    try:
        settings = profile.with_overrides("walk", **overrides).walk
    except ValidationError as exc:
        raise CliError(describe_errors(exc, "the command line").replace("setting '", "option '--")) from None
    store = Store(args.home)
    if not store.catalog_path.exists():
        raise CliError(f"no catalog at {store.catalog_path}: run `hotdog run` (or the whole_set job) first")
    from hotdog_dagster.dbt_project import prepare_dbt

    prepare_dbt()
    ok, error = run_walk(store, profile, settings)
    if not ok:
        print(f"hotdog walk: error: {error}", file=sys.stderr)
        return 1
    instance = dagster_instance(store)
    out: dict[str, object] = {"walk": settings.name}
    for key in ("ordered_walk", "walk_animation"):
        event = instance.get_latest_materialization_event(dg_asset_key(key))
        meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
        out.update({k: getattr(v, "value", v) for k, v in meta.items() if k not in ("contact_sheet", "map")})
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        for key in ("frames", "candidates", "start_id", "greedy_length", "improved_length", "message", "gif", "mp4"):
            if key in out:
                print(f"{key}: {out[key]}")
    return 0


def dg_asset_key(name: str):  # noqa: ANN201 - a dagster AssetKey; dagster loads only when a command needs it
    import dagster as dg

    return dg.AssetKey(name)


def cmd_prepare(args: argparse.Namespace) -> int:
    from hotdog_dagster.dbt_project import prepare_dbt

    print(f"dbt manifest ready: {prepare_dbt(force=args.force)}")
    return 0


def _parts(args: argparse.Namespace) -> tuple:
    from hotdog_dagster.core.search.engine import Part, split_weight

    parts = []
    if args.query is not None:
        parts.append(Part("text", args.query, args.text_weight))
    for spec in args.text:
        text, w = split_weight(spec, args.text_weight)
        parts.append(Part("text", text, w))
    for spec in args.image:
        src, w = split_weight(spec, args.image_weight)
        parts.append(Part("image", src, w))
    for spec in args.like:
        image_id, w = split_weight(spec, args.image_weight)
        parts.append(Part("id", image_id, w))
    return tuple(parts)


def cmd_search(args: argparse.Namespace) -> int:
    from hotdog_dagster.core.search.engine import Query, QueryError, Searcher, parse_modifier
    from hotdog_dagster.core.search.gallery import write_gallery

    parts = _parts(args)
    if not parts:
        raise CliError('the query is empty: give text (hotdog search "a face"), --text, --image or --like')
    try:
        factors = tuple(parse_modifier(spec) for spec in args.multiply_score_by)
        addends = tuple(parse_modifier(spec) for spec in args.add_to_score)
    except QueryError as exc:
        raise CliError(str(exc)) from None
    query = Query(
        parts=parts,
        space=args.space,
        image_space_weight=args.image_space_weight,
        description_space_weight=args.description_space_weight,
        filter=args.filter,
        limit=args.limit,
        offset=args.offset,
        include_flagged=args.include_flagged,
        mode=args.mode,
        alpha=args.alpha,
        rrf_k=args.rrf_k,
        multiply_score_by=factors,
        add_to_score=addends,
    )
    try:
        with Searcher.open(Store(args.home), device=args.device) as searcher:
            hits = searcher.search(query)
    except QueryError as exc:
        raise CliError(str(exc)) from None
    if args.html:
        title = " + ".join(f"{p.kind} {p.value!r} x{p.weight:g}" for p in parts)
        title += f" | space {args.space}" + (f" | filter {args.filter}" if args.filter else "")
        write_gallery(hits, args.html, title, shown_columns=("label", "top_label", "source"))
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2, default=str))
    else:
        for rank, h in enumerate(hits, start=1 + args.offset):
            desc = h.columns.get("caption") or h.columns.get("top_label") or ""
            print(f"{rank:4d}  {h.score:8.4f}  {h.id}  {desc}  {h.path}")
        if not hits:
            print("no hits" + (" (the filter matched nothing)" if args.filter else ""), file=sys.stderr)
    if args.html:
        print(f"gallery written to {args.html}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hotdog_dagster.core.search.engine import Searcher
    from hotdog_dagster.serve import create_app

    if args.max_upload_mb <= 0:
        raise CliError(f"--max-upload-mb must be positive, got {args.max_upload_mb:g}")
    with Searcher.open(Store(args.home), device=args.device) as searcher:
        app = create_app(searcher, max_upload_bytes=int(args.max_upload_mb * 2**20))
        print(
            f"hotdog serve: {len(searcher.ids):,} images from {searcher.store.root} on http://{args.host}:{args.port}/"
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hotdog_dagster.core.model.evaluation import EVAL_SEED, evaluate_sketch_model
    from hotdog_dagster.core.model.names import SKETCH_MODEL

    report = evaluate_sketch_model(args.model or SKETCH_MODEL, seed=args.seed or EVAL_SEED, n=args.n)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if not report.failures() else 1


COMMANDS = {
    "run": cmd_run,
    "plan": cmd_plan,
    "regenerate": cmd_regenerate,
    "prepare": cmd_prepare,
    "walk": cmd_walk,
    "search": cmd_search,
    "serve": cmd_serve,
    "evaluate-model": cmd_evaluate,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CliError as exc:
        print(f"hotdog {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # bad files, specs, settings: one line
        print(f"hotdog {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hotdog {args.command}: interrupted; finished batches are kept, re-run to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
