"""One FAISS inner-product index over every partition's vectors, with its id map.

Vectors are L2-normalised, so inner product is cosine. Exact search (flat) is both the fastest to
build and the most honest answer up to a few million vectors; beyond that an IVF index trades a
little recall for sub-linear search. The id map is a Parquet file beside the index: FAISS position
``i`` is row ``i`` of ``ids.parquet``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hotdog_dagster.core.io.faults import fault_point
from hotdog_dagster.core.io.locks import file_lock, lock_path
from hotdog_dagster.core.io.store import CorruptFile, Store, open_once, replace_dir
from hotdog_dagster.core.io.vectors import column_matrix

log = logging.getLogger(__name__)
#: The asset that writes ``index/`` (what an unreadable index file tells the user to re-materialise).
ASSET = "image_index"

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


def _signatures(store: Store) -> dict[str, list[int]]:
    """Each embeddings partition's (size, mtime) signature: a re-materialised partition changes it."""
    out = {}
    for f in store.partition_files("embeddings"):
        st = f.stat()
        out[f.stem] = [st.st_size, st.st_mtime_ns]
    return out


def _read_vectors(store: Store, partitions: list[str]) -> tuple[np.ndarray, pa.Table]:
    tables = [store.read_table("embeddings", p, columns=["id", "partition", "vector"]) for p in partitions]
    tables = [t for t in tables if t is not None and t.num_rows]
    if not tables:
        return np.zeros((0, 0), np.float32), pa.table(
            {"id": pa.array([], pa.string()), "partition": pa.array([], pa.string())}
        )
    table = pa.concat_tables(tables)
    return column_matrix(table.column("vector")), table.select(["id", "partition"])


def update_from_store(store: Store, kind: str = "auto", rebuild: bool = False) -> IndexInfo:
    """Bring ``index/`` up to date with the embeddings partitions, touching only what changed.

    New partitions are appended; a removed or re-materialised partition is taken out (a flat index
    compacts in place; IVF and HNSW are rebuilt, since their ids cannot be compacted). ``rebuild``
    forces a build from scratch. The new index is swapped in atomically, so readers see the old
    one or the new one, never a mix.

    Holds the ``index`` lock (two whole-set runs at once would each grow their own copy, and the
    last swap would drop what the other added). An index that cannot be read (a corrupt or missing
    file under ``index/``) is rebuilt from the embeddings, which is what re-materialising it means.
    """
    with file_lock(lock_path(store.root, "index"), what=f"the index of {store.root}"):
        return _update(store, kind, rebuild)


def _update(store: Store, kind: str, rebuild: bool) -> IndexInfo:
    current = _signatures(store)
    if not current:
        raise FileNotFoundError("no embeddings to index yet; materialise image_embeddings for at least one partition")
    t0 = time.perf_counter()
    try:
        old_meta = read_meta(store)
    except CorruptFile as exc:
        log.warning("%s; rebuilding the index from the embeddings", exc)
        old_meta = None
    indexed = old_meta.get("partition_signatures", {}) if old_meta else {}
    stale = sorted(p for p in indexed if current.get(p) != indexed[p])
    new = sorted(p for p in current if current[p] != indexed.get(p))
    flat_now = old_meta is not None and old_meta.get("kind", "").startswith("Flat")
    total = sum(current[p][0] for p in current)  # bytes: a cheap proxy for the size decision below
    full = rebuild or old_meta is None or (stale and not flat_now) or old_meta.get("requested_kind") != kind
    if not full and flat_now and kind == "auto":
        full = _count_after(old_meta, stale, store, new) > FLAT_MAX  # grew past exact search: go IVF
    if full:
        vectors, ids = _read_vectors(store, sorted(current))
        index, desc = build(vectors, kind=kind)
        added, removed = ids.num_rows, int(old_meta["vectors"]) if old_meta else 0
    else:
        try:
            loaded = load(store)
        except (CorruptFile, FileNotFoundError) as exc:
            log.warning("%s; rebuilding the index from the embeddings", exc)
            return _update(store, kind, rebuild=True)
        index, desc = loaded.index, loaded.info.kind
        ids = loaded.id_table
        removed = 0
        if stale:
            drop = np.flatnonzero(
                pc.is_in(ids.column("partition"), value_set=pa.array(stale)).to_numpy(zero_copy_only=False)
            )
            if drop.size:
                index.remove_ids(faiss.IDSelectorBatch(drop.astype(np.int64)))
                keep = np.ones(ids.num_rows, dtype=bool)
                keep[drop] = False
                ids = ids.filter(pa.array(keep))
                removed = int(drop.size)
        vectors, new_ids = _read_vectors(store, new)
        if len(new_ids):
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            ids = pa.concat_tables([ids, new_ids])
        added = new_ids.num_rows
    seconds = time.perf_counter() - t0
    staging = store.staging_dir(store.index_dir)
    try:
        return _write(store, staging, index, ids, desc, kind, current, seconds, added, removed, full, total)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a full disk must not also keep a half-written copy
        raise


