"""Search latency over 100k vectors against DuckDB brute force in the same run, and the served API's throughput.

For each dimension (512: the real model's; 128: the shipped model's) a synthetic home of random unit
vectors and word captions is built; then, with and without a filter keeping about 1% of the rows:

- vector: ``Searcher`` (FAISS, ID selector for the filter) vs ``array_cosine_similarity`` over every
  row in DuckDB, ``ORDER BY ... LIMIT 10``;
- keyword: ``Searcher`` BM25 (sparse columns of the query's words) vs the same BM25 weights as a
  postings table in DuckDB, ``SUM(weight) ... GROUP BY id`` (rounded to float32 as ours are, so
  both sides see the same ties, which both break by position/id);
- hybrid: ``Searcher`` reciprocal rank fusion vs both brute-force rankings fused in one SQL query.

Query vectors are made before the clock starts on both sides (a fixed random unit vector per query
text), so the figures are the search's, not the text encoder's (``bench/embed.py`` measures that).
Both sides answer the same top 10; the script checks they agree (ids for vector search, scores for
keyword and hybrid, whose ties DuckDB may order differently).

Then ``hotdog serve``'s app runs on a loopback port (uvicorn, one BLAS thread per request, as the
command does) and 8 client threads in this process send hybrid ``/api/search`` requests of 24
hits, bounded by ``--api-requests`` and ``--api-seconds``: requests per second and latency
percentiles.

    python bench/search.py                      # 100k vectors, dims 512 and 128, 1% filter
    python bench/search.py --vectors 20000 --dims 128 --api-seconds 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hotdog_dagster.core.io import catalog
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.io.vectors import vector_column
from hotdog_dagster.core.search import index, keyword
from hotdog_dagster.core.search.engine import HYBRID_WINDOW, RRF_K, Part, Query, Searcher

WORDS = [
    "red", "blue", "green", "yellow", "purple", "circle", "square", "triangle", "hot", "dog", "dogs", "bun",
    "face", "hamburger", "black", "image", "small", "large", "border", "photo", "cartoon", "drawing", "two",
    "one", "pair", "side", "plate", "mustard", "ketchup", "night",
]  # fmt: skip
MODES = ("vector", "keyword", "hybrid")
FILTERS = ("no filter", "filter")


class FixedEncoder:
    """A unit vector per text, the same on every call: the query encoder's cost stays out of the figures."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    def encode_pil(self, images: list) -> np.ndarray:
        raise NotImplementedError("the benchmark queries with text")


def build_store(root: str, n: int, dim: int, partitions: int = 10) -> Store:
    rng = np.random.default_rng(0)
    store = Store(root)
    per = n // partitions
    for p in range(partitions):
        key = f"bench-{p:03d}"
        m = rng.standard_normal((per, dim)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        ids = [f"{p:03d}{i:07d}" for i in range(per)]
        words = rng.choice(len(WORDS), size=(per, 6))
        lengths = rng.integers(2, 7, per)
        captions = [" ".join(WORDS[w] for w in row[:k]) for row, k in zip(words, lengths, strict=True)]
        store.write_table(
            "images",
            pa.table(
                {
                    "id": ids,
                    "partition": [key] * per,
                    "source": ["sketch"] * per,
                    "path": [f"/nowhere/{i}.png" for i in ids],
                    "caption": captions,
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
                    "model": ["bench/fixed"] * per,
                    "vector": vector_column(m),
                    "text_vector": vector_column(m),
                }
            ),
            key,
        )
        store.write_table("label_scores", pa.table({"id": ids, "a_face": rng.random(per).astype(np.float32)}), key)
    index.build_from_store(store)
    keyword.update_from_store(store)
    catalog.refresh(store)
    # the keyword baseline: the same BM25 weights as a postings table DuckDB can scan
    kw = keyword.load(store)
    coo = kw.weights.tocoo()
    vocab = np.empty(len(kw.vocabulary), dtype=object)
    for term, col in kw.vocabulary.items():
        vocab[col] = term
    pq.write_table(
        pa.table({"id": kw.ids[coo.row].tolist(), "term": vocab[coo.col].tolist(), "weight": coo.data}),
        f"{root}/postings.parquet",
    )
    return store


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, q))


