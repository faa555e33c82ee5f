"""Near-duplicate edges of one batch, found against every image stored so far, each verified exactly.

A batch's images are searched (``candidates.py``) against the descriptors of every stored image that
is not blank, the batch included. Each candidate pair is then confirmed twice: the cosine of the two
image vectors must reach ``near_threshold``, and the aligned pixel distance of the two thumbnails
(``pixels.py``) must be at most ``pixel_max_distance``. The candidate relation is symmetric, so a
pair is found by whichever of its two batches is cleaned later: the union of every batch's edges is
the same whatever order batches arrive in, and equals the edges of the whole set searched at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from hotdog_dagster.core.clean import stored
from hotdog_dagster.core.clean.blank import blank_flags
from hotdog_dagster.core.clean.candidates import range_candidates
from hotdog_dagster.core.clean.descriptor import DESCRIPTOR_BYTES, descriptors_from_column
from hotdog_dagster.core.clean.pixels import aligned_distance
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.settings import CleanSettings

Progress = Callable[[int, int], None]

EDGES_SCHEMA = pa.schema(
    [
        ("a", pa.string()),  # the smaller image id
        ("b", pa.string()),
        ("similarity", pa.float32()),  # cosine of the two image vectors
        ("pixel_distance", pa.float32()),  # aligned thumbnail RMSE (null: pixels not checked)
    ]
)

_IMAGE_COLUMNS = ["id", "partition", "lum_mean", "lum_std", "safety_flagged"]


@dataclass(frozen=True)
class EdgeResult:
    """The ``duplicate_edges`` rows of a batch (written by the caller) and how they were found."""

    table: pa.Table
    #: queries, indexed, candidates, verified, vetoed_by_cosine, vetoed_by_pixels, unverifiable,
    #: capped_queries, missing_descriptors, seconds: plain numbers for run metadata.
    stats: dict[str, int | float] = field(default_factory=dict)


@dataclass(frozen=True)
class Searchable:
    """Every stored image with its partition, blank flag and descriptor (rows in partition order)."""

    ids: np.ndarray  # (N,) object
    partitions: np.ndarray  # (N,) object
    blank: np.ndarray  # (N,) bool
    descriptors: np.ndarray  # (N, 57) uint8
    has_descriptor: np.ndarray  # (N,) bool

    @property
    def eligible(self) -> np.ndarray:
        """Rows that take part in near-duplicate search: not blank, with a usable descriptor."""
        return ~self.blank & self.has_descriptor


def batch_edges(store: Store, partition: str, settings: CleanSettings, progress: Progress | None = None) -> EdgeResult:
    """Verified near-duplicate pairs with at least one end in ``partition``, against every stored image.

    Reads the ``images`` and ``thumbnails`` descriptors of every partition (narrow columns), and the
    vectors and thumbnails of candidate pairs only. Writes nothing: the caller writes ``table``.
    """
    return find_edges(store, settings, partition=partition, progress=progress)


def find_edges(
    store: Store, settings: CleanSettings, partition: str | None = None, progress: Progress | None = None
) -> EdgeResult:
    """Edges with an end in ``partition``, or among all images when ``partition`` is None (a full rebuild)."""
    t0 = time.perf_counter()
    found = searchable(store, settings)
    eligible = found.eligible
    query_mask = eligible if partition is None else eligible & (found.partitions == partition)
    stats: dict[str, int | float] = {
        "queries": int(query_mask.sum()),
        "indexed": int(eligible.sum()),
        "candidates": 0,
        "verified": 0,
        "vetoed_by_cosine": 0,
        "vetoed_by_pixels": 0,
        "unverifiable": 0,
        "capped_queries": 0,
        "missing_descriptors": int((~found.blank & ~found.has_descriptor & _in(found, partition)).sum()),
    }
    if not settings.near_duplicates or not query_mask.any():
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        return EdgeResult(EDGES_SCHEMA.empty_table(), stats)

    query_rows, db_rows = np.flatnonzero(query_mask), np.flatnonzero(eligible)
    cand = range_candidates(
        found.descriptors[query_rows],
        found.descriptors[db_rows],
        settings.grid_radius,
        settings.signature_radius,
        settings.max_candidates,
        progress=progress,
        same_set=partition is None,  # a full rebuild: every eligible row is both query and target
    )
    stats["capped_queries"] = cand.capped
    lo, hi = _pairs(found.ids, query_rows[cand.query], db_rows[cand.target])
    stats["candidates"] = len(lo)

    table, counts = verify(store, found.ids, found.partitions, lo, hi, settings)
    stats.update(counts)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return EdgeResult(table, stats)


def searchable(store: Store, settings: CleanSettings) -> Searchable:
    """Every stored image (one row per id) with its blank flag and stored descriptor."""
    images = stored.read_columns(store, "images", _IMAGE_COLUMNS)
    if images is None or images.num_rows == 0:
        empty = np.zeros(0, dtype=object)
        return Searchable(empty, empty, np.zeros(0, bool), np.zeros((0, DESCRIPTOR_BYTES), np.uint8), np.zeros(0, bool))
    images = stored.unique_ids(images, "images")
    ids = np.asarray(images.column("id").to_pylist(), dtype=object)
    partitions = np.asarray(images.column("partition").to_pylist(), dtype=object)
    blank = blank_flags(images, settings).is_blank
    desc = np.zeros((len(ids), DESCRIPTOR_BYTES), dtype=np.uint8)
    has = np.zeros(len(ids), dtype=bool)
    thumbs = stored.read_columns(store, "thumbnails", ["id", "descriptor"])
    if thumbs is not None and thumbs.num_rows and "descriptor" in thumbs.column_names:
        thumbs = stored.unique_ids(thumbs, "thumbnails")
        values, usable = descriptors_from_column(thumbs.column("descriptor"))
        pos = stored.positions(thumbs.column("id"), ids.tolist())
        hit = pos >= 0
        desc[hit] = values[pos[hit]]
        has[hit] = usable[pos[hit]]
    return Searchable(ids, partitions, blank, desc, has)


def verify(
    store: Store,
    ids: np.ndarray,
    partitions: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    settings: CleanSettings,
) -> tuple[pa.Table, dict[str, int]]:
    """Confirm candidate pairs (rows ``lo[i]``, ``hi[i]``): cosine first (cheap), then pixels."""
    counts = {"verified": 0, "vetoed_by_cosine": 0, "vetoed_by_pixels": 0, "unverifiable": 0}
    if len(lo) == 0:
        return EDGES_SCHEMA.empty_table(), counts
    rows = np.unique(np.concatenate([lo, hi]))
    vectors, has_vector = stored.vectors_of(store, ids[rows].tolist(), partitions[rows].tolist())
    a, b = np.searchsorted(rows, lo), np.searchsorted(rows, hi)
    known = has_vector[a] & has_vector[b]
    similarity = np.full(len(lo), np.nan, dtype=np.float32)
    if known.any():
        similarity[known] = np.einsum("ij,ij->i", vectors[a[known]], vectors[b[known]])
    close = known & (similarity >= settings.near_threshold)
    counts["unverifiable"] = int((~known).sum())
    counts["vetoed_by_cosine"] = int((known & ~close).sum())
    keep = close
    distance = np.full(len(lo), np.nan, dtype=np.float32)
    if settings.pixel_max_distance is not None and close.any():
        need = np.unique(np.concatenate([a[close], b[close]]))
        thumbs, has_thumb = stored.thumbs_of(store, ids[rows[need]].tolist(), partitions[rows[need]].tolist())
        ta, tb = np.searchsorted(need, a), np.searchsorted(need, b)
        seen = close & has_thumb[np.minimum(ta, len(need) - 1)] & has_thumb[np.minimum(tb, len(need) - 1)]
        counts["unverifiable"] += int((close & ~seen).sum())
        if seen.any():
            distance[seen] = aligned_distance(thumbs[ta[seen]], thumbs[tb[seen]], max_crop=settings.max_crop)
        keep = seen & (distance <= settings.pixel_max_distance)
        counts["vetoed_by_pixels"] = int((seen & ~keep).sum())
    counts["verified"] = int(keep.sum())
    order = np.argsort(ids[lo[keep]].astype(str) + "\0" + ids[hi[keep]].astype(str), kind="stable")
    table = pa.table(
        {
            "a": pa.array(ids[lo[keep]][order].tolist(), pa.string()),
            "b": pa.array(ids[hi[keep]][order].tolist(), pa.string()),
            "similarity": pa.array(similarity[keep][order], pa.float32()),
            "pixel_distance": pa.array(distance[keep][order], pa.float32(), mask=np.isnan(distance[keep][order])),
        },
        schema=EDGES_SCHEMA,
    )
    return table, counts


def _pairs(ids: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct unordered pairs of rows, each as (row of the smaller id, row of the larger id)."""
    differ = x != y
    x, y = x[differ], y[differ]
    swap = ids[x].astype(str) > ids[y].astype(str)
    lo, hi = np.where(swap, y, x), np.where(swap, x, y)
    if len(lo) == 0:
        return lo.astype(np.int64), hi.astype(np.int64)
    pairs = np.unique(np.stack([lo, hi], axis=1), axis=0)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def _in(found: Searchable, partition: str | None) -> np.ndarray:
    return np.ones(len(found.ids), bool) if partition is None else found.partitions == partition
