"""Near-duplicate grouping: FAISS self k-NN + union-find (our path) against blockwise all-pairs numpy.

Random unit vectors stand in for image embeddings, with planted near duplicates: ``--planted``
vectors each copied once with noise so that the copy's cosine to its source is 0.96-0.99, and a
tenth of those copied again from the copy (chains of three, whose ends may sit below the
threshold, so only union-find across the chain joins them). Random 512-d unit vectors have cosines
near 0 (the largest of 5e9 pairs is about 0.3), so the planted pairs are the only true groups.

Both paths see the same vectors, threshold and union-find, and must find the same groups; the
benchmark prints seconds for each, the ratio (baseline / ours) and the recall of planted pairs.

Both paths are exact, so both cost N^2*D multiply-adds and are bound by the same float32 matrix
products on a CPU: what FAISS saves is the memory traffic of materialising each (block x N)
similarity matrix and scanning it (its tiles are 4096 x 1024 and reduced to k best on the fly), and
on a GPU it runs the same search at a hundred times the speed. The default run is 50k vectors so it
stays under about two minutes on two cores; ``--n 100000`` is the 100k case (four times the work).

    python bench/dedup.py                        # 50k x 512, 2k planted
    python bench/dedup.py --n 100000             # 100k
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from hotdog_dagster.core.clean.quality import connected_groups, knn_above
from hotdog_dagster.core.search import index as faiss_index


def planted_vectors(n: int, dim: int, planted: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors with planted near copies: returns vectors, planted pairs (a, b) and chain ends."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    chains = planted // 10
    rows = rng.permutation(n)[: 2 * planted + chains]
    src, dst, dst2 = rows[:planted], rows[planted : 2 * planted], rows[2 * planted :]
    x[dst] = _noisy_copy(x[src], rng)
    x[dst2] = _noisy_copy(x[dst[:chains]], rng)  # a copy of a copy: src -> dst -> dst2
    a = np.concatenate([src, dst[:chains]])
    b = np.concatenate([dst, dst2])
    return x, a, b, np.stack([src[:chains], dst2], axis=1)


def _noisy_copy(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row rotated towards a random orthogonal direction, to a cosine of exactly 0.96-0.99."""
    u = rng.standard_normal(v.shape, dtype=np.float32)
    u -= (u * v).sum(1, keepdims=True) * v
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    cos = rng.uniform(0.96, 0.99, size=(len(v), 1)).astype(np.float32)
    out = cos * v + np.sqrt(1 - cos**2) * u
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def ours(x: np.ndarray, threshold: float, k: int, gpu: bool = False) -> tuple[np.ndarray, float]:
    """The pipeline's path: a FAISS index, batched self k-NN above the threshold, union-find."""
    t0 = time.perf_counter()
    idx, _ = faiss_index.build(x, kind="flat")
    if gpu:
        idx = faiss.index_cpu_to_all_gpus(idx)
    qi, pos, _ = knn_above(idx.search, x, idx.ntotal, threshold, k=k, max_k=1024, batch=4096)
    keep = qi < pos
    labels = connected_groups(len(x), qi[keep], pos[keep])
    return labels, time.perf_counter() - t0


def baseline(x: np.ndarray, threshold: float, block: int = 4096) -> tuple[np.ndarray, float]:
    """All pairs in numpy: one (block x N) matrix product per block of rows, thresholded, union-find."""
    t0 = time.perf_counter()
    a_parts, b_parts = [], []
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ x.T
        i, j = np.nonzero(sims >= threshold)
        i += start
        keep = i < j
        a_parts.append(i[keep])
        b_parts.append(j[keep])
    labels = connected_groups(len(x), np.concatenate(a_parts), np.concatenate(b_parts))
    return labels, time.perf_counter() - t0


def canonical(labels: np.ndarray) -> set[tuple[int, ...]]:
    """Groups (of two or more) as sorted tuples of rows, comparable across labelings."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    cuts = np.flatnonzero(np.diff(sorted_labels)) + 1
    return {tuple(g.tolist()) for g in np.split(order, cuts) if len(g) > 1}


def recall(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((labels[a] == labels[b]).mean()) if len(a) else 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="vectors (default 50000)")
    p.add_argument("--dim", type=int, default=512, help="dimension (default 512)")
    p.add_argument("--planted", type=int, default=2_000, help="vectors given a near copy (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.95, help="cosine threshold (default 0.95)")
    p.add_argument("--k", type=int, default=16, help="neighbours per query on the first pass (default 16)")
    p.add_argument("--block", type=int, default=4096, help="rows per matrix product in the baseline")
    p.add_argument("--gpu-n", type=int, default=1_000_000, help="vectors for the GPU run (default 1000000)")
    args = p.parse_args()

    x, a, b, ends = planted_vectors(args.n, args.dim, args.planted, args.seed)
    end_cos = (x[ends[:, 0]] * x[ends[:, 1]]).sum(1)
    print(
        f"{args.n:,} unit vectors x {args.dim}, {args.planted:,} planted copies + {len(ends):,} chains of 3 "
        f"(chain ends below the threshold {args.threshold}: {(end_cos < args.threshold).sum()}), "
        f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads"
    )
    ours_labels, ours_s = ours(x, args.threshold, args.k)
    print(f"ours     FAISS flat self k-NN + union-find: {ours_s:8.2f} s  recall {recall(ours_labels, a, b):.4f}")
    base_labels, base_s = baseline(x, args.threshold, args.block)
    print(f"baseline numpy all pairs, blocks of {args.block}:  {base_s:8.2f} s  recall {recall(base_labels, a, b):.4f}")
    ours_groups, base_groups = canonical(ours_labels), canonical(base_labels)
    same = ours_groups == base_groups
    print(
        f"ratio baseline / ours: {base_s / ours_s:.2f}x; groups: ours {len(ours_groups):,}, baseline {len(base_groups):,}, "
        f"identical: {same}; groups of 3: {sum(len(g) == 3 for g in ours_groups):,}"
    )
    ok = same and recall(ours_labels, a, b) == 1.0
    if faiss_index.gpu_count() > 0:
        del x
        xg, ag, bg, _ = planted_vectors(args.gpu_n, args.dim, args.planted * args.gpu_n // args.n, args.seed)
        gpu_labels, gpu_s = ours(xg, args.threshold, args.k, gpu=True)
        gpu_recall = recall(gpu_labels, ag, bg)
        print(
            f"GPU      FAISS flat self k-NN + union-find, {args.gpu_n:,} vectors: {gpu_s:8.2f} s  recall {gpu_recall:.4f}"
        )
        ok &= gpu_recall == 1.0
    else:
        print(f"GPU      no GPU present (faiss.get_num_gpus() == 0): skipped the {args.gpu_n:,}-vector GPU run")
    if not ok:
        raise SystemExit("FAILED: planted pairs missed or the two paths disagree")


if __name__ == "__main__":
    main()
