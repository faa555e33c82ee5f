"""Zero-shot scoring: the asset's one matrix product against one index search per image (the seed).

The seed scored every image by searching a FAISS index of the label vectors once per image (over
HTTP, 93k round trips; here in process, which flatters it). ``core.labels.score`` computes the whole
(images x labels) cosine matrix and the softmax in one go. Both run on the same vectors in the
same run, and must agree on every score.

    python bench/labels.py                 # 20k images x 4 labels, dim 512 (ViT-B-32)
"""

from __future__ import annotations

import argparse
import sys
import time

import faiss
import numpy as np

from hotdog_dagster.core.labels import DEFAULT_LABELS, score


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--labels", type=int, default=len(DEFAULT_LABELS))
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5, help="matrix-product repetitions (best is reported)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    images, labels = unit(rng, args.images, args.dim), unit(rng, args.labels, args.dim)
    logit_scale = 100.0

    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cos, prob = score(images, labels, logit_scale)
        best = min(best, time.perf_counter() - t0)

    index = faiss.IndexFlatIP(args.dim)
    index.add(labels)
    seed_cos = np.zeros_like(cos)
    t0 = time.perf_counter()
    for i in range(args.images):  # the seed: one search per image against the labels index
        d, j = index.search(images[i : i + 1], args.labels)
        seed_cos[i, j[0]] = d[0]
    seed = time.perf_counter() - t0

    err = float(np.abs(seed_cos - cos).max())
    print(f"{args.images} images x {args.labels} labels, dim {args.dim}")
    print(f"one index search per image (seed): {seed:9.4f} s  ({args.images / seed:12.0f} images/s)")
    print(f"one matrix product + softmax:      {best:9.4f} s  ({args.images / best:12.0f} images/s)")
    print(f"speed-up:                          {seed / best:9.1f}x  (target >= 100x)")
    print(f"max |difference| of cosines:       {err:9.2e}")
    return 0 if err < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
