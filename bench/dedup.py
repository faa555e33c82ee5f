"""Near-duplicate candidates over a whole set: our exact FAISS range search against blockwise all-pairs numpy.

Inputs: the cleaning descriptors (``core/clean/descriptor.py``) of ``--n`` drawn sketches (128 px, no
black frames), ``--planted`` of which are given copies (bench/planted.py: JPEG, resize, crop of up
to ``--max-crop`` per side, and a chain of three for every tenth). Both paths see the same
descriptors and radii and keep a pair when either part is close:

ours      ``core.clean.candidates.range_candidates``: FAISS range search per part, queries sorted by
          their sum of values and searched in blocks against the slab of rows whose sums can be
          within reach (an exact bound), exact integer distances
baseline  numpy, blocks of 4,096 rows against all rows: distances from one matrix product per part,
          thresholded

Both are exact, so they must give the same candidate pairs and the same groups; the ratio is
baseline seconds / ours. The candidates are then confirmed by the aligned pixel check (shared by
both, timed apart; the benchmark has no CLIP vectors, so the cosine check is left out) and the recall
of the planted pairs is measured on the confirmed groups: a copy counts when it ends up in its
original's group. Data are drawn once and cached (``--cache``).

    python bench/dedup.py                         # 50k, 2k planted originals, crops up to 10% per side
    python bench/dedup.py --n 100000 --planted 4000
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planted import copies_of, copy_count, non_black  # noqa: E402

from hotdog_dagster.core.clean.candidates import range_candidates  # noqa: E402
from hotdog_dagster.core.clean.descriptor import DESCRIPTOR_BYTES, GRID_DIMS, descriptors  # noqa: E402
from hotdog_dagster.core.clean.groups import connected_groups  # noqa: E402
from hotdog_dagster.core.clean.pixels import aligned_distance, thumbnail  # noqa: E402
from hotdog_dagster.core.model import sketch  # noqa: E402
from hotdog_dagster.core.settings import CleanSettings  # noqa: E402


def _draw(job: tuple[int, int, int, int, float]) -> tuple[np.ndarray, list[tuple[np.ndarray, str, int]]]:
    seed, index, number, size, max_crop = job
    img = sketch.draw(seed, index, size=size).image
    extra = [] if number < 0 else copies_of(img, number, seed, max_crop)
    return thumbnail(img), [(thumbnail(c.image), c.kind, c.parent) for c in extra]


def planted_set(
    n: int, planted: int, seed: int, size: int, max_crop: float, cache: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thumbnails ``(n, 32, 32, 3)``, planted pairs ``(P, 2)`` of rows, and each row's kind."""
    path = cache / f"dedup-n{n}-p{planted}-s{seed}-px{size}-crop{max_crop:g}.npz"
    if path.exists():
        z = np.load(path)
        return z["thumbs"], z["pairs"], z["kinds"]
    originals = non_black(seed, n - sum(copy_count(k) for k in range(planted)))
    jobs = [(seed, index, k if k < planted else -1, size, max_crop) for k, index in enumerate(originals)]
    with Pool(os.cpu_count()) as pool:
        drawn = pool.map(_draw, jobs, chunksize=256)
    thumbs = [t for t, _ in drawn]
    kinds = ["original"] * len(thumbs)
    pairs = []
    for k, (_, extra) in enumerate(drawn):
        rows = []
        for thumb, kind, parent in extra:
            rows.append(len(thumbs))
            pairs.append((k if parent < 0 else rows[parent], len(thumbs)))
            thumbs.append(thumb)
            kinds.append(kind)
    cache.mkdir(parents=True, exist_ok=True)
    out = np.stack(thumbs), np.array(pairs, dtype=np.int64), np.array(kinds)
    np.savez(path, thumbs=out[0], pairs=out[1], kinds=out[2])
    return out


