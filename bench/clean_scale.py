"""Recall of planted copies and candidate counts at scale, through the real ingest path (CPU only).

Draws ``--images`` sketches in batches of ``--partition-size`` with ``ingest_batch`` (which writes
each batch's thumbnails and descriptors), then one more batch of planted copies of ``--planted``
originals spread over the whole set (bench/planted.py: JPEG, resize, crop of up to ``--max-crop``
per side, every tenth with a chain of three), saved as files and ingested like any folder. Then:

- the planted batch is searched against every stored image, as ``batch_edges`` does (non-blank
  rows, both radii, the cap): candidate recall is the share of planted pairs joined by candidates
  (directly, or through a chain), confirmed recall the share still joined after the aligned pixel
  check (the cosine check needs embeddings, which this run does not compute);
- ``--sample`` random images are searched against the whole set: candidates per image, capped
  queries and seconds per 1,000 queries at this size (what a batch costs).

Ingested batches are kept in ``--home`` and reused. Prints timings and the peak memory.

    python bench/clean_scale.py                          # 200,000 + copies of 2,000
    python bench/clean_scale.py --images 400000 --home /data/hotdog-scale
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planted import copies_of, non_black  # noqa: E402

from hotdog_dagster.core.clean.candidates import range_candidates  # noqa: E402
from hotdog_dagster.core.clean.edges import searchable  # noqa: E402
from hotdog_dagster.core.clean.groups import connected_groups  # noqa: E402
from hotdog_dagster.core.clean.pixels import aligned_distance  # noqa: E402
from hotdog_dagster.core.clean.stored import thumbs_of  # noqa: E402
from hotdog_dagster.core.io.batches import list_source_files, plan_folder, plan_sketch  # noqa: E402
from hotdog_dagster.core.io.ingest import ingest_batch  # noqa: E402
from hotdog_dagster.core.io.store import Store  # noqa: E402
from hotdog_dagster.core.model import sketch  # noqa: E402
from hotdog_dagster.core.settings import CleanSettings  # noqa: E402


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def ingest_set(store: Store, images: int, partition_size: int, seed: int, workers: int) -> float:
    """Ingest the sketch batches not yet in the store; returns the seconds spent on this call."""
    t0 = time.perf_counter()
    have = set(store.partitions("thumbnails"))
    for spec in plan_sketch(seed, images, partition_size):
        if spec.key in have:
            continue
        ingest_batch(store, spec, workers=workers)
        print(f"  ingested {spec.key} ({time.perf_counter() - t0:.0f} s, peak {peak_gib():.2f} GiB)", flush=True)
    return time.perf_counter() - t0


def plant(folder: Path, images: int, planted: int, seed: int, max_crop: float) -> list[tuple[str, str]]:
    """Write the copies; returns planted pairs as (source name, source name) of the two ends."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    picks = non_black(seed, images)
    picks = [i for i in picks if i < images][:: max(1, len(picks) // planted)][:planted]
    pairs = []
    for number, index in enumerate(picks):
        names = []
        for k, copy in enumerate(copies_of(sketch.draw(seed, index, size=128).image, number, seed, max_crop)):
            name = f"copy-{index:07d}-{k}-{copy.kind}.png"
            copy.image.save(folder / name)
            names.append(name)
            pairs.append((f"sketch/{seed}/{index}" if copy.parent < 0 else names[copy.parent], name))
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200_000)
    p.add_argument("--partition-size", type=int, default=10_000)
    p.add_argument("--planted", type=int, default=2_000, help="originals given copies (default 2000)")
    p.add_argument("--max-crop", type=float, default=0.10)
    p.add_argument("--sample", type=int, default=20_000, help="random images searched against the set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="ingest decode threads")
    p.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "hotdog-bench-scale")
    args = p.parse_args()
    settings = CleanSettings()
    store = Store(args.home)

    ingest_s = ingest_set(store, args.images, args.partition_size, args.seed, args.workers)
    folder = args.home / "planted-files"
    pairs = plant(folder, args.images, args.planted, args.seed, args.max_crop)
    spec = plan_folder(folder, list_source_files(folder), partition_size=len(pairs) + 1)[0]
    ingest_batch(store, spec, workers=args.workers)
    (args.home / "planted-pairs.json").write_text(json.dumps(pairs))

    t0 = time.perf_counter()
    found = searchable(store, settings)
    read_s = time.perf_counter() - t0
    eligible = found.eligible
    db = np.flatnonzero(eligible)
    names = store.read_table("images", columns=["id", "source_name"]).to_pydict()
    row_of_name = _rows_by_name(found.ids, names)
    queries = np.flatnonzero(eligible & (found.partitions == spec.key))

    t0 = time.perf_counter()
    cand = range_candidates(
        found.descriptors[queries],
        found.descriptors[db],
        settings.grid_radius,
        settings.signature_radius,
        settings.max_candidates,
    )
    batch_s = time.perf_counter() - t0
    qa, tb = queries[cand.query], db[cand.target]
    keep = qa != tb
    qa, tb = qa[keep], tb[keep]
    ends = np.array([[row_of_name[a], row_of_name[b]] for a, b in pairs], dtype=np.int64)
    labels = connected_groups(len(found.ids), qa, tb)
    candidate_recall = float((labels[ends[:, 0]] == labels[ends[:, 1]]).mean())

    t0 = time.perf_counter()
    lo, hi = np.minimum(qa, tb), np.maximum(qa, tb)
    uniq = np.unique(np.stack([lo, hi], 1), axis=0)
    rows = np.unique(uniq)
    thumbs, ok = thumbs_of(store, found.ids[rows].tolist(), found.partitions[rows].tolist())
    a, b = np.searchsorted(rows, uniq[:, 0]), np.searchsorted(rows, uniq[:, 1])
    dist = aligned_distance(thumbs[a], thumbs[b], max_crop=settings.max_crop)
    good = ok[a] & ok[b] & (dist <= settings.pixel_max_distance)
    verified = connected_groups(len(found.ids), uniq[good, 0], uniq[good, 1])
    verify_s = time.perf_counter() - t0
    hit = verified[ends[:, 0]] == verified[ends[:, 1]]
    kinds = np.array([b.rsplit("-", 1)[-1].removesuffix(".png") for _, b in pairs])
    missed = {k: int((~hit & (kinds == k)).sum()) for k in np.unique(kinds)}

    rng = np.random.default_rng(args.seed)
    sample = rng.choice(db, size=min(args.sample, len(db)), replace=False)
    t0 = time.perf_counter()
    dense = range_candidates(
        found.descriptors[sample],
        found.descriptors[db],
        settings.grid_radius,
        settings.signature_radius,
        settings.max_candidates,
    )
    sample_s = time.perf_counter() - t0
    per = np.bincount(dense.query, minlength=len(sample)) - 1  # besides itself

    print(
        f"{len(found.ids):,} images ({args.images:,} sketches in batches of {args.partition_size:,} + "
        f"{len(pairs):,} planted copies of {args.planted:,} originals, crops up to {args.max_crop:.0%} per side), "
        f"{int(eligible.sum()):,} searchable (not blank); ingest this run {ingest_s:.0f} s; "
        f"descriptors and flags read in {read_s:.1f} s"
    )
    print(
        f"planted batch: {len(queries):,} queries in {batch_s:.1f} s, {int(keep.sum()):,} candidate pairs; "
        f"recall of {len(pairs):,} planted pairs: candidates {candidate_recall:.4f}, after the pixel check "
        f"{hit.mean():.4f} (missed: {missed}); pixel check {verify_s:.1f} s for {len(uniq):,} pairs"
    )
    print(
        f"{len(sample):,} random images against the whole set: {sample_s:.1f} s ({1000 * sample_s / len(sample):.2f} s "
        f"per 1,000), candidates per image mean {per.mean():.2f}, 99th percentile {np.percentile(per, 99):.0f}, "
        f"max {per.max()}, capped {dense.capped}; peak memory {peak_gib():.2f} GiB"
    )


def _rows_by_name(ids: np.ndarray, names: dict[str, list]) -> dict[str, int]:
    row_of_id = {i: r for r, i in enumerate(ids.tolist())}
    return {n: row_of_id[i] for i, n in zip(names["id"], names["source_name"], strict=True) if i in row_of_id}


if __name__ == "__main__":
    main()