def baseline_sql(mode: str, dim: int, filtered: bool, n_terms: int, window: int) -> str:
    where = "WHERE l.a_face >= ?" if filtered else ""
    join = "JOIN label_scores l USING (id)" if filtered else ""
    vector = (
        f"SELECT e.id, array_cosine_similarity(e.vector::FLOAT[{dim}], ?::FLOAT[{dim}]) AS s "
        f"FROM embeddings e {join} {where}"
    )
    terms = ", ".join("?" * n_terms) or "NULL"
    kw = (
        f"SELECT p.id, CAST(sum(p.weight) AS FLOAT) AS s FROM read_parquet(?) p {join.replace('USING (id)', 'ON l.id = p.id')} "
        f"WHERE p.term IN ({terms}) {'AND l.a_face >= ?' if filtered else ''} GROUP BY p.id"
    )
    if mode == "vector":
        return f"{vector} ORDER BY s DESC LIMIT 10"
    if mode == "keyword":
        return f"{kw} ORDER BY s DESC LIMIT 10"
    return (
        f"WITH v AS (SELECT id, row_number() OVER (ORDER BY s DESC, id) AS r FROM ({vector}) QUALIFY r <= {window}), "
        f"k AS (SELECT id, row_number() OVER (ORDER BY s DESC, id) AS r FROM ({kw}) QUALIFY r <= {window}) "
        f"SELECT id, coalesce(?::DOUBLE / ({RRF_K} + v.r), 0) + coalesce(?::DOUBLE / ({RRF_K} + k.r), 0) AS s "
        "FROM v FULL OUTER JOIN k USING (id) ORDER BY s DESC LIMIT 10"
    )


def baseline_params(mode: str, q: list[float], terms: list[str], postings: str, low: float | None) -> list:
    flt = [] if low is None else [low]
    vec = [q, *flt]
    kw = [postings, *terms, *flt]
    if mode == "vector":
        return vec
    if mode == "keyword":
        return kw
    return [*vec, *kw, 0.5, 0.5]