def ours(desc: np.ndarray, settings: CleanSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The pipeline's path: range candidates, distinct pairs, union-find."""
    t0 = time.perf_counter()
    found = range_candidates(
        desc, desc, settings.grid_radius, settings.signature_radius, settings.max_candidates, same_set=True
    )
    a, b = _distinct(found.query, found.target)
    labels = connected_groups(len(desc), a, b)
    return a, b, labels, time.perf_counter() - t0


def baseline(
    desc: np.ndarray, settings: CleanSettings, block: int = 4096
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """All pairs in numpy: per block of rows, one matrix product per part against every row, thresholded."""
    t0 = time.perf_counter()
    x = desc.astype(np.float32)
    parts = []
    for radius, cols in (
        (settings.grid_radius, slice(0, GRID_DIMS)),
        (settings.signature_radius, slice(GRID_DIMS, DESCRIPTOR_BYTES)),
    ):
        v = np.ascontiguousarray(x[:, cols])
        parts.append((v, (v * v).sum(1), math.floor(radius * radius * v.shape[1]) + 0.5))
    a_parts, b_parts = [], []
    for start in range(0, len(x), block):
        close = None
        for v, norms, threshold in parts:
            dist = norms[start : start + block, None] + norms[None, :] - 2 * (v[start : start + block] @ v.T)
            close = dist < threshold if close is None else close | (dist < threshold)
        i, j = np.nonzero(close)
        a_parts.append(i + start)
        b_parts.append(j)
    a, b = _distinct(np.concatenate(a_parts), np.concatenate(b_parts))
    labels = connected_groups(len(desc), a, b)
    return a, b, labels, time.perf_counter() - t0


def _distinct(q: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.minimum(q, t), np.maximum(q, t)
    keep = lo != hi
    pairs = np.unique(np.stack([lo[keep], hi[keep]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def canonical(labels: np.ndarray) -> set[tuple[int, ...]]:
    """Groups (of two or more) as sorted tuples of rows, comparable across labelings."""
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return {tuple(g.tolist()) for g in np.split(order, cuts) if len(g) > 1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="images in all, copies included (default 50000)")
    p.add_argument("--planted", type=int, default=2_000, help="originals given copies (default 2000)")
    p.add_argument("--max-crop", type=float, default=0.10, help="largest cut per side of a planted crop (default 0.10)")
    p.add_argument("--size", type=int, default=128, help="pixels a side of the drawn sketches (default 128)")
    p.add_argument("--grid-radius", type=float, help="default: the setting's")
    p.add_argument("--signature-radius", type=float, help="default: the setting's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "hotdog_dagster" / "bench")
    args = p.parse_args()

    settings = CleanSettings(
        **{k: v for k, v in (("grid_radius", args.grid_radius), ("signature_radius", args.signature_radius)) if v}
    )
    t0 = time.perf_counter()
    thumbs, pairs, kinds = planted_set(args.n, args.planted, args.seed, args.size, args.max_crop, args.cache)
    desc = descriptors(thumbs)
    print(
        f"{len(desc):,} sketches ({args.size} px), {args.planted:,} planted originals, {len(pairs):,} planted pairs "
        f"(crops up to {args.max_crop:.0%} per side); radii grid {settings.grid_radius} / signature "
        f"{settings.signature_radius}; FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads; "
        f"data {time.perf_counter() - t0:.1f} s"
    )
    a, b, labels, ours_s = ours(desc, settings)
    print(
        f"ours     FAISS range search, slabs: {ours_s:8.2f} s  {len(a):,} candidate pairs ({2 * len(a) / len(desc):.2f} per image)"
    )
    ba, bb, base_labels, base_s = baseline(desc, settings)
    print(f"baseline numpy all pairs, blocks:  {base_s:8.2f} s  {len(ba):,} candidate pairs")
    same_pairs = len(a) == len(ba) and bool((a == ba).all() and (b == bb).all())
    same_groups = canonical(labels) == canonical(base_labels)
    print(
        f"ratio baseline / ours: {base_s / ours_s:.2f}x; same candidate pairs: {same_pairs}; identical groups: {same_groups}"
    )

    t0 = time.perf_counter()
    distance = aligned_distance(thumbs[a], thumbs[b], max_crop=settings.max_crop)
    ok = distance <= settings.pixel_max_distance
    verified = connected_groups(len(desc), a[ok], b[ok])
    verify_s = time.perf_counter() - t0
    candidate_recall = float((labels[pairs[:, 0]] == labels[pairs[:, 1]]).mean())
    hit = verified[pairs[:, 0]] == verified[pairs[:, 1]]
    missed = ", ".join(f"{k}: {int((~hit & (kinds[pairs[:, 1]] == k)).sum())}" for k in np.unique(kinds[pairs[:, 1]]))
    print(
        f"pixel check of the candidates (shared): {verify_s:.2f} s, {int(ok.sum()):,} confirmed, "
        f"{int((~ok).sum()):,} rejected; {len(canonical(verified)):,} groups"
    )
    print(
        f"recall of planted pairs: candidates {candidate_recall:.4f}, confirmed groups {hit.mean():.4f} "
        f"(missed by kind - {missed})"
    )
    if not (same_pairs and same_groups):
        raise SystemExit("FAILED: the two paths disagree")


if __name__ == "__main__":
    main()
