"""One FAISS inner-product index over every partition's vectors, with its id map.

Vectors are L2-normalised, so inner product is cosine. Exact search (flat) is both the fastest to
build and the most honest answer up to a few million vectors; beyond that an IVF index trades a
little recall for sub-linear search. The id map is a Parquet file beside the index: FAISS position
``i`` is row ``i`` of ``ids.parquet``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hotdog_dagster.core.io.store import Store, replace_dir
from hotdog_dagster.core.io.vectors import column_matrix

FLAT_MAX = 2_000_000
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexInfo:
    vectors: int
    dim: int
    kind: str
    build_seconds: float
    partitions: int
    gpu: bool


def gpu_count() -> int:
    """GPUs FAISS can use (0 with faiss-cpu)."""
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def build(vectors: np.ndarray, kind: str = "auto", flat_max: int = FLAT_MAX) -> tuple[faiss.Index, str]:
    """A FAISS index over unit vectors; returns the index and a description of what was built."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if kind == "auto":
        kind = "flat" if n <= flat_max else "ivf"
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        desc = "Flat,IP"
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
        desc = "HNSW32,IP"
    else:
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        sample = (
            vectors if n <= 256 * nlist else vectors[np.random.default_rng(0).choice(n, 256 * nlist, replace=False)]
        )
        index.train(sample)
        index.nprobe = max(1, nlist // 16)
        desc = f"IVF{nlist},Flat,IP,nprobe={index.nprobe}"
    index.add(vectors)
    return index, desc


def build_from_store(store: Store, kind: str = "auto") -> IndexInfo:
    """Rebuild the index from every ``embeddings`` partition and swap it into ``index/`` atomically."""
    table = store.read_table("embeddings", columns=["id", "partition", "vector"])
    if table is None or table.num_rows == 0:
        raise FileNotFoundError("no embeddings to index yet; materialise image_embeddings for at least one partition")
    t0 = time.perf_counter()
    vectors = column_matrix(table.column("vector"))
    index, desc = build(vectors, kind=kind)
    seconds = time.perf_counter() - t0
    staging = store.index_dir.with_name(".index.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    faiss.write_index(index, str(staging / "images.faiss"))
    pq.write_table(table.select(["id", "partition"]), staging / "ids.parquet")
    info = IndexInfo(
        vectors=int(index.ntotal),
        dim=int(vectors.shape[1]),
        kind=desc,
        build_seconds=seconds,
        partitions=len(set(table.column("partition").to_pylist())),
        gpu=gpu_count() > 0,
    )
    (staging / "meta.json").write_text(json.dumps(info.__dict__, indent=1))
    replace_dir(staging, store.index_dir)
    return info


@dataclass
class LoadedIndex:
    index: faiss.Index
    ids: np.ndarray  # object array of image ids, FAISS position -> id
    info: IndexInfo

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Batched k-NN: scores and positions, ``(Q, k)`` each (position -1 where fewer than k exist)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        return self.index.search(q, min(k, self.index.ntotal))


def load(store: Store) -> LoadedIndex:
    path: Path = store.index_dir / "images.faiss"
    if not path.exists():
        raise FileNotFoundError(f"no index at {path}; materialise image_index first (or run `hotdog run`)")
    index = faiss.read_index(str(path))
    ids = pq.read_table(store.index_dir / "ids.parquet", columns=["id"]).column("id").to_numpy(zero_copy_only=False)
    info = IndexInfo(**json.loads((store.index_dir / "meta.json").read_text()))
    return LoadedIndex(index=index, ids=ids, info=info)


def id_table(store: Store) -> pa.Table:
    return pq.read_table(store.index_dir / "ids.parquet")
