"""Query latency of ``Searcher`` over 100k vectors against DuckDB brute force, in the same run.

Both sides get the same text query, encoded by the same loaded model, and return the top 10 with
their scores; the baseline ranks every row with ``array_cosine_similarity`` in SQL (with the filter
as a WHERE clause). Figures are p50/p95 over the queries, with and without a selective filter.

    python bench/search.py                  # 100k vectors, 1% filter selectivity
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import duckdb
import numpy as np
import pyarrow as pa

from hotdog_dagster.core.io import catalog
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.io.vectors import vector_column
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.names import RANDOM_SKETCH_MODEL
from hotdog_dagster.core.search import index
from hotdog_dagster.core.search.engine import Part, Query, Searcher

WORDS = ["red", "blue", "green", "circle", "square", "hot dog", "two hot dogs", "a face", "hamburger", "black image"]


def build_store(root: str, n: int, dim: int, model: str, partitions: int = 10) -> Store:
    rng = np.random.default_rng(0)
    store = Store(root)
    per = n // partitions
    for p in range(partitions):
        key = f"bench-{p:03d}"
        m = rng.standard_normal((per, dim)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        ids = [f"{p:03d}{i:07d}" for i in range(per)]
        store.write_table(
            "images",
            pa.table(
                {
                    "id": ids,
                    "partition": [key] * per,
                    "source": ["sketch"] * per,
                    "path": [f"/nowhere/{i}.png" for i in ids],
                    "label": rng.choice(["face", "hamburger"], per).tolist(),
                }
            ),
            key,
        )
        store.write_table(
            "embeddings",
            pa.table(
                {
                    "id": ids,
                    "partition": [key] * per,
                    "model": [model] * per,
                    "vector": vector_column(m),
                    "text_vector": vector_column(m),
                }
            ),
            key,
        )
        store.write_table("label_scores_part", pa.table({"id": ids, "a_face": rng.random(per).astype(np.float32)}), key)
    index.build_from_store(store)
    scores = store.read_table("label_scores_part")
    store.write_table("label_scores", scores)
    catalog.refresh(store)
    return store


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, q))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--baseline-queries", type=int, default=20)
    ap.add_argument("--model", default=RANDOM_SKETCH_MODEL, help="query encoder (random weights are fine for timing)")
    ap.add_argument("--selectivity", type=float, default=0.01, help="fraction of rows the filter keeps")
    args = ap.parse_args(argv)

    encoder = ClipEncoder(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = build_store(tmp, args.vectors, encoder.dim, str(encoder.spec))
        print(
            f"{args.vectors} vectors of dim {encoder.dim}, built in {time.perf_counter() - t0:.1f} s; "
            f"model {encoder.spec} loaded"
        )
        low = 1 - args.selectivity
        flt = f"a_face:[{low:.4f} TO *]"
        texts = [f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]}" for i in range(args.queries)]

        searcher = Searcher(store, encoder)
        searcher.search(Query(parts=(Part("text", "warm up"),)))
        ours: dict[str, list[float]] = {"no filter": [], "filter": []}
        for text in texts:
            for name, f in (("no filter", None), ("filter", flt)):
                t = time.perf_counter()
                hits = searcher.search(Query(parts=(Part("text", text),), filter=f, limit=10))
                ours[name].append(time.perf_counter() - t)
                assert len(hits) == 10

        con = duckdb.connect(str(store.catalog_path), read_only=True)
        base: dict[str, list[float]] = {"no filter": [], "filter": []}
        dim = encoder.dim
        sql_all = (
            f"SELECT e.id, array_cosine_similarity(e.vector::FLOAT[{dim}], ?::FLOAT[{dim}]) AS s "
            "FROM embeddings e ORDER BY s DESC LIMIT 10"
        )
        sql_f = (
            f"SELECT e.id, array_cosine_similarity(e.vector::FLOAT[{dim}], ?::FLOAT[{dim}]) AS s "
            "FROM embeddings e JOIN label_scores l USING (id) WHERE l.a_face >= ? ORDER BY s DESC LIMIT 10"
        )
        agree = True
        for text in texts[: args.baseline_queries]:
            for name in ("no filter", "filter"):
                t = time.perf_counter()
                q = encoder.encode_texts([text])[0].tolist()
                rows = (
                    con.execute(sql_all, [q]).fetchall()
                    if name == "no filter"
                    else con.execute(sql_f, [q, low]).fetchall()
                )
                base[name].append(time.perf_counter() - t)
                hits = searcher.search(Query(parts=(Part("text", text),), filter=None if name == "no filter" else flt))
                agree &= [h.id for h in hits] == [r[0] for r in rows]
        searcher.close()
        con.close()

    print(f"{'':12s} {'ours p50':>10s} {'ours p95':>10s} {'duckdb p50':>11s} {'duckdb p95':>11s} {'ratio p50':>10s}")
    for name in ("no filter", "filter"):
        r = pct(base[name], 50) / pct(ours[name], 50)
        print(
            f"{name:12s} {pct(ours[name], 50):8.2f}ms {pct(ours[name], 95):8.2f}ms {pct(base[name], 50):9.2f}ms "
            f"{pct(base[name], 95):9.2f}ms {r:9.1f}x"
        )
    print(f"filter {flt!r} keeps ~{args.selectivity:.0%}; targets: p50 < 20 ms, ratio >= 10x")
    print(f"same top-10 ids as brute force: {agree}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
