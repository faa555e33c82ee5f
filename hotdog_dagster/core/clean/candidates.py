"""Near-duplicate candidates: exact FAISS range searches over the descriptor, in bounded memory.

A pair is a candidate when its grid parts are within ``grid_radius`` or its signatures within
``signature_radius`` (root mean square per value, in levels; see ``descriptor.py``). Descriptor
values are whole numbers and flat indexes compute exact distances, so the relation is symmetric:
a pair is found from whichever end is searched, whatever order the images arrived in.

Queries go in blocks whose size follows the density met so far (a block's results stay near
``BLOCK_RESULTS``), and a query with more than ``max_candidates`` partners keeps its nearest ones,
with a warning: memory stays bounded even where thousands of images look alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from hotdog_dagster.core.clean.descriptor import DESCRIPTOR_BYTES, GRID_DIMS

log = logging.getLogger(__name__)

BLOCK_RESULTS = 2_000_000  # range-search results one block aims at (about 24 MB)
FIRST_BLOCK = 256  # queries in the first block, before the density is known
MAX_BLOCK = 8192  # queries per block at most
MIN_BLOCK = 64  # queries per block at least, however close their sums (fewer, larger FAISS calls)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Candidates:
    query: np.ndarray  # (P,) int64 query rows
    target: np.ndarray  # (P,) int64 database rows (a query's own row included when it is in the database)
    capped: int  # queries that had more than max_candidates partners and kept the nearest


def range_candidates(
    queries: np.ndarray,
    database: np.ndarray,
    grid_radius: float | None,
    signature_radius: float | None,
    max_candidates: int,
    progress: Progress | None = None,
    same_set: bool = False,
) -> Candidates:
    """Every (query, database row) pair within either radius; ``(n, 57)`` uint8 descriptors on both sides.

    A radius of None switches that part off. ``max_candidates`` counts partners per query besides
    itself; beyond it the nearest are kept (by distance relative to the radius that found them).
    ``same_set``: the queries are the database (same rows, same order), as in a full rebuild; each
    pair is then searched from one end only, which halves the work, and may come back once or twice.
    """
    queries = np.asarray(queries, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES)
    database = np.asarray(database, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES)
    parts = [
        (radius, cols)
        for radius, cols in ((grid_radius, slice(0, GRID_DIMS)), (signature_radius, slice(GRID_DIMS, DESCRIPTOR_BYTES)))
        if radius is not None
    ]
    if not parts or len(queries) == 0 or len(database) == 0:
        return Candidates(np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    found, capped = [], set()
    for k, (radius, cols) in enumerate(parts):

        def report(done: int, total: int, k: int = k) -> None:
            if progress:
                progress(k * total + done, len(parts) * total)

        q, t, score, cut = _search_part(
            queries[:, cols], database[:, cols], radius, max_candidates + 1, report, same_set
        )
        found.append((q, t, score))
        capped |= cut
    q, t, score = (np.concatenate(x) for x in zip(*found, strict=True))
    q, t, score = _nearest_first(q, t, score)
    q, t, _, cut = _cap(q, t, score, max_candidates + 1)  # + 1: a query finds itself
    capped |= cut
    if capped:
        log.warning(
            "%d images had more than %d near-duplicate candidates (a dense region of look-alikes); "
            "kept the nearest %d of each: raise clean.max_candidates to see them all",
            len(capped),
            max_candidates,
            max_candidates,
        )
    return Candidates(q, t, len(capped))


def _search_part(
    queries: np.ndarray, database: np.ndarray, radius: float, cap: int, progress: Progress, same_set: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, set[int]]:
    """Range search of one part, in blocks of queries sorted by their sum of values.

    ``|sum(x) - sum(y)| <= sqrt(d) * |x - y|``, so a block of queries whose sums lie in [lo, hi] can
    only meet database rows whose sums lie within ``sqrt(d) * radius`` of that interval: each block
    is searched against that slab alone. Exact (a bound, not a guess), and it skips most of the set.
    Within one set, a pair is found from its end with the smaller sum, so the slab can start at the
    block's own smallest sum.
    """
    dims = queries.shape[1]
    threshold = math.floor(radius * radius * dims) + 0.5  # whole-number distances up to r^2 * d; FAISS keeps < this
    reach = math.sqrt(dims * threshold) + 1e-6
    q_sum = queries.sum(axis=1, dtype=np.int64)
    d_sum = database.sum(axis=1, dtype=np.int64)
    d_order = np.argsort(d_sum, kind="stable")
    d_sorted_sum = d_sum[d_order]
    d_sorted = np.ascontiguousarray(database[d_order], dtype=np.float32)
    q_order = np.argsort(q_sum, kind="stable")
    out_q, out_t, out_s, capped = [], [], [], set()
    start, block = 0, FIRST_BLOCK
    q_sorted_sum = q_sum[q_order]
    while start < len(q_order):
        # A block spans at most ``reach`` of sums (or MIN_BLOCK queries), so its slab stays narrow.
        end = np.searchsorted(q_sorted_sum, q_sorted_sum[start] + reach, side="right")
        rows = q_order[start : min(start + block, max(end, start + MIN_BLOCK))]
        lo = np.searchsorted(d_sorted_sum, q_sum[rows[0]] - (0 if same_set else reach), side="left")
        hi = np.searchsorted(d_sorted_sum, q_sum[rows[-1]] + reach, side="right")
        index = faiss.IndexFlatL2(dims)
        index.add(d_sorted[lo:hi])
        lims, dist, labels = index.range_search(np.ascontiguousarray(queries[rows], dtype=np.float32), threshold)
        counts = np.diff(lims).astype(np.int64)
        q = rows[np.repeat(np.arange(len(rows)), counts)]
        t = d_order[lo + labels.astype(np.int64)]
        q, t, score = _nearest_first(q, t, dist / threshold)
        q, t, score, cut = _cap(q, t, score, cap)
        capped |= cut
        out_q.append(q)
        out_t.append(t)
        out_s.append(score)
        start += len(rows)
        progress(start, len(q_order))
        per_query = counts.sum() / len(rows)
        block = int(np.clip(BLOCK_RESULTS / max(per_query, 1.0), 1, min(MAX_BLOCK, 2 * block)))
    return np.concatenate(out_q), np.concatenate(out_t), np.concatenate(out_s), capped


def _nearest_first(q: np.ndarray, t: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (query, target) once (found by either part: its smaller relative distance), nearest first per query."""
    order = np.lexsort((score, t, q))
    q, t, score = q[order], t[order], score[order]
    first = np.r_[True, (q[1:] != q[:-1]) | (t[1:] != t[:-1])]
    q, t, score = q[first], t[first], score[first]
    order = np.lexsort((t, score, q))
    return q[order], t[order], score[order]


def _cap(
    q: np.ndarray, t: np.ndarray, score: np.ndarray, cap: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, set[int]]:
    """Keep the first ``cap`` pairs of each query (already nearest first); the queries that were cut."""
    if len(q) == 0:
        return q, t, score, set()
    starts = np.r_[0, np.flatnonzero(q[1:] != q[:-1]) + 1]
    counts = np.diff(np.r_[starts, len(q)])
    rank = np.arange(len(q)) - np.repeat(starts, counts)
    keep = rank < cap
    return q[keep], t[keep], score[keep], set(q[starts[counts > cap]].tolist())