def _write(
    store: Store,
    staging: Path,
    index: faiss.Index,
    ids: pa.Table,
    desc: str,
    kind: str,
    current: dict[str, list[int]],
    seconds: float,
    added: int,
    removed: int,
    full: bool,
    total: int,
) -> IndexInfo:
    """Write the index, its id map and its meta into ``staging`` and swap it in for ``index/``."""
    build_id = uuid.uuid4().hex
    faiss.write_index(index, str(staging / "images.faiss"))
    fault_point("index", f"staging {staging / 'images.faiss'}")
    pq.write_table(ids.replace_schema_metadata({"build_id": build_id}), staging / "ids.parquet")
    info = IndexInfo(
        vectors=int(index.ntotal),
        dim=int(index.d),
        kind=desc,
        build_seconds=seconds,
        partitions=len(current),
        gpu=gpu_count() > 0,
    )
    meta = {
        **info.__dict__,
        "requested_kind": kind,
        "partition_signatures": current,
        "added": added,
        "removed": removed,
        "full_rebuild": bool(full),
        "bytes_indexed": total,
        "build_id": build_id,
    }
    (staging / "meta.json").write_text(json.dumps(meta, indent=1))
    _carry_over(store.index_dir, staging)
    for name in ("images.faiss", "ids.parquet", "meta.json"):
        _fsync(staging / name)
    replace_dir(staging, store.index_dir)
    return info


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The files this module writes under ``index/``; anything else there (the keyword index) is kept.
OWN_FILES = frozenset({"images.faiss", "ids.parquet", "meta.json"})


def _carry_over(current: Path, staging: Path) -> None:
    """Hard-link the other indexes' files into the staging directory, so swapping it in keeps them.

    ``keyword_index`` runs after ``image_index`` (it depends on it), so nothing writes these files
    while the swap happens.
    """
    if not current.is_dir():
        return
    for entry in current.iterdir():
        if entry.name in OWN_FILES or entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            os.link(entry, staging / entry.name)
        except OSError:
            shutil.copy2(entry, staging / entry.name)


def build_from_store(store: Store, kind: str = "auto") -> IndexInfo:
    """Rebuild the index from every ``embeddings`` partition (the full rebuild of :func:`update_from_store`)."""
    return update_from_store(store, kind=kind, rebuild=True)


def _count_after(meta: dict, stale: list[str], store: Store, new: list[str]) -> int:
    """Vectors after adding ``new`` (stale ones still counted: an upper bound is enough to choose the kind)."""
    n = int(meta["vectors"])
    for p in new:
        path = store.table_path("embeddings", p)
        try:
            with open_once(path) as source:
                n += pq.ParquetFile(source).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:  # named, as every other read of a partition is
            raise CorruptFile(path, "embeddings", p, f"{type(exc).__name__}: {exc}") from None
    return n


