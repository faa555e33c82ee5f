"""Duplicate groups over the whole set, resolved from edges alone: cheap, and independent of batch order.

Exact duplicates are grouped by hash here, over every image (identical bytes by ``content_hash``;
identical decoded pixels, across files and formats, by ``pixel_hash``). Near duplicates come from
the stored ``duplicate_edges`` of every batch, kept where both ends still exist and are not blank.
All edges go into one union-find (connected components), so chains (an original, a resize, a JPEG
of the resize, a crop of that) form one group. The representative is the member with the largest
resolution, then the smallest id, so the same images always keep the same one. Blank frames join
no group: every black frame looks like every other, and grouping them would keep one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hotdog_dagster.core.clean import stored
from hotdog_dagster.core.clean.blank import blank_flags, float_column
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.settings import CleanSettings

DUP_CODES = ("identical_bytes", "identical_pixels", "near_duplicate")

GROUPS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("partition", pa.string()),
        ("is_blank", pa.bool_()),
        ("blank_code", pa.string()),
        ("duplicate_group", pa.int32()),  # 0 = the largest group; null when the image has no duplicate
        ("group_size", pa.int32()),
        ("duplicate_of", pa.string()),  # the group's representative (itself for the representative)
        ("similarity", pa.float32()),  # cosine to the representative
        ("pixel_distance", pa.float32()),  # aligned thumbnail distance to the representative (when an edge)
        ("dup_reason", pa.string()),
        ("dup_code", pa.string()),
        ("keep", pa.bool_()),
    ]
)

_IMAGE_COLUMNS = [
    "id",
    "partition",
    "content_hash",
    "pixel_hash",
    "width",
    "height",
    "lum_mean",
    "lum_std",
    "safety_flagged",
]


def resolve_groups(store: Store, settings: CleanSettings) -> pa.Table:
    """The ``duplicate_groups`` table: one row per stored image, from the stored edges of every batch.

    Reads narrow columns of ``images`` and ``duplicate_edges``, and the vectors and thumbnails of
    grouped images only. Edges whose images were deleted, or are now blank, are left out.
    """
    edges = stored.read_columns(store, "duplicate_edges", ["a", "b", "similarity", "pixel_distance"])
    return groups_from_edges(store, settings, edges)


def groups_from_edges(store: Store, settings: CleanSettings, edges: pa.Table | None) -> pa.Table:
    """Groups of every stored image from the near-duplicate ``edges`` given (``EDGES_SCHEMA``)."""
    images = stored.read_columns(store, "images", _IMAGE_COLUMNS)
    if images is None or images.num_rows == 0:
        return GROUPS_SCHEMA.empty_table()
    images = stored.unique_ids(images, "images")
    n = images.num_rows
    ids_arrow = images.column("id").combine_chunks()
    ids = np.asarray(ids_arrow.to_pylist(), dtype=object)
    flags = blank_flags(images, settings)
    eligible = ~flags.is_blank
    content, pixels = _codes(images, "content_hash"), _codes(images, "pixel_hash")

    parts_a, parts_b = [], []
    near = _NearEdges.empty()
    if settings.exact_duplicates:
        for codes in (content, pixels):
            a, b = hash_edges(codes, eligible)
            parts_a.append(a)
            parts_b.append(b)
    if settings.near_duplicates and edges is not None and edges.num_rows:
        a = _rows(edges.column("a"), ids_arrow)
        b = _rows(edges.column("b"), ids_arrow)
        ok = (a >= 0) & (b >= 0)
        ok[ok] = eligible[a[ok]] & eligible[b[ok]]
        parts_a.append(a[ok])
        parts_b.append(b[ok])
        near = _NearEdges.of(n, a[ok], b[ok], edges, ok)
    a = np.concatenate(parts_a) if parts_a else np.zeros(0, np.int64)
    b = np.concatenate(parts_b) if parts_b else np.zeros(0, np.int64)

    labels = connected_groups(n, a, b)
    size = np.bincount(labels, minlength=n)[labels]
    grouped = size > 1
    area = np.nan_to_num(float_column(images, "width") * float_column(images, "height"), nan=0).astype(np.int64)
    rep = np.full(n, -1, dtype=np.int64)
    members = np.flatnonzero(grouped)
    rep[members] = members[pick_representatives(labels[members], area[members], ids[members])]
    group = _number_groups(rep, size, ids, grouped)

    r = rep[members]
    same_bytes = (content[members] >= 0) & (content[members] == content[r])
    same_pixels = (pixels[members] >= 0) & (pixels[members] == pixels[r])
    is_rep = members == r
    code = np.full(n, None, dtype=object)
    code[members] = np.where(
        is_rep, None, np.where(same_bytes, DUP_CODES[0], np.where(same_pixels, DUP_CODES[1], DUP_CODES[2]))
    )
    partitions = np.asarray(images.column("partition").to_pylist(), dtype=object)
    similarity, distance, adjacent = _to_representative(store, ids, partitions, members[~is_rep], r[~is_rep], near)
    distance[members[(same_bytes | same_pixels) & ~is_rep]] = 0.0
    reason = _reasons(ids, rep, code, similarity, distance, adjacent)
    keep = eligible & (~grouped | (rep == np.arange(n)))
    return pa.table(
        {
            "id": ids_arrow,
            "partition": images.column("partition"),
            "is_blank": pa.array(flags.is_blank, pa.bool_()),
            "blank_code": pa.array(flags.code, pa.string()),
            "duplicate_group": pa.array(group, pa.int32(), mask=~grouped),
            "group_size": pa.array(size.astype(np.int32), pa.int32(), mask=~grouped),
            "duplicate_of": pa.array(np.where(grouped, ids[np.maximum(rep, 0)], None).tolist(), pa.string()),
            "similarity": pa.array(similarity, pa.float32(), mask=np.isnan(similarity)),
            "pixel_distance": pa.array(distance, pa.float32(), mask=np.isnan(distance)),
            "dup_reason": pa.array(reason, pa.string()),
            "dup_code": pa.array(code, pa.string()),
            "keep": pa.array(keep, pa.bool_()),
        },
        schema=GROUPS_SCHEMA,
    )


def connected_groups(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union-find over an edge list: a component label per node (``0..n-1`` nodes, edges ``a[i]-b[i]``).

    Connected components of the sparse edge graph are exactly the union-find closure, computed in C
    over all edges at once, so a chain a-b-c is one group however the edges arrived.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def pick_representatives(labels: np.ndarray, area: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The row kept for each row's group: the largest width*height, then the smallest id.

    ``labels`` are group labels per row (any integers); returns, per row, the row index of its
    group's representative. Deterministic: it depends on the data, never on row order.
    """
    n = len(labels)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, id_rank = np.unique(np.asarray(ids, dtype=object).astype(str), return_inverse=True)
    order = np.lexsort((id_rank, -np.asarray(area, dtype=np.int64), labels))  # last key is the primary one
    sorted_labels = labels[order]
    first = np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]
    uniq, inverse = np.unique(labels, return_inverse=True)
    rep_per_uniq = order[first][np.searchsorted(sorted_labels[first], uniq)]
    return rep_per_uniq[inverse].astype(np.int64)


