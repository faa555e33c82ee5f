"""Benchmark of the ordered walk: the exact greedy tour against the naive loop, and the improvement.

    python bench/walk.py                     # 20,000 x 512, clustered and uniform; then 100,000
    python bench/walk.py --n 5000 --big 0    # quicker

For each data set (unit vectors, 512-d): the exact walk of ``core/walk/tour.py`` and the naive loop
(NumPy, one float32 pass over the remaining vectors per step, removal by swapping in the last row,
near ties settled by the same exact scores) run in the same process, one after the other; both
times, their ratio, whether the tours are identical, both lengths, and where the walk's time went.
Then the improvement (2-opt / Or-opt): length and longest jump before and after. At ``--big``
vectors the naive loop is extrapolated from sampled steps at several remaining-set sizes (the
per-step cost is not linear in the remaining count once it fits in the CPU cache), checked against
the measured loop at ``--n``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from hotdog_dagster.core.walk.improve import improve, step_distances
from hotdog_dagster.core.walk.tour import error_bound, exact_scores, greedy_tour, max_norm2


def clustered(n: int, d: int, seed: int, clusters: int = 50, latent: int = 16) -> np.ndarray:
    """Unit vectors shaped like image embeddings: a shared direction, clusters of uneven size and
    spread on a low-dimensional latent space, isotropic noise (mean cosine ~0.4, same cluster ~0.85)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, latent + 1)))[0].T
    centres = rng.standard_normal((clusters, latent))
    label = rng.choice(clusters, size=n, p=rng.dirichlet(np.full(clusters, 0.7)))
    spread = rng.uniform(0.25, 0.7, clusters)
    z = centres[label] + rng.standard_normal((n, latent)) * spread[label, None]
    x = 3.0 * basis[0] + z @ basis[1:] + rng.standard_normal((n, d)) * (0.35 / np.sqrt(d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def uniform(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors uniform on the sphere: no structure, the hardest case for any index."""
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _naive_step(v: np.ndarray, work: np.ndarray, rows: np.ndarray, m: int, cur: int, e2: float) -> int:
    """One step of the naive loop: one pass over the ``m`` remaining vectors; returns the pick's slot."""
    s = work[:m] @ v[cur]
    near = np.flatnonzero(s >= s.max() - e2)
    if len(near) == 1:
        return int(near[0])
    exact = exact_scores(v, rows[near], v[cur])  # near ties: the same exact scores and lowest-id rule
    best = near[exact == exact.max()]
    return int(best[np.argmin(rows[best])])


def naive_tour(v: np.ndarray, start: int) -> np.ndarray:
    """The reference loop: each step one pass over the remaining vectors (kept contiguous by moving
    the last remaining row into the slot of the one just visited)."""
    n = len(v)
    work, rows = v.copy(), np.arange(n)
    e2 = 2 * error_bound(v.shape[1], max_norm2(v), "fp32")
    order = np.empty(n, dtype=np.int64)
    order[0] = cur = start
    m = n - 1
    work[start], rows[start] = work[m], rows[m]
    for t in range(1, n):
        pick = _naive_step(v, work, rows, m, cur, e2)
        order[t] = cur = int(rows[pick])
        m -= 1
        work[pick], rows[pick] = work[m], rows[m]
    return order


def naive_extrapolated(v: np.ndarray, samples: int = 8, steps: int = 100) -> tuple[float, int]:
    """Seconds the naive loop would take over ``v``: the mean step time at several remaining-set
    sizes (setup excluded), integrated over the remaining count. Returns (seconds, steps timed)."""
    n = len(v)
    e2 = 2 * error_bound(v.shape[1], max_norm2(v), "fp32")
    sizes = np.unique(np.linspace(n, max(2 * steps, n // 100), samples).astype(int))
    per_step = []
    for m in sizes:
        work, rows = np.ascontiguousarray(v[:m]), np.arange(m)
        _naive_step(v, work, rows, m - 1, m - 1, e2)  # warm the cache as the loop would be
        times = []
        for i in range(steps):
            t0 = time.perf_counter()
            _naive_step(v, work, rows, m - 1 - i, m - 1 - i, e2)
            times.append(time.perf_counter() - t0)
        per_step.append(float(np.mean(times)))
    xs = np.concatenate([[0], sizes])
    ys = np.concatenate([[0.0], per_step])
    return float(np.trapezoid(ys, xs)), int(len(sizes) * steps)


def length(v: np.ndarray, order: np.ndarray) -> float:
    return float(step_distances(v, order).sum())


def run(name: str, v: np.ndarray, naive: bool, repeat: int, improve_too: bool = True) -> dict[str, object]:
    print(f"\n== {name}: {len(v)} x {v.shape[1]}", flush=True)
    times = []
    for _ in range(repeat):  # the machine is shared: the median of a few runs, the naive loop once
        t0 = time.perf_counter()
        tour = greedy_tour(v, 0)
        times.append(time.perf_counter() - t0)
    fast = float(np.median(times))
    st = tour.stats
    print(
        f"exact walk  {fast:8.2f} s  median of {repeat} ({', '.join(f'{t:.2f}' for t in times)})\n"
        f"  last run: engine {st.engine}, k {st.k}: lists {st.list_seconds:.2f} s, "
        f"walk {st.walk_seconds:.2f} s, fallbacks {st.fallbacks} refreshing {st.refreshed_lists} lists "
        f"{st.refresh_seconds:.2f} s, near ties {st.near_ties}, exact passes {st.exact_passes}",
        flush=True,
    )
    out: dict[str, object] = {"exact_s": fast}
    est, timed = naive_extrapolated(v)
    if naive:
        t0 = time.perf_counter()
        ref = naive_tour(v, 0)
        slow = time.perf_counter() - t0
        same = bool(np.array_equal(ref, tour.order))
        print(f"naive loop  {slow:8.2f} s  (extrapolated from {timed} sampled steps: {est:.1f} s)", flush=True)
        print(
            f"ratio       {slow / fast:8.1f} x   identical tours: {same}   lengths {length(v, tour.order):.6f} "
            f"vs {length(v, ref):.6f}",
            flush=True,
        )
        out |= {"naive_s": slow, "ratio": slow / fast, "identical": same}
    else:
        print(f"naive loop  {est:8.0f} s  (extrapolated from {timed} sampled steps)   ratio {est / fast:.0f} x")
        out |= {"naive_est_s": est, "ratio": est / fast}
    if not improve_too:
        return out
    im = improve(v, tour.order, tour.neighbours)
    b, a = im.before, im.after
    print(
        f"improve     {im.seconds:8.2f} s  ({im.rounds} rounds, {im.two_opt_moves} 2-opt + {im.or_opt_moves} Or-opt moves)\n"
        f"  length    {b.length:10.2f} -> {a.length:10.2f}  ({100 * (1 - a.length / b.length):.1f}% shorter)\n"
        f"  longest   {b.longest_jump:10.3f} -> {a.longest_jump:10.3f}  "
        f"({100 * (1 - a.longest_jump / b.longest_jump):.1f}% shorter)\n"
        f"  mean step {b.mean_step:10.3f} -> {a.mean_step:10.3f}   p95 step {b.p95_step:.3f} -> {a.p95_step:.3f}",
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="vectors in the timed comparison")
    ap.add_argument("--big", type=int, default=100_000, help="vectors for the large run (0: skip)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="exact walk runs per data set (median reported)")
    args = ap.parse_args()
    import torch  # imported once up front: its start-up is not part of any walk

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
    )
    greedy_tour(uniform(512, args.dim, 1), 0)  # warm up the engine probe and the thread pools
    run("clustered", clustered(args.n, args.dim, args.seed), naive=True, repeat=args.repeat)
    run("uniform", uniform(args.n, args.dim, args.seed), naive=True, repeat=args.repeat)
    if args.big:
        run("clustered", clustered(args.big, args.dim, args.seed), naive=False, repeat=1, improve_too=False)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
