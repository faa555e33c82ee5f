"""The exact greedy nearest-neighbour tour over unit vectors, from batched matrix products.

The tour is defined by the naive loop: start somewhere; the next frame is the unvisited vector with
the largest inner product with the current one, ties broken by the lowest row (callers order rows
by image id, so that is "by id"). Scores are compared as :func:`exact_scores` computes them
(float64 dot products rounded to float32), so the answer does not depend on which BLAS kernel ran.

The naive loop reads every remaining vector at every step. Here the scores come from large
batched products instead (bfloat16 where the CPU multiplies it natively, else float32), with a
proven bound on their error (:func:`error_bound`); only candidates within twice that bound of the
best can be the answer, and when there is more than one they are scored in float32, then exactly.
Two plans, the same tour:

* matrix (the n x n bf16 scores fit in ``MATRIX_BYTES``): every pair is multiplied once, in
  symmetric blocks; a step scans the current row (a few SIMD passes over int16) and settles the
  near ties. The matrix shrinks to the unvisited rows and columns whenever half of it is visited.
* lists (larger sets): each vector keeps its ``k`` nearest neighbours, chosen by bf16 products and
  scored again in float32, and a bound on everything it does not list. A step reads only the
  current list; its first unvisited entry is the answer when it clears the bound by the error and
  no other entry is within twice the error of it, else the near ties are settled exactly. When a
  list cannot prove its answer (its neighbours were visited), one batched search over the
  remaining vectors refreshes it with the most worn lists of unvisited vectors; lists that could not
  prove anything even fresh (neighbours within the bf16 error of each other) are searched again in
  float32, and an exact pass covers more exact ties than ``k``.

Nothing here touches a persistent index: the products run on temporary copies of the vectors.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

Engine = Literal["auto", "bf16", "fp32"]
ENGINES = ("auto", "bf16", "fp32")
DEFAULT_K = 40
#: Up to this many vectors, or when few frames are wanted, one exact pass per step is the cheaper plan.
SMALL = 64
#: Fewer queries than this are searched in float32 by NumPy, where thread start-up would dominate.
SMALL_BATCH = 64
#: Lists refreshed per fallback, at most (the current one plus the most worn).
REFRESH = 256
#: Up to this many bytes, every score is kept (bf16, n x n) and a step scans one row; beyond, k-NN lists.
MATRIX_BYTES = 2 * 1024**3
_U = 2.0**-24
_probed: dict[int, str] = {}


@dataclass(frozen=True)
class Lists:
    """k-NN lists: row ``i`` holds rows of the input sorted by float32 score, descending.

    Padding entries hold ``len(vectors)`` (always treated as visited) and -inf. Listed scores are
    within ``error[i]`` of exact; every pool member missing from row ``i`` (itself aside) computed
    (in the engine's precision) to at most ``bound[i]``, within ``bound_error[i]`` of exact.
    ``bound`` is -inf when the row lists them all.
    """

    ids: np.ndarray  # (q, k) int64
    scores: np.ndarray  # (q, k) float32
    error: np.ndarray  # (q,) float32
    bound: np.ndarray  # (q,) float32
    bound_error: np.ndarray  # (q,) float32


@dataclass
class TourStats:
    """Where the time went and how often lists ran out: for run metadata and the benchmark."""

    engine: str = ""
    k: int = 0
    list_seconds: float = 0.0
    walk_seconds: float = 0.0
    refresh_seconds: float = 0.0
    fallbacks: int = 0
    refreshed_lists: int = 0
    exact_passes: int = 0
    near_ties: int = 0
    pool_builds: int = 0

    @property
    def seconds(self) -> float:
        return self.list_seconds + self.walk_seconds + self.refresh_seconds


@dataclass(frozen=True)
class Tour:
    """Rows in visiting order, each step's score with the previous frame, and the k-NN lists used."""

    order: np.ndarray  # (frames,) int64 rows of the input
    similarity: np.ndarray  # (frames,) float32 exact score with the previous frame; NaN for the first
    neighbours: np.ndarray | None  # (n, k) int64 nearest rows of every input row (-1 padding), or None
    stats: TourStats = field(default_factory=TourStats)

    @property
    def steps(self) -> np.ndarray:
        """Chord distance ``|a - b|`` of each step (0 for the first frame): a metric, so 2-opt applies."""
        return chord(self.similarity)


def chord(similarity: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their inner product; NaN (no predecessor) -> 0."""
    s = np.nan_to_num(np.asarray(similarity, dtype=np.float64), nan=1.0)
    return np.sqrt(np.clip(2.0 - 2.0 * s, 0.0, None))


def exact_scores(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The scores every comparison of the tour uses: float64 dot products rounded to float32.

    Rounding a float64 result to float32 absorbs the last-bit differences between BLAS kernels, so
    equal vectors score exactly equal and the tie rule (lowest id) decides, as in the naive loop.
    """
    return (vectors[rows].astype(np.float64) @ np.asarray(query, dtype=np.float64)).astype(np.float32)


def pair_scores(vectors: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """:func:`exact_scores` of row pairs ``(a[i], b[i])``, in chunks to bound memory."""
    out = np.empty(len(a), dtype=np.float32)
    for lo in range(0, len(a), chunk):
        x = vectors[a[lo : lo + chunk]].astype(np.float64)
        y = vectors[b[lo : lo + chunk]].astype(np.float64)
        out[lo : lo + chunk] = np.einsum("ij,ij->i", x, y)
    return out


def max_norm2(vectors: np.ndarray) -> float:
    """The largest squared norm: every score error bound scales with it."""
    return float(np.max(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))) if len(vectors) else 1.0


def error_bound(dim: int, norm2: float, engine: str) -> float:
    """A proven bound on |computed - exact| score for any pair, from the dimension and largest norm.

    fp32: float32 accumulation over ``dim`` products (``dim * 2**-24`` relative to ``|x| |y|``).
    bf16: inputs rounded to 8-bit mantissas (``2**-8``), float32 accumulation, bf16 output (``2**-9``).
    Both add a float32 step for the rounding of the exact score itself.
    """
    accumulate = (dim + 2) * _U * 1.02
    if engine == "fp32":
        return accumulate * norm2 + 2 * _U
    return (2.0**-8 + 2.0**-9 + 2.0**-16 + accumulate) * norm2 * 1.01 + 2 * _U


def pick_engine(engine: Engine, dim: int) -> str:
    """``auto``: bf16 where this CPU multiplies bf16 at least twice as fast as float32, else fp32."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    if dim not in _probed:
        _probed[dim] = _probe(dim)
    return _probed[dim]


def _probe(dim: int) -> str:
    """Time one bf16 and one float32 product of the shape the lists use (tens of milliseconds)."""
    import torch

    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, dim)).astype(np.float32)
    b = rng.standard_normal((4096, dim)).astype(np.float32)
    ta, tb = torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()

    def best(f: Callable[[], object]) -> float:
        f()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return min(times)

    return "bf16" if best(lambda: ta @ tb.T) * 2 < best(lambda: a @ b.T) else "fp32"


class Pool:
    """The vectors searched against, copied once (and once more in bf16 for the bf16 engine).

    Rows visited since it was built are masked out of every search; the walker rebuilds it when a
    quarter of it is stale, so the copies cost a geometric series (about four times the input).
    """

    def __init__(self, vectors: np.ndarray, rows: np.ndarray, engine: str, norm2: float) -> None:
        self.rows = rows
        self.engine = engine
        self.fp32 = np.ascontiguousarray(vectors[rows])
        self.fp32_error = error_bound(vectors.shape[1], norm2, "fp32")
        self.engine_error = error_bound(vectors.shape[1], norm2, engine)
        self.bf16: torch.Tensor | None = None
        if engine == "bf16":
            import torch

            self.bf16 = torch.from_numpy(self.fp32).bfloat16()

    def __len__(self) -> int:
        return len(self.rows)

    def top(
        self, queries: np.ndarray, kk: int, drop: np.ndarray, self_pos: np.ndarray, precise: bool = False
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Scores and pool positions of each query's ``kk`` best, descending, and the scores' error.

        ``drop``: pool positions left out; ``self_pos``: per query, its own position (-1: none).
        Small batches run in float32 with NumPy; large ones in the engine (float32 if ``precise``),
        selected by torch's top-k.
        """
        import torch

        mine = np.flatnonzero(self_pos >= 0)
        if len(queries) < SMALL_BATCH:  # NumPy all the way: no thread start-up for a handful of rows
            s = queries @ self.fp32.T
            s[:, drop] = -np.inf
            s[mine, self_pos[mine]] = -np.inf
            if kk < s.shape[1]:
                part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            else:
                part = np.broadcast_to(np.arange(s.shape[1]), s.shape).copy()
            vals = np.take_along_axis(s, part, axis=1)
            order = np.argsort(-vals, axis=1, kind="stable")
            return np.take_along_axis(vals, order, axis=1), np.take_along_axis(part, order, axis=1), self.fp32_error
        if self.bf16 is not None and not precise:
            t = torch.from_numpy(queries).bfloat16() @ self.bf16.T
            error = self.engine_error
        else:
            t = torch.from_numpy(queries @ self.fp32.T)
            error = self.fp32_error
        if len(drop):
            t.index_fill_(1, torch.from_numpy(drop), -math.inf)
        t[torch.from_numpy(mine), torch.from_numpy(self_pos[mine])] = -math.inf
        vals, pos = torch.topk(t, kk, dim=1)
        return vals.float().numpy(), pos.numpy(), error


def knn_lists(
    vectors: np.ndarray, queries: np.ndarray, pool: Pool, k: int, excluded: np.ndarray | None = None
) -> Lists:
    """Each query row's ``k`` best pool members (itself and ``excluded`` pool positions left out).

    bf16 products pick the members and set the bound; the members are then scored in float32.
    Rows whose lists could not prove an answer even fresh (more near neighbours within the
    bf16 error than ``k / 4`` clear of the bound) are searched again in float32.
    """
    n, m, q = len(vectors), len(pool), len(queries)
    ids = np.full((q, k), n, dtype=np.int64)
    scores = np.full((q, k), -np.inf, dtype=np.float32)
    bound = np.full(q, -np.inf, dtype=np.float32)
    error = np.zeros(q, dtype=np.float32)
    bound_error = np.zeros(q, dtype=np.float32)
    drop = np.flatnonzero(excluded) if excluded is not None else np.zeros(0, np.int64)
    live = m - len(drop)
    kk = min(k, live)
    if kk <= 0 or q == 0:
        return Lists(ids, scores, error, bound, bound_error)
    where = np.minimum(np.searchsorted(pool.rows, queries), m - 1)
    in_pool = pool.rows[where] == queries
    if excluded is not None:
        in_pool &= ~excluded[where]
    self_pos = np.where(in_pool, where, -1)
    others = live - in_pool  # live pool members besides the query itself
    chunk = int(np.clip(2**25 // m, SMALL_BATCH, 4096))
    for lo in range(0, q, chunk):
        hi = min(q, lo + chunk)
        out = (ids, scores, error, bound, bound_error)
        _fill(vectors, queries, pool, kk, drop, self_pos, others, slice(lo, hi), *out)
    clear = (scores > (bound + bound_error + error)[:, None]).sum(axis=1)
    dense = np.flatnonzero((bound_error > pool.fp32_error) & (clear < max(1, kk // 4)))
    for lo in range(0, len(dense), chunk):
        out = (ids, scores, error, bound, bound_error)
        _fill(vectors, queries, pool, kk, drop, self_pos, others, dense[lo : lo + chunk], *out, precise=True)
    return Lists(ids, scores, error, bound, bound_error)


def _fill(
    vectors: np.ndarray,
    queries: np.ndarray,
    pool: Pool,
    kk: int,
    drop: np.ndarray,
    self_pos: np.ndarray,
    others: np.ndarray,
    at: slice | np.ndarray,
    ids: np.ndarray,
    scores: np.ndarray,
    error: np.ndarray,
    bound: np.ndarray,
    bound_error: np.ndarray,
    precise: bool = False,
) -> None:
    """Search the queries ``at`` and write their list rows (float32 scores, sorted)."""
    x = vectors[queries[at]]
    vals, pos, e = pool.top(x, kk, drop, self_pos[at], precise)
    finite = np.isfinite(vals)
    listed = vals
    if e > pool.fp32_error:  # bf16 picked them: score the members in float32, re-sort
        listed = np.empty(vals.shape, dtype=np.float32)
        for r in range(len(x)):  # row by row: the gathered rows stay in cache
            listed[r] = pool.fp32[pos[r]] @ x[r]
        listed[~finite] = -np.inf
        order = np.argsort(-listed, axis=1, kind="stable")
        pos, finite = np.take_along_axis(pos, order, axis=1), np.take_along_axis(finite, order, axis=1)
        listed = np.take_along_axis(listed, order, axis=1)
    ids[at, :kk] = np.where(finite, pool.rows[pos], len(vectors))
    scores[at, :kk] = listed
    error[at] = pool.fp32_error
    bound[at] = np.where(others[at] > kk, vals[:, -1], -np.inf)
    bound_error[at] = e


class _Walker:
    """The state of one walk: visited flags, the lists, the search pool and the counters."""

    def __init__(self, vectors: np.ndarray, lists: Lists, pool: Pool, k: int, stats: TourStats) -> None:
        self.v = vectors
        self.n = len(vectors)
        self.k = k
        self.visited = np.zeros(self.n + 1, dtype=bool)
        self.visited[self.n] = True  # the padding id
        self.ids, self.scores, self.error = lists.ids, lists.scores, lists.error
        # every unlisted pool member scores at most this, exactly
        self.ceiling = lists.bound + lists.bound_error
        self.pool = pool
        self.norm2 = max_norm2(vectors)
        self.stats = stats

    def next_from_list(self, cur: int) -> int:
        """The exact next frame from ``cur``'s list, or -1 when the list cannot prove it."""
        row = self.ids[cur]
        vis = self.visited[row]
        j = int(vis.argmin())
        if vis[j]:
            return -1
        s = self.scores[cur]
        a = s[j]
        e = self.error[cur]
        if a - e > self.ceiling[cur] and (j + 1 == self.k or s[j + 1] < a - 2 * e):
            return int(row[j])
        self.stats.near_ties += 1
        live = np.flatnonzero(~vis & (s >= a - 2 * e))
        rows = row[live]
        exact = exact_scores(self.v, rows, self.v[cur])
        best = exact.max()
        if best <= self.ceiling[cur]:
            return -1
        return int(rows[exact == best].min())

    def worn(self, remaining: np.ndarray) -> np.ndarray:
        """Up to ``REFRESH - 1`` unvisited rows whose lists visits have worn down most.

        A list's health is its number of unvisited entries that clear its bound. Lists with nothing
        visited are left alone: if they fail (more exact ties than ``k``), a fresh one would too.
        """
        ids = self.ids[remaining]
        vis = self.visited[ids]
        clear = self.scores[remaining] > (self.ceiling + self.error)[remaining, None]
        health = (~vis & clear).sum(axis=1)
        worn = np.flatnonzero(vis.any(axis=1) & (health <= self.k // 2))
        if len(worn) >= REFRESH:
            worn = worn[np.argpartition(health[worn], REFRESH - 2)[: REFRESH - 1]]
        return remaining[worn]

    def fallback(self, cur: int) -> int:
        """Fresh lists, in one batch, for ``cur`` and the most worn unvisited rows; then the answer."""
        t0 = time.perf_counter()
        self.stats.fallbacks += 1
        remaining = np.flatnonzero(~self.visited[: self.n])
        stale = self.visited[self.pool.rows]
        if stale.sum() * 4 > len(self.pool):
            self.pool = Pool(self.v, remaining, self.pool.engine, self.norm2)
            self.stats.pool_builds += 1
            stale = np.zeros(len(remaining), dtype=bool)
        queries = np.concatenate([[cur], self.worn(remaining)])
        fresh = knn_lists(self.v, queries, self.pool, self.k, excluded=stale)
        self.ids[queries] = fresh.ids
        self.scores[queries] = fresh.scores
        self.error[queries] = fresh.error
        self.ceiling[queries] = fresh.bound + fresh.bound_error
        self.stats.refreshed_lists += len(queries)
        nxt = self.next_from_list(cur)
        if nxt < 0:  # more exact ties than k at the end of a fresh list: one exact pass settles it
            self.stats.exact_passes += 1
            nxt = exact_next(self.v, cur, remaining, self.pool.fp32_error)
        self.stats.refresh_seconds += time.perf_counter() - t0
        return nxt


def exact_next(vectors: np.ndarray, cur: int, remaining: np.ndarray, error: float) -> int:
    """The naive step: one float32 pass over ``remaining`` (``error``: its bound), near ties settled exactly."""
    s = vectors[remaining] @ vectors[cur]
    near = np.flatnonzero(s >= s.max() - 2 * error)
    if len(near) == 1:
        return int(remaining[near[0]])
    rows = remaining[near]
    exact = exact_scores(vectors, rows, vectors[cur])
    return int(rows[exact == exact.max()].min())


def greedy_tour(
    vectors: np.ndarray,
    start: int = 0,
    *,
    max_frames: int | None = None,
    k: int = DEFAULT_K,
    engine: Engine = "auto",
    matrix_bytes: int = MATRIX_BYTES,
    progress: Callable[[int, int], None] | None = None,
) -> Tour:
    """The exact greedy nearest-neighbour tour from row ``start``; see the module docstring.

    ``max_frames`` stops early (the first frames of the full tour). When the n x n bf16 score
    matrix fits in ``matrix_bytes`` it is computed once (symmetric blocks) and each step scans the
    current row; otherwise each vector gets a ``k``-NN list. ``neighbours`` in the result are the
    lists over the whole input (list plan only), for :func:`~hotdog_dagster.core.walk.improve.improve`.
    """
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"vectors must be a (n, d) matrix, got shape {v.shape}")
    n = len(v)
    if n == 0:
        return Tour(np.zeros(0, np.int64), np.zeros(0, np.float32), None)
    if not 0 <= start < n:
        raise ValueError(f"start row {start} is outside 0..{n - 1}")
    if not np.isfinite(v).all():
        raise ValueError("vectors contain NaN or infinity")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    frames = n if max_frames is None else max(1, min(n, max_frames))
    stats = TourStats(k=k)
    order = np.empty(frames, dtype=np.int64)
    order[0] = start
    if n <= SMALL or frames * 32 < n:
        stats.engine = "exact"
        t0 = time.perf_counter()
        _naive_walk(v, order, progress)
        stats.walk_seconds = time.perf_counter() - t0
        return Tour(order, _similarity(v, order), None, stats)

    stats.engine = pick_engine(engine, v.shape[1])
    if 2 * n * n <= matrix_bytes:
        _matrix_walk(v, order, stats, progress)
        return Tour(order, _similarity(v, order), None, stats)
    t0 = time.perf_counter()
    everyone = np.arange(n)
    pool = Pool(v, everyone, stats.engine, max_norm2(v))
    stats.pool_builds = 1
    lists = knn_lists(v, everyone, pool, k)
    neighbours = np.where(lists.ids < n, lists.ids, -1)
    stats.list_seconds = time.perf_counter() - t0
    walker = _Walker(v, lists, pool, k, stats)
    t0 = time.perf_counter()
    cur = start
    walker.visited[cur] = True
    every = max(1, frames // 20)
    for t in range(1, frames):
        nxt = walker.next_from_list(cur)
        if nxt < 0:
            nxt = walker.fallback(cur)
        walker.visited[nxt] = True
        order[t] = nxt
        cur = nxt
        if progress is not None and t % every == 0:
            progress(t, frames)
    stats.walk_seconds = time.perf_counter() - t0 - stats.refresh_seconds
    if progress is not None:
        progress(frames, frames)
    return Tour(order, _similarity(v, order), neighbours, stats)


def _matrix_walk(
    v: np.ndarray, order: np.ndarray, stats: TourStats, progress: Callable[[int, int], None] | None
) -> None:
    """Every score in a bf16 matrix, then one row scan per step (int16 keys, SIMD), near ties exact.

    The matrix is filled by symmetric blocks (each pair multiplied once, copied to its mirror) and
    compacted to the unvisited rows and columns whenever half of it is visited. The entries
    within twice the error bound of the row's maximum are the only possible answers: float32 scores
    split them, and :func:`exact_scores` whatever float32 cannot. A row's bf16 bits become int16
    keys in the order of the values, so its scan is a few SIMD passes.
    """
    import torch

    n, d = v.shape
    frames = len(order)
    t0 = time.perf_counter()
    norm2 = max_norm2(v)
    error = error_bound(d, norm2, stats.engine)
    if stats.engine == "fp32":  # float32 products stored as bf16: their rounding is the bf16 output term
        error = error_bound(d, norm2, "fp32") + 2.0**-9 * norm2 * 1.01
    x = torch.from_numpy(v)
    xb = x.bfloat16() if stats.engine == "bf16" else x
    keys = torch.empty((n, n), dtype=torch.int16)  # the bf16 scores' bits
    block = 2048
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        part = (xb[lo:hi] @ xb[lo:].T).to(torch.bfloat16).view(torch.int16)  # block vs itself and all later
        keys[lo:hi, lo:] = part
        keys[hi:, lo:hi] = part[:, hi - lo :].T
    table = keys.numpy()
    stats.list_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = np.arange(n)  # matrix row/column -> input row
    where = np.arange(n)  # input row -> matrix row/column (valid for unvisited rows)
    cap = np.full(n, 32767, dtype=np.int16)  # -32768 where visited: np.minimum masks a row in one pass
    cur = int(order[0])
    cap[cur] = -32768
    visited_here = 1
    key = np.empty(n, dtype=np.int16)
    fp32_error = error_bound(d, norm2, "fp32")
    every = max(1, frames // 20)
    for t in range(1, frames):
        if 2 * visited_here > len(rows):  # half the matrix is visited: keep the live part only
            live = np.flatnonzero(cap > -32768)
            keep = torch.from_numpy(np.concatenate([live, [where[cur]]]))
            keys = keys.index_select(0, keep).index_select(1, keep)
            table = keys.numpy()
            rows = rows[keep.numpy()]
            where[rows] = np.arange(len(rows))
            cap = np.full(len(rows), 32767, dtype=np.int16)
            cap[-1] = -32768  # cur, kept for its row
            visited_here = 1
            key = key[: len(rows)]
            stats.pool_builds += 1
        row = table[where[cur]]
        # Non-negative bf16 numbers order like their bits read as int16, and above every negative
        # one; only a row whose candidates reach below zero needs its bits turned into order keys.
        np.minimum(row, cap, out=key)
        top = int(key.max())
        floor = _floor_key(_key_value(top) - 2 * error)
        if top < 0 or floor < 0:
            np.right_shift(row, 15, out=key)
            np.bitwise_and(key, 0x7FFF, out=key)
            np.bitwise_xor(key, row, out=key)
            np.minimum(key, cap, out=key)
            floor = _floor_key(_key_value(int(key.max())) - 2 * error)
        near = rows[np.flatnonzero(key >= floor)]
        if len(near) > 1:  # the float32 scores first, the exact ones only for what they cannot split
            stats.near_ties += 1
            s32 = v[near] @ v[cur]
            near = near[s32 >= s32.max() - 2 * fp32_error]
            if len(near) > 1:
                exact = exact_scores(v, near, v[cur])
                near = near[exact == exact.max()]
        nxt = int(near.min())
        cap[where[nxt]] = -32768
        visited_here += 1
        order[t] = cur = nxt
        if progress is not None and t % every == 0:
            progress(t, frames)
    stats.walk_seconds = time.perf_counter() - t0
    stats.engine += "-matrix"


def _key_value(key: int) -> float:
    """The float a bf16 order key stands for."""
    bits = key ^ ((key >> 15) & 0x7FFF)
    return struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0]


def _floor_key(value: float) -> int:
    """A key at or below that of every bf16 number >= ``value`` (truncation, then one step down for -0)."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0] >> 16
    signed = bits - 0x10000 if bits & 0x8000 else bits
    return (signed ^ ((signed >> 15) & 0x7FFF)) - 1


def _naive_walk(v: np.ndarray, order: np.ndarray, progress: Callable[[int, int], None] | None) -> None:
    """Few frames from many vectors, or few vectors: the exact pass per step is the cheaper plan."""
    error = error_bound(v.shape[1], max_norm2(v), "fp32")
    remaining = np.ones(len(v), dtype=bool)
    cur = int(order[0])
    remaining[cur] = False
    for t in range(1, len(order)):
        cur = exact_next(v, cur, np.flatnonzero(remaining), error)
        remaining[cur] = False
        order[t] = cur
        if progress is not None and t % 100 == 0:
            progress(t, len(order))


def _similarity(v: np.ndarray, order: np.ndarray) -> np.ndarray:
    sim = np.full(len(order), np.nan, dtype=np.float32)
    if len(order) > 1:
        sim[1:] = pair_scores(v, order[:-1], order[1:])
    return sim