def hash_edges(codes: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining every eligible row to the first eligible row with the same hash code (-1: no hash)."""
    rows = np.flatnonzero(eligible & (codes >= 0))
    if rows.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, first, inverse = np.unique(codes[rows], return_index=True, return_inverse=True)
    leader = rows[first][inverse]
    keep = leader != rows
    return rows[keep], leader[keep]


def _number_groups(rep: np.ndarray, size: np.ndarray, ids: np.ndarray, grouped: np.ndarray) -> np.ndarray:
    """Group numbers by size (largest first), then by representative id: stable for the same data."""
    group = np.full(len(rep), -1, dtype=np.int32)
    rep_rows = np.unique(rep[grouped])
    if rep_rows.size:
        _, id_rank = np.unique(ids[rep_rows].astype(str), return_inverse=True)
        order = np.lexsort((id_rank, -size[rep_rows]))
        number = np.empty(rep_rows.size, dtype=np.int32)
        number[order] = np.arange(rep_rows.size, dtype=np.int32)
        group[grouped] = number[np.searchsorted(rep_rows, rep[grouped])]
    return group


@dataclass(frozen=True)
class _NearEdges:
    """Verified near edges by row pair, with what was measured when they were found."""

    keys: np.ndarray  # sorted lo_row * n + hi_row
    similarity: np.ndarray
    distance: np.ndarray
    n: int

    @classmethod
    def empty(cls) -> _NearEdges:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32), 0)

    @classmethod
    def of(cls, n: int, a: np.ndarray, b: np.ndarray, edges: pa.Table, ok: np.ndarray) -> _NearEdges:
        keys = np.minimum(a, b) * n + np.maximum(a, b)
        sim = _floats(edges, "similarity")[ok]
        dist = _floats(edges, "pixel_distance")[ok]
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], sim[order], dist[order], n)

    def lookup(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each row pair: whether it is an edge, and its similarity and pixel distance."""
        if self.n == 0 or len(self.keys) == 0:
            nan = np.full(len(x), np.nan, dtype=np.float32)
            return np.zeros(len(x), bool), nan, nan.copy()
        keys = np.minimum(x, y) * self.n + np.maximum(x, y)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = self.keys[pos] == keys
        return hit, np.where(hit, self.similarity[pos], np.nan), np.where(hit, self.distance[pos], np.nan)


def _to_representative(
    store: Store,
    ids: np.ndarray,
    partitions: np.ndarray,
    members: np.ndarray,
    rep: np.ndarray,
    near: _NearEdges,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosine of each duplicate to its representative, and the aligned pixel distance where they share an edge.

    An edge to the representative already holds both numbers. The other duplicates (joined through
    a chain, or by hash alone) have only their vectors read, for the cosine: measuring their pixels
    would mean decoding thumbnail columns of every partition they sit in, each time groups resolve.
    """
    n = len(ids)
    similarity = np.full(n, np.nan, dtype=np.float32)
    distance = np.full(n, np.nan, dtype=np.float32)
    adjacent = np.zeros(n, dtype=bool)
    if members.size == 0:
        return similarity, distance, adjacent
    hit, sim, dist = near.lookup(members, rep)
    adjacent[members[hit]] = True
    similarity[members[hit]] = sim[hit]
    distance[members[hit]] = dist[hit]
    todo, todo_rep = members[~hit], rep[~hit]
    if todo.size:
        rows = np.unique(np.concatenate([todo, todo_rep]))
        vectors, ok = stored.vectors_of(store, ids[rows].tolist(), partitions[rows].tolist())
        m, r = np.searchsorted(rows, todo), np.searchsorted(rows, todo_rep)
        both = ok[m] & ok[r]
        if both.any():
            similarity[todo[both]] = np.einsum("ij,ij->i", vectors[m[both]], vectors[r[both]])
    return similarity, distance, adjacent


def _reasons(
    ids: np.ndarray,
    rep: np.ndarray,
    code: np.ndarray,
    similarity: np.ndarray,
    distance: np.ndarray,
    adjacent: np.ndarray,
) -> np.ndarray:
    """A sentence per duplicate (None for representatives and images in no group)."""
    reason = np.full(len(ids), None, dtype=object)
    for i in np.flatnonzero(code != None):  # noqa: E711 - elementwise comparison with None
        of = ids[rep[i]]
        if code[i] == DUP_CODES[0]:
            reason[i] = f"identical bytes to {of}"
        elif code[i] == DUP_CODES[1]:
            reason[i] = f"identical pixels to {of} (another file or format)"
        else:
            parts = [f"cosine {similarity[i]:.3f}"] if np.isfinite(similarity[i]) else []
            if np.isfinite(distance[i]):
                parts.append(f"aligned pixel distance {distance[i]:.2f}")
            if not adjacent[i]:
                parts.append("joined through other near duplicates")
            reason[i] = f"near duplicate of {of}" + (f" ({', '.join(parts)})" if parts else "")
    return reason


def _codes(images: pa.Table, column: str) -> np.ndarray:
    """Integer codes of a hash column (equal hashes, equal codes; -1 for null or absent)."""
    if column not in images.column_names:
        return np.full(images.num_rows, -1, dtype=np.int64)
    encoded = pc.dictionary_encode(images.column(column).combine_chunks())
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _floats(table: pa.Table, column: str) -> np.ndarray:
    if column not in table.column_names:
        return np.full(table.num_rows, np.nan, dtype=np.float32)
    return table.column(column).cast(pa.float32()).fill_null(np.nan).to_numpy(zero_copy_only=False)


def _rows(values: pa.ChunkedArray, ids: pa.Array) -> np.ndarray:
    """Row of each value among ``ids`` (-1 when absent)."""
    return pc.index_in(values, value_set=ids).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
