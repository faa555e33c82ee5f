"""Make a greedy tour smoother: 2-opt and Or-opt moves over nearest-neighbour lists.

A greedy nearest-neighbour tour is short where it starts and leaves long jumps at its end, where
the stragglers it skipped are collected from all over the space. Two classic local moves fix most
of that without touching the frame set:

* 2-opt: remove two steps and reconnect the path by reversing the frames between them; tried for
  every pair of near neighbours (the new step joins them).
* Or-opt: move a run of 1-3 frames, either way round, next to one of its endpoints' neighbours
  (a straggler left behind rejoins its neighbourhood).

Each round proposes every move in one vectorised pass (float32), then applies the best moves one at
a time after re-checking each against the current path in float64; only moves that shorten the
path by more than ``EPS`` are applied. So the path never gets longer, the first frame stays first,
and every frame stays exactly once. The path is open: it has a start and an end, no return step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

EPS = 1e-9
#: A full round that shortens the path by less than this share of its length ends the search.
MIN_GAIN = 1e-4
#: Neighbours per frame tried by 2-opt, and by Or-opt.
TWO_OPT_K = 10
OR_OPT_K = 5


@dataclass(frozen=True)
class PathStats:
    """The figures a walk reports: frames, total length and step distances (chord, unit vectors)."""

    frames: int
    length: float
    mean_step: float
    p95_step: float
    longest_jump: float

    @classmethod
    def of(cls, steps: np.ndarray) -> PathStats:
        """From the per-frame step distances (the first frame's step is 0 and not counted)."""
        s = np.asarray(steps, dtype=np.float64)[1:]
        if len(s) == 0:
            return cls(frames=len(steps), length=0.0, mean_step=0.0, p95_step=0.0, longest_jump=0.0)
        return cls(
            frames=len(steps),
            length=float(s.sum()),
            mean_step=float(s.mean()),
            p95_step=float(np.percentile(s, 95)),
            longest_jump=float(s.max()),
        )


@dataclass(frozen=True)
class Improved:
    """The improved visiting order and what it took."""

    order: np.ndarray
    before: PathStats
    after: PathStats
    two_opt_moves: int = 0
    or_opt_moves: int = 0
    rounds: int = 0
    seconds: float = 0.0
    moves: dict[str, int] = field(default_factory=dict)


def step_distances(vectors: np.ndarray, order: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Chord distance of each frame from the previous one (0 for the first), in float64."""
    out = np.zeros(len(order), dtype=np.float64)
    for lo in range(1, len(order), chunk):
        hi = min(len(order), lo + chunk)
        a = vectors[order[lo - 1 : hi - 1]].astype(np.float64)
        b = vectors[order[lo:hi]].astype(np.float64)
        out[lo:hi] = np.sqrt(np.clip(2.0 - 2.0 * np.einsum("ij,ij->i", a, b), 0.0, None))
    return out


class _Path:
    """An open path with positions, and float64 distances for the decision to apply a move."""

    def __init__(self, vectors: np.ndarray, order: np.ndarray) -> None:
        self.v = vectors
        self.p = np.array(order, dtype=np.int64)
        self.pos = np.full(len(vectors), -1, dtype=np.int64)
        self.pos[self.p] = np.arange(len(self.p))
        self.touched: set[int] = set()  # frames whose steps changed since the last round

    def touch(self, *positions: int) -> None:
        for t in positions:
            if 0 <= t < len(self.p):
                self.touched.add(int(self.p[t]))

    def d(self, a: int, b: int) -> float:
        dot = float(np.dot(self.v[a].astype(np.float64), self.v[b].astype(np.float64)))
        return math.sqrt(max(0.0, 2.0 - 2.0 * dot))

    def edge(self, t: int) -> float:
        """Length of the step from position ``t`` to ``t + 1`` (0 past the end)."""
        return self.d(int(self.p[t]), int(self.p[t + 1])) if 0 <= t < len(self.p) - 1 else 0.0

    def reverse(self, lo: int, hi: int) -> None:
        self.p[lo : hi + 1] = self.p[lo : hi + 1][::-1].copy()
        self.pos[self.p[lo : hi + 1]] = np.arange(lo, hi + 1)
        self.touch(lo - 1, lo, hi, hi + 1)

    # -- 2-opt: reverse p[i+1..j], joining p[i] to p[j] and p[i+1] to p[j+1] -----------------------
    def two_opt_gain(self, i: int, j: int) -> float:
        """How much shorter the move makes the path; 0 when invalid or when it would add a longer step."""
        n = len(self.p)
        if not (i >= 0 and i + 1 < j <= n - 1):
            return 0.0
        a, b, c = int(self.p[i]), int(self.p[i + 1]), int(self.p[j])
        removed, added = [self.d(a, b)], [self.d(a, c)]
        if j < n - 1:
            e = int(self.p[j + 1])
            removed.append(self.d(c, e))
            added.append(self.d(b, e))
        return _gain(removed, added)

    # -- Or-opt: move p[s..e] between p[t] and p[t+1] (t = n - 1: at the end), maybe reversed ------
    def or_opt_gain(self, s: int, e: int, t: int, flip: bool) -> float:
        """As :meth:`two_opt_gain`, for moving the run ``p[s..e]`` after ``p[t]`` (reversed if ``flip``)."""
        n = len(self.p)
        if not (1 <= s <= e <= n - 1) or s - 1 <= t <= e or not (0 <= t <= n - 1):
            return 0.0
        first, last = int(self.p[s]), int(self.p[e])
        prev = int(self.p[s - 1])
        removed, added = [self.d(prev, first)], []
        if e < n - 1:
            nxt = int(self.p[e + 1])
            removed.append(self.d(last, nxt))
            added.append(self.d(prev, nxt))
        x, y = (last, first) if flip else (first, last)  # x joins p[t], y joins p[t+1]
        u = int(self.p[t])
        added.append(self.d(u, x))
        if t < n - 1:
            w = int(self.p[t + 1])
            removed.append(self.d(u, w))
            added.append(self.d(y, w))
        return _gain(removed, added)

    def move(self, s: int, e: int, t: int, flip: bool) -> None:
        self.touch(s - 1, s, e, e + 1, t, t + 1)
        seg = self.p[s : e + 1].copy()
        if flip:
            seg = seg[::-1]
        rest = np.concatenate([self.p[:s], self.p[e + 1 :]])
        at = t + 1 if t < s else t - (e - s + 1) + 1
        self.p = np.concatenate([rest[:at], seg, rest[at:]])
        self.pos[self.p] = np.arange(len(self.p))
        self.touch(at - 1, at, at + len(seg) - 1, at + len(seg))


def _gain(removed: list[float], added: list[float]) -> float:
    """Shortening of a move, or 0 if it adds a step longer than every step it removes.

    The second rule keeps the longest jump from growing: improvement must smooth the walk, not
    trade many small savings for one new long jump.
    """
    if max(added) > max(removed):
        return 0.0
    return sum(removed) - sum(added)


def _dots(vectors: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty(a.shape, dtype=np.float32)
    fa, fb, fo = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    for lo in range(0, len(fa), chunk):
        fo[lo : lo + chunk] = np.einsum("ij,ij->i", vectors[fa[lo : lo + chunk]], vectors[fb[lo : lo + chunk]])
    return out


def _dist(vectors: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(2.0 - 2.0 * _dots(vectors, a, b), 0.0, None))


def _two_opt_candidates(
    path: _Path, nbr: np.ndarray, nd: np.ndarray, active: np.ndarray
) -> list[tuple[float, int, int, bool]]:
    """2-opt moves that add a step between near neighbours: (estimated gain, frame, frame, variant B).

    Only pairs closer than the step the move removes at the enumerating frame are tried (the usual
    neighbour-list rule: every improving move has such an end). Moves are named by frames, not
    positions, so they can be re-derived after earlier moves.
    """
    p, pos, n = path.p, path.pos, len(path.p)
    if n < 4:
        return []
    c = nbr[p]
    j = np.where(c >= 0, pos[np.maximum(c, 0)], -1)
    i = np.broadcast_to(np.arange(n)[:, None], j.shape)
    j = np.where(active[p][:, None], j, -1)  # only frames whose steps changed last round
    d_xc = nd[p]
    edge = _dist(path.v, p[:-1], p[1:])
    after = np.append(edge, 0.0)  # step from t to t + 1 (0 at the end)
    before = np.concatenate([[0.0], edge])  # step from t - 1 to t (0 at the start)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    ok = (j >= 0) & (hi > lo + 1)
    out: list[tuple[float, int, int, bool]] = []
    # variant A: reverse p[lo+1..hi]: adds (p[lo], p[hi]) and (p[lo+1], p[hi+1])
    m = ok & (d_xc < np.where(i < j, after[lo], after[hi]))
    a_lo, a_hi, d = lo[m], hi[m], d_xc[m]
    tail = a_hi < n - 1
    gain = (
        after[a_lo] - d + np.where(tail, after[a_hi] - _dist(path.v, p[a_lo + 1], p[np.where(tail, a_hi + 1, 0)]), 0.0)
    )
    keep = gain > EPS
    out += [
        (g, a, b, False)
        for g, a, b in zip(gain[keep].tolist(), p[a_lo[keep]].tolist(), p[a_hi[keep]].tolist(), strict=True)
    ]
    # variant B: reverse p[lo..hi-1]: adds (p[lo-1], p[hi-1]) and (p[lo], p[hi])
    m = ok & (lo >= 1) & (d_xc < np.where(i < j, before[lo], before[hi]))
    b_lo, b_hi, d = lo[m], hi[m], d_xc[m]
    gain = before[b_lo] + before[b_hi] - d - _dist(path.v, p[b_lo - 1], p[b_hi - 1])
    keep = gain > EPS
    out += [
        (g, a, b, True)
        for g, a, b in zip(gain[keep].tolist(), p[b_lo[keep]].tolist(), p[b_hi[keep]].tolist(), strict=True)
    ]
    return out


def _or_opt_candidates(
    path: _Path, nbr: np.ndarray, nd: np.ndarray, active: np.ndarray
) -> list[tuple[float, int, int, int, int, bool]]:
    """Or-opt moves of runs of 1-3 frames next to a neighbour of one of their ends.

    Each is (estimated gain, first frame, last frame, the end that joins the neighbour, neighbour,
    whether the run goes after it). Only neighbours closer than what removing the run saves are tried.
    """
    p, pos, n = path.p, path.pos, len(path.p)
    if n < 4:
        return []
    k = min(OR_OPT_K, nbr.shape[1])
    edge = _dist(path.v, p[:-1], p[1:])
    after = np.append(edge, 0.0)
    out: list[tuple[float, int, int, int, int, bool]] = []
    for size in (1, 2, 3):
        s = np.arange(1, n - size + 1)
        e = s + size - 1
        live = active[p[s - 1]] | active[p[s]] | active[p[e]] | active[p[np.minimum(e + 1, n - 1)]]
        s, e = s[live], e[live]
        has_next = e < n - 1
        nxt = np.where(has_next, e + 1, 0)
        removal = edge[s - 1] + np.where(has_next, after[e] - _dist(path.v, p[s - 1], p[nxt]), 0.0)
        for end_first in (True, False) if size > 1 else (True,):
            x = p[s] if end_first else p[e]
            y = p[e] if end_first else p[s]
            c = nbr[x][:, :k]
            d_xc = nd[x][:, :k]
            tc = np.where(c >= 0, pos[np.maximum(c, 0)], -1)
            close = (tc >= 0) & (d_xc < removal[:, None])
            for run_after in (True, False):
                t = tc if run_after else tc - 1  # the run goes between p[t] and p[t + 1]
                valid = close & (t >= 0) & ((t < s[:, None] - 1) | (t > e[:, None]))
                rows, cols = np.nonzero(valid)
                if not len(rows):
                    continue
                tt = t[rows, cols]
                has_w = tt < n - 1
                u, w = p[tt], p[np.where(has_w, tt + 1, 0)]
                # after: x joins u = p[t] (= c), y joins w; before: y joins u, x joins w (= c)
                xu, yw = (x[rows], y[rows]) if run_after else (y[rows], x[rows])
                other = _dist(path.v, yw, w) if run_after else _dist(path.v, u, xu)
                ins = d_xc[rows, cols] + np.where(has_w, other - after[tt], 0.0)
                gain = removal[rows] - ins
                keep = gain > EPS
                out += [
                    (g, a, b, j, cc, run_after)
                    for g, a, b, j, cc in zip(
                        gain[keep].tolist(),
                        p[s[rows][keep]].tolist(),
                        p[e[rows][keep]].tolist(),
                        x[rows][keep].tolist(),
                        c[rows, cols][keep].tolist(),
                        strict=True,
                    )
                ]
    return out


def improve(
    vectors: np.ndarray,
    order: np.ndarray,
    neighbours: np.ndarray | None = None,
    *,
    max_rounds: int = 30,
    time_limit: float | None = None,
) -> Improved:
    """A shorter path over the same frames, same first frame; see the module docstring.

    ``neighbours`` (rows of ``vectors``, -1 padding), e.g. :attr:`Tour.neighbours`, saves computing
    them; rows outside ``order`` are ignored.
    """
    t0 = time.perf_counter()
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    order = np.asarray(order, dtype=np.int64)
    if len(np.unique(order)) != len(order):
        raise ValueError("order visits a frame twice")
    before = PathStats.of(step_distances(v, order))
    if len(order) < 4:
        return Improved(order.copy(), before, before, seconds=time.perf_counter() - t0)
    nbr = _neighbours_on(v, order, neighbours)
    rows = np.repeat(np.arange(len(v)), nbr.shape[1]).reshape(nbr.shape)
    nd = np.where(nbr >= 0, _dist(v, rows, np.maximum(nbr, 0)), np.inf)
    path = _Path(v, order)
    active = np.ones(len(v), dtype=bool)
    two = orr = rounds = 0
    while rounds < max_rounds and (time_limit is None or time.perf_counter() - t0 < time_limit):
        rounds += 1
        applied, gained = 0, 0.0
        path.touched.clear()
        for _, a, c, shifted in sorted(_two_opt_candidates(path, nbr, nd, active), reverse=True):
            # earlier moves shift positions: re-derive each move from its frames, re-check its gain
            i, j = sorted((int(path.pos[a]), int(path.pos[c])))
            if shifted:
                i, j = i - 1, j - 1
            g = path.two_opt_gain(i, j)
            if g > EPS:
                path.reverse(i + 1, j)
                applied, gained, two = applied + 1, gained + g, two + 1
        for _, first, last, joined, c, after in sorted(_or_opt_candidates(path, nbr, nd, active), reverse=True):
            s, e = int(path.pos[first]), int(path.pos[last])
            if e < s:
                continue  # the run was reversed by an earlier move
            t = int(path.pos[c]) if after else int(path.pos[c]) - 1
            flip = (joined != first) if after else (joined == first)
            g = path.or_opt_gain(s, e, t, flip)
            if g > EPS:
                path.move(s, e, t, flip)
                applied, gained, orr = applied + 1, gained + g, orr + 1
        if not applied:
            if active.all():
                break
            active[:] = True  # the quick rounds found nothing: one full round decides
            continue
        if active.all() and gained < MIN_GAIN * before.length:
            break  # a full round that barely helps: the rest would cost more than it saves
        # don't-look bits: the next round only starts from frames whose steps changed
        active = np.zeros(len(v), dtype=bool)
        active[list(path.touched)] = True
    after = PathStats.of(step_distances(v, path.p))
    if after.length > before.length:  # cannot happen (every move shortens); guard the promise anyway
        path.p, after = order.copy(), before
    return Improved(
        order=path.p,
        before=before,
        after=after,
        two_opt_moves=two,
        or_opt_moves=orr,
        rounds=rounds,
        seconds=time.perf_counter() - t0,
    )


def _neighbours_on(v: np.ndarray, order: np.ndarray, neighbours: np.ndarray | None) -> np.ndarray:
    """Neighbour rows per row, restricted to the frames of ``order`` (-1 elsewhere)."""
    on = np.zeros(len(v), dtype=bool)
    on[order] = True
    if neighbours is None or len(order) < len(v) // 2:
        from hotdog_dagster.core.walk.tour import Pool, knn_lists, max_norm2, pick_engine

        rows = np.sort(order)
        k = min(TWO_OPT_K, len(rows) - 1)
        pool = Pool(v, rows, pick_engine("auto", v.shape[1]) if len(rows) > 4096 else "fp32", max_norm2(v))
        lists = knn_lists(v, rows, pool, k)
        out = np.full((len(v), k), -1, dtype=np.int64)
        out[rows] = np.where(lists.ids < len(v), lists.ids, -1)
        return out
    nb = np.asarray(neighbours, dtype=np.int64)[:, :TWO_OPT_K]
    return np.where((nb >= 0) & on[np.maximum(nb, 0)], nb, -1)