def bench_dim(args: argparse.Namespace, dim: int) -> tuple[dict, bool]:
    encoder = FixedEncoder(dim)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = build_store(tmp, args.vectors, dim)
        print(f"\n{args.vectors:,} vectors of dim {dim}: home built in {time.perf_counter() - t0:.1f} s")
        low = 1 - args.selectivity
        flt = f"a_face:[{low:.4f} TO *]"
        texts = [f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7 + 3) % len(WORDS)]}" for i in range(args.queries)]
        searcher = Searcher(store, encoder)
        for mode in MODES:  # warm up: the keyword matrix loads on first use
            searcher.search(Query(parts=(Part("text", "warm up dog"),), mode=mode))
        ours: dict[tuple[str, str], list[float]] = {(m, f): [] for m in MODES for f in FILTERS}
        for text in texts:
            for mode in MODES:
                for name, f in zip(FILTERS, (None, flt), strict=True):
                    t = time.perf_counter()
                    searcher.search(Query(parts=(Part("text", text),), mode=mode, filter=f, limit=10))
                    ours[mode, name].append(time.perf_counter() - t)

        con = duckdb.connect(str(store.catalog_path), read_only=True)
        postings = f"{tmp}/postings.parquet"
        base: dict[tuple[str, str], list[float]] = {(m, f): [] for m in MODES for f in FILTERS}
        agree = True
        for text in texts[: args.baseline_queries]:
            q = encoder.encode_texts([text])[0].tolist()
            terms = sorted(set(keyword.tokenize(text)))
            for mode in MODES:
                for name, f in zip(FILTERS, (None, flt), strict=True):
                    sql = baseline_sql(mode, dim, name == "filter", len(terms), HYBRID_WINDOW)
                    params = baseline_params(mode, q, terms, postings, low if name == "filter" else None)
                    t = time.perf_counter()
                    rows = con.execute(sql, params).fetchall()
                    base[mode, name].append(time.perf_counter() - t)
                    hits = searcher.search(Query(parts=(Part("text", text),), mode=mode, filter=f, limit=10))
                    if mode == "vector":
                        same = [h.id for h in hits] == [r[0] for r in rows]
                    else:
                        same = np.allclose([h.score for h in hits], [r[1] for r in rows], rtol=1e-4)
                    if not same:
                        print(f"  disagreement: {mode} {name} {text!r}")
                    agree &= same
        con.close()
        api = bench_api(args, searcher, texts) if args.api_requests > 0 else None
        searcher.close()

    print(f"{'':20s} {'ours p50':>9s} {'ours p95':>9s} {'duckdb p50':>11s} {'duckdb p95':>11s} {'ratio p50':>10s}")
    figures = {}
    for mode in MODES:
        for name in FILTERS:
            o50, o95 = pct(ours[mode, name], 50), pct(ours[mode, name], 95)
            b50, b95 = pct(base[mode, name], 50), pct(base[mode, name], 95)
            print(f"{mode + ', ' + name:20s} {o50:7.2f}ms {o95:7.2f}ms {b50:9.2f}ms {b95:9.2f}ms {b50 / o50:9.1f}x")
            figures[f"{mode}/{name}"] = {"p50_ms": o50, "p95_ms": o95, "duckdb_p50_ms": b50, "duckdb_p95_ms": b95}
    print(f"filter {flt!r} keeps ~{args.selectivity:.0%}; targets: p50 < 20 ms (vector, hybrid), ratio >= 10x")
    print(f"same top 10 as brute force: {agree}")
    if api:
        print(
            f"/api/search (hybrid), {api['clients']} clients: {api['requests']} requests in {api['seconds']:.1f} s = "
            f"{api['rps']:.0f} req/s; p50 {api['p50_ms']:.1f} ms, p95 {api['p95_ms']:.1f} ms; errors {api['errors']}"
        )
        figures["api"] = api
    return figures, agree


def bench_api(args: argparse.Namespace, searcher: Searcher, texts: list[str]) -> dict:
    """The served app on loopback under concurrent clients, bounded in requests and seconds."""
    import uvicorn
    from threadpoolctl import threadpool_limits

    from hotdog_dagster.serve import create_app

    with threadpool_limits(limits=1, user_api="blas"):  # what create_app does, undone after
        return _bench_api(args, searcher, texts, create_app(searcher, blas_threads=None), uvicorn)


def _bench_api(args: argparse.Namespace, searcher: Searcher, texts: list[str], app: object, uvicorn: object) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}/api/search?"
    deadline = time.perf_counter() + args.api_seconds
    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    errors = [0]

    def client(seed: int) -> None:
        i = seed
        while time.perf_counter() < deadline:
            with lock:
                if issued[0] >= args.api_requests:
                    return
                issued[0] += 1
            query = urllib.parse.urlencode({"q": texts[i % len(texts)], "mode": "hybrid", "limit": 24})
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(base + query, timeout=30) as resp:
                    json.load(resp)
                latencies.append(time.perf_counter() - t)
            except OSError:
                errors[0] += 1
            i += args.clients

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(client, range(args.clients)))
    seconds = time.perf_counter() - t0
    server.should_exit = True
    thread.join(timeout=10)
    return {
        "clients": args.clients,
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        "p50_ms": pct(latencies, 50),
        "p95_ms": pct(latencies, 95),
        "errors": errors[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--dims", default="512,128", help="comma-separated vector dimensions")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--baseline-queries", type=int, default=20)
    ap.add_argument("--selectivity", type=float, default=0.01, help="fraction of rows the filter keeps")
    ap.add_argument("--clients", type=int, default=8, help="concurrent API clients")
    ap.add_argument("--api-requests", type=int, default=2000, help="at most this many API requests (0: skip)")
    ap.add_argument("--api-seconds", type=float, default=20.0, help="and at most this long")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    results, ok = {}, True
    for dim in (int(d) for d in args.dims.split(",")):
        results[dim], agree = bench_dim(args, dim)
        ok &= agree
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
