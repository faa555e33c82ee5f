"""Adding one batch to a cleaned set costs about the batch, not the set.

Builds once (and reuses from ``--home``) a set of ``--base`` drawn sketches in batches of ``--base-batch``,
through the real ingest and embedding paths (the shipped model, CPU), cleaned batch by batch as the
assets do. Then one more batch of ``--batch`` files arrives: planted copies of earlier images
(bench/planted.py: JPEG, resize, crop of up to 10% per side, chains) and new drawings. Times, in the
same run:

incremental  what the per-batch and whole-set assets do for it: ``blank_table`` and ``batch_edges``
             of the new batch (searched against every stored image), then ``resolve_groups``
full         ``assess``: every image cleaned again as one batch

and checks that both give identical blank flags, groups and representatives. Ingest and embedding
of the new batch are timed apart (they are the same whichever way cleaning goes).

    python bench/incremental.py                       # 50,000 (batches of 1,000) + 1,000
    python bench/incremental.py --base-batch 10000 --home /tmp/hotdog-inc-10k   # the set in batches of 10,000
    python bench/incremental.py --base 100000 --home /tmp/hotdog-inc-100k
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planted import copies_of, copy_count, non_black  # noqa: E402

from hotdog_dagster.core import clean  # noqa: E402
from hotdog_dagster.core.io.batches import BATCH_TABLES, list_source_files, plan_folder, plan_sketch  # noqa: E402
from hotdog_dagster.core.io.ingest import ingest_batch  # noqa: E402
from hotdog_dagster.core.io.store import Store  # noqa: E402
from hotdog_dagster.core.model import sketch  # noqa: E402
from hotdog_dagster.core.model.embedding import embed_partition  # noqa: E402
from hotdog_dagster.core.model.encoder import ClipEncoder  # noqa: E402
from hotdog_dagster.core.model.names import SKETCH_MODEL  # noqa: E402
from hotdog_dagster.core.settings import CleanSettings  # noqa: E402

FIELDS = ["id", "is_blank", "blank_code", "duplicate_group", "group_size", "duplicate_of", "dup_code", "keep"]


def clean_batch(store: Store, key: str, settings: CleanSettings) -> dict:
    """What the per-batch asset does: blank flags and edges of one batch, written."""
    store.write_table("image_quality", clean.blank_table(store.read_table("images", key), settings), key)
    edges = clean.batch_edges(store, key, settings)
    store.write_table("duplicate_edges", edges.table, key)
    return edges.stats


def build_base(home: Path, base: int, batch: int, seed: int, settings: CleanSettings, encoder: ClipEncoder) -> Store:
    """The cleaned set the new batch arrives in (kept in ``home`` for the next run)."""
    store = Store(home)
    done = home / "base-complete.txt"
    if done.exists() and done.read_text() == f"{base} {batch} {seed}":
        return store
    if home.exists():
        shutil.rmtree(home)
    t0 = time.perf_counter()
    for spec in plan_sketch(seed, base, batch):
        ingest_batch(store, spec, workers=2)
        embed_partition(store, spec.key, encoder, batch_size=256, num_workers=1)
        clean_batch(store, spec.key, settings)
        print(f"  base {spec.key}: {time.perf_counter() - t0:.0f} s", flush=True)
    done.write_text(f"{base} {batch} {seed}")
    return store


def new_batch_files(folder: Path, base: int, batch: int, seed: int) -> int:
    """``batch`` files: copies of about 300 earlier images, the rest new drawings; returns the copies."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    originals = non_black(seed, base)[:: max(1, base // 400)]  # spread over the earlier batches
    written = 0
    for number, index in enumerate(originals):
        if written + copy_count(number) > batch * 3 // 10:
            break
        for k, c in enumerate(copies_of(sketch.draw(seed, index, size=128).image, number, seed, 0.10)):
            c.image.save(folder / f"copy-{index:07d}-{k}-{c.kind}.png")
            written += 1
    for i in range(batch - written):
        sketch.draw(seed + 1, i, size=128).image.save(folder / f"new-{i:05d}.png")
    return written


def drop_batch(store: Store, key: str) -> None:
    for table in BATCH_TABLES:  # the label tables too: this bench never writes them, dropping is a no-op
        store.drop_partition(table, key)
    shutil.rmtree(store.images_dir / key, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=int, default=50_000, help="images already cleaned (default 50000)")
    p.add_argument("--batch", type=int, default=1_000, help="images in the new batch (default 1000)")
    p.add_argument("--base-batch", type=int, help="images per batch of the cleaned set (default: --batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "hotdog-bench-incremental")
    args = p.parse_args()

    settings = CleanSettings()
    encoder = ClipEncoder(SKETCH_MODEL, device="cpu")
    store = build_base(args.home.resolve(), args.base, args.base_batch or args.batch, args.seed, settings, encoder)
    folder = args.home.resolve() / "new-files"
    planted = new_batch_files(folder, args.base, args.batch, args.seed)
    spec = plan_folder(folder, list_source_files(folder), partition_size=args.batch)[0]
    drop_batch(store, spec.key)

    t0 = time.perf_counter()
    ingest_batch(store, spec, workers=2)
    embed_partition(store, spec.key, encoder, batch_size=256, num_workers=1)
    ingest_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats = clean_batch(store, spec.key, settings)
    edges_s = time.perf_counter() - t0
    groups = clean.resolve_groups(store, settings)
    incremental_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    full = clean.assess(store, settings)
    full_s = time.perf_counter() - t0

    a, b = groups.select(FIELDS).sort_by("id"), full.groups.select(FIELDS).sort_by("id")
    identical = a.equals(b)
    summary = clean.summarize(groups)
    new_ids = set(store.read_table("images", spec.key, columns=["id"]).column("id").to_pylist())
    new_rows = groups.filter(np.isin(groups.column("id").to_numpy(zero_copy_only=False), list(new_ids)))
    copies_grouped = sum(
        1 for r in new_rows.to_pylist() if r["duplicate_group"] is not None and r["duplicate_of"] not in new_ids
    )
    print(
        f"{summary['images']:,} images ({args.base:,} cleaned + {args.batch:,} new, {planted} of them planted "
        f"copies of earlier images); new batch ingested and embedded in {ingest_s:.1f} s (not counted)"
    )
    print(
        f"incremental: {incremental_s:8.2f} s  (blank flags + edges of the batch {edges_s:.2f} s: "
        f"{stats['queries']} queries against {stats['indexed']:,}, {stats['candidates']} candidates, "
        f"{stats['verified']} edges; resolve groups {incremental_s - edges_s:.2f} s)"
    )
    print(
        f"full:        {full_s:8.2f} s  (assess: {full.edges.stats['candidates']:,} candidates, "
        f"{full.edges.stats['verified']:,} edges over the whole set)"
    )
    print(
        f"ratio full / incremental: {full_s / incremental_s:.1f}x (target >= 20); identical flags, groups and "
        f"representatives: {identical}; {summary['groups']:,} groups, new images grouped with an earlier "
        f"representative: {copies_grouped}"
    )
    if not identical:
        raise SystemExit("FAILED: incremental and full cleaning disagree")


if __name__ == "__main__":
    main()
