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
) -> Candidates:
    """Every (query, database row) pair within either radius; ``(n, 57)`` uint8 descriptors on both sides.

    A radius of None switches that part off. ``max_candidates`` counts partners per query besides
    itself; beyond it the nearest are kept (by distance relative to the radius that found them).
    """
    queries = np.asarray(queries, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES)
    database = np.asarray(database, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES)
    parts = []
    for radius, cols in ((grid_radius, slice(0, GRID_DIMS)), (signature_radius, slice(GRID_DIMS, DESCRIPTOR_BYTES))):
        if radius is None or len(database) == 0:
            continue
        dims = cols.stop - cols.start
        index = faiss.IndexFlatL2(dims)
        index.add(np.ascontiguousarray(database[:, cols], dtype=np.float32))
        # Whole-number distances up to floor(r^2 * d) are in; FAISS keeps distances strictly below.
        threshold = math.floor(radius * radius * dims) + 0.5
        parts.append((index, cols, threshold))
    empty = Candidates(np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    if not parts or len(queries) == 0:
        return empty
    out_q, out_t, capped = [], [], 0
    start, block = 0, FIRST_BLOCK
    while start < len(queries):
        rows = np.arange(start, min(start + block, len(queries)))
        q, t, score = [], [], []
        for index, cols, threshold in parts:
            lims, dist, labels = index.range_search(
                np.ascontiguousarray(queries[rows][:, cols], dtype=np.float32), threshold
            )
            q.append(rows[np.repeat(np.arange(len(rows)), np.diff(lims).astype(np.int64))])
            t.append(labels.astype(np.int64))
            score.append(dist / threshold)
        q, t, score = np.concatenate(q), np.concatenate(t), np.concatenate(score)
        results = len(q)
        q, t, score = _nearest_first(q, t, score)
        q, t, n_capped = _cap(q, t, max_candidates + 1)  # + 1: a query finds itself
        capped += n_capped
        out_q.append(q)
        out_t.append(t)
        start = rows[-1] + 1
        if progress:
            progress(int(start), len(queries))
        per_query = results / len(rows)
        block = int(np.clip(BLOCK_RESULTS / max(per_query, 1.0), 1, min(MAX_BLOCK, 2 * block)))
    if capped:
        log.warning(
            "%d images had more than %d near-duplicate candidates (a dense region of look-alikes); "
            "kept the nearest %d of each: raise clean.max_candidates to see them all",
            capped,
            max_candidates,
            max_candidates,
        )
    return Candidates(np.concatenate(out_q), np.concatenate(out_t), capped)


def _nearest_first(q: np.ndarray, t: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (query, target) once (found by either part: its smaller relative distance), nearest first per query."""
    order = np.lexsort((score, t, q))
    q, t, score = q[order], t[order], score[order]
    first = np.r_[True, (q[1:] != q[:-1]) | (t[1:] != t[:-1])]
    q, t, score = q[first], t[first], score[first]
    order = np.lexsort((t, score, q))
    return q[order], t[order], score[order]


def _cap(q: np.ndarray, t: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the first ``cap`` pairs of each query (already nearest first); count the queries cut."""
    if len(q) == 0:
        return q, t, 0
    starts = np.r_[0, np.flatnonzero(q[1:] != q[:-1]) + 1]
    counts = np.diff(np.r_[starts, len(q)])
    rank = np.arange(len(q)) - np.repeat(starts, counts)
    keep = rank < cap
    return q[keep], t[keep], int((counts > cap).sum())
