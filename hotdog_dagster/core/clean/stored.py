"""What cleaning reads from the store: narrow columns of every partition, wide values of a few rows.

Per-image numbers (ids, hashes, sizes, statistics, descriptors) are small and read for the whole
set. Vectors and thumbnails are large, so only the rows a step needs are kept, read one partition
at a time: memory follows the rows asked for, not the size of the set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hotdog_dagster.core.clean.pixels import THUMB, thumbs_from_column
from hotdog_dagster.core.io.store import CorruptFile, Store, open_once
from hotdog_dagster.core.io.vectors import column_matrix

log = logging.getLogger(__name__)


def read_columns(store: Store, table: str, columns: list[str]) -> pa.Table | None:
    """``columns`` of every partition of ``table`` (columns a partition lacks come back null)."""
    keys = store.partitions(table)
    parts = {key: _read_some(store, table, key, columns) for key in keys}
    return concat(table, {k: v for k, v in parts.items() if v is not None})


def concat(table: str, parts: dict[str, pa.Table]) -> pa.Table | None:
    """Partitions as one table; types are widened where they differ (binary of another width, ...).

    A partition whose columns cannot be reconciled with the others is left out with a warning that
    names it: one bad file must not stop the cleaning of every other batch.
    """
    if not parts:
        return None
    try:
        return pa.concat_tables(list(parts.values()), promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    good: list[pa.Table] = []
    for key, part in parts.items():
        try:
            pa.concat_tables([*good, part], promote_options="permissive")
            good.append(part)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            log.warning("%s partition %r left out: its columns do not match the others (%s)", table, key, exc)
    return pa.concat_tables(good, promote_options="permissive") if good else None


def unique_ids(table: pa.Table, what: str) -> pa.Table:
    """``table`` with one row per id (the first); a repeated id is a data error worth a warning, not a crash."""
    ids = table.column("id")
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table
    first = pc.index_in(ids, value_set=pc.unique(ids))  # position of each row's id among the distinct ids
    _, keep = np.unique(first.to_numpy(zero_copy_only=False), return_index=True)
    log.warning(
        "%s: %d rows repeat an id seen in an earlier partition; using the first", what, table.num_rows - len(keep)
    )
    return table.take(pa.array(np.sort(keep)))


def rows_of(store: Store, table: str, ids: Sequence[str], partitions: Sequence[str], columns: list[str]) -> pa.Table:
    """The rows of ``table`` whose id is in ``ids`` (``partitions[i]`` holds ``ids[i]``): id plus ``columns``."""
    ids = np.asarray(ids, dtype=object)
    partitions = np.asarray(partitions, dtype=object)
    parts = {}
    for key in sorted(set(partitions.tolist())):
        wanted = pa.array(ids[partitions == key].tolist(), pa.string())
        part = _read_some(store, table, key, ["id", *columns])
        if part is not None:
            parts[key] = part.filter(pc.is_in(part.column("id"), value_set=wanted))
    found = concat(table, parts)
    return found if found is not None else pa.table({"id": pa.array([], pa.string())})


def vectors_of(store: Store, ids: Sequence[str], partitions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Image vectors aligned to ``ids`` (``(n, D)`` float32) and which were found (and usable)."""
    found = rows_of(store, "embeddings", ids, partitions, ["vector"])
    n = len(ids)
    if found.num_rows == 0 or "vector" not in found.column_names:
        return np.zeros((n, 0), dtype=np.float32), np.zeros(n, dtype=bool)
    matrix = column_matrix(found.column("vector"))
    pos = positions(found.column("id"), ids)
    out = np.full((n, matrix.shape[1]), np.nan, dtype=np.float32)
    hit = pos >= 0
    out[hit] = matrix[pos[hit]]
    ok = hit & np.isfinite(out).all(axis=1) & (np.abs(out).sum(axis=1) > 0)
    return out, ok


def thumbs_of(store: Store, ids: Sequence[str], partitions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails aligned to ``ids`` (``(n, 32, 32, 3)`` uint8) and which were found and readable."""
    found = rows_of(store, "thumbnails", ids, partitions, ["thumb"])
    n = len(ids)
    out = np.zeros((n, THUMB, THUMB, 3), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    if found.num_rows == 0 or "thumb" not in found.column_names:
        return out, ok
    thumbs, usable = thumbs_from_column(found.column("thumb"))
    pos = positions(found.column("id"), ids)
    hit = pos >= 0
    out[hit] = thumbs[pos[hit]]
    ok[hit] = usable[pos[hit]]
    return out, ok


def positions(have: pa.ChunkedArray | pa.Array, ids: Sequence[str]) -> np.ndarray:
    """For each of ``ids``, its row in ``have`` (-1 when absent)."""
    pos = pc.index_in(pa.array(list(ids), pa.string()), value_set=pa.chunked_array(have).combine_chunks())
    return pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _read_some(store: Store, table: str, key: str, columns: list[str]) -> pa.Table | None:
    """``columns`` of one partition file, leaving out those it lacks (the concat fills them with nulls).

    Read through ``ParquetFile`` directly and on one thread: for wide binary columns (thumbnails) that
    is several times faster than ``read_table``, which matters when a batch reads a few rows of every
    partition.
    """
    path = store.table_path(table, key)
    if not path.exists():
        return None
    try:
        with open_once(path) as source:  # one handle: a partition rewritten meanwhile is read whole, old or new
            file = pq.ParquetFile(source)
            names = set(file.schema_arrow.names)
            return file.read(columns=[c for c in columns if c in names], use_threads=False)  # small files: faster
    except FileNotFoundError:
        return None  # removed since it was listed (a partition dropped meanwhile)
    except (OSError, pa.ArrowException, ValueError) as exc:
        # Not left out with a warning any more: every image of a skipped partition silently fell
        # out of duplicate_groups and so out of clean_images, search and the walk (rows lost).
        raise CorruptFile(path, table, key, f"{type(exc).__name__}: {exc}") from None