def read_meta(store: Store) -> dict | None:
    """The index's meta.json (what was added, removed, rebuilt), or None before the first build."""
    path = store.index_dir / "meta.json"
    if not (path.exists() and (store.index_dir / "images.faiss").exists()):
        return None
    try:
        meta = json.loads(path.read_bytes())
        if not isinstance(meta, dict) or "vectors" not in meta:
            raise ValueError("not an index description")
        return meta
    except (OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            return None
        raise CorruptFile(path, ASSET, None, f"{type(exc).__name__}: {exc}") from None


@dataclass
class LoadedIndex:
    index: faiss.Index
    ids: np.ndarray  # object array of image ids, FAISS position -> id
    info: IndexInfo
    id_table: pa.Table | None = None  # ids.parquet as read (id, partition), for the incremental update

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Batched k-NN: scores and positions, ``(Q, k)`` each (position -1 where fewer than k exist)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        return self.index.search(q, min(k, self.index.ntotal))


def load(store: Store, attempts: int = 5) -> LoadedIndex:
    """The index, its id map and its meta, all three from one build.

    They are three files in one directory that a writer swaps whole; a reader reading them one by
    one while a swap happens could pair one build's vectors with another build's ids, which would
    silently answer every query with the wrong images. Each build stamps ``meta.json`` and
    ``ids.parquet`` with one ``build_id``: the meta is read before and after the other two, and the
    read is repeated when anything moved. A file that cannot be read is a :class:`CorruptFile`
    naming it and ``image_index``.
    """
    path: Path = store.index_dir / "images.faiss"
    for attempt in range(attempts):
        if not path.exists():
            if attempt < attempts - 1 and store.index_dir.with_name(f".{store.index_dir.name}.old").exists():
                time.sleep(0.05 * (attempt + 1))  # a fallback (non-Linux) swap in progress
                continue
            raise FileNotFoundError(f"no index at {path}; materialise image_index first (or run `hotdog run`)")
        try:
            before = read_meta(store)
            index = _read_faiss(path)
            id_path = store.index_dir / "ids.parquet"
            try:
                with open_once(id_path) as source:
                    table = pq.read_table(source)
            except (OSError, pa.ArrowException) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                raise CorruptFile(id_path, ASSET, None, f"{type(exc).__name__}: {exc}") from None
            after = read_meta(store)
        except FileNotFoundError:
            if attempt < attempts - 1:
                continue
            raise
        if before is None or after is None or before.get("build_id") != after.get("build_id"):
            continue  # swapped while reading
        stamp = (table.schema.metadata or {}).get(b"build_id", b"").decode()
        if stamp != (before.get("build_id") or ""):
            continue
        if table.num_rows != index.ntotal or int(before["vectors"]) != index.ntotal:
            raise CorruptFile(
                store.index_dir,
                ASSET,
                None,
                f"images.faiss holds {index.ntotal} vectors but ids.parquet {table.num_rows} ids "
                f"and meta.json {before['vectors']}",
            )
        info = IndexInfo(**{k: before[k] for k in IndexInfo.__dataclass_fields__})
        ids = table.column("id").to_numpy(zero_copy_only=False)
        return LoadedIndex(index=index, ids=ids, info=info, id_table=table.replace_schema_metadata(None))
    raise RuntimeError(f"the index under {store.index_dir} kept changing while being read; try again")


def _read_faiss(path: Path) -> faiss.Index:
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:  # FAISS reports a truncated or foreign file as a RuntimeError
        if not path.exists():
            raise FileNotFoundError(str(path)) from None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "not a FAISS index"
        raise CorruptFile(path, ASSET, None, f"FAISS cannot read it: {detail}") from None


def id_table(store: Store) -> pa.Table:
    return pq.read_table(store.index_dir / "ids.parquet")
