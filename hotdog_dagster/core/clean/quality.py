"""Image quality: blank frames, exact duplicates and near-duplicate groups, each with its reason.

Flags, never deletes: :func:`assess` returns one row per image saying whether it is blank (and
why), which duplicate group it belongs to, the representative kept for that group, how similar
it is to it and why it was grouped; ``keep`` is what the ``clean_images`` view lets through.

Blank frames
    A frame is blank when the generator's safety checker flagged it (``safety_flagged``; the
    checker returns a black frame), or when it is *dark*: luminance mean <= ``dark_mean_max`` and
    spread <= ``dark_std_max`` (pure black, near-black with sensor-like noise and JPEG-compressed
    near-black all land there). Both statistics are computed once at ingest; the two-sided test
    matters because a night shot (a bright object on black) has a low mean but a large spread. A
    *flat* rule (spread <= ``flat_std_max`` at any brightness) exists but is off by default:
    luminance alone cannot tell a uniform fill from colour content of equal luminance.

Blanks and duplicates
    Blank frames are left out of all duplicate grouping. Every black frame looks like every other
    one (pure-black PNGs of one size are even byte-identical), so grouping them would make one
    giant "duplicate" group whose representative would then be kept; a blank is dropped anyway,
    and its duplicate columns stay empty so the two kinds of flag never blur.

Duplicates
    Identical bytes (``content_hash``) and identical decoded pixels (``pixel_hash``: a PNG and its
    lossless re-save as BMP, TIFF, WebP or another PNG) are grouped by hash, across formats and
    without looking at vectors. Near duplicates (re-encoded at another JPEG quality, resized,
    slightly cropped) are found in two steps. Candidates come from a batched self k-NN over the
    FAISS index: every vector is a query, in batches of ``search_batch``; a query whose k-th
    neighbour still scores >= ``near_threshold`` is searched again with four times the k, so no
    neighbour above the threshold is cut off by k (up to ``max_k``). Each candidate pair is then
    confirmed by its pixels: both images as 32x32 RGB thumbnails, the crop of up to ``max_crop``
    per side that best maps one onto the other (fitted on row and column profiles, every box of
    every pair in one matrix product), and the RMSE of the aligned 8x8 pictures must be <=
    ``pixel_max_distance``. All edges (hash and near) go into one union-find (connected components
    of the edge graph), so chains (an original, a resize, a JPEG of the resize, a crop of that)
    form one group. The representative is the member with the largest resolution (width*height),
    then the smallest id, so the same data always keeps the same image.

Thresholds, measured on the sketch world
    Planted set (tests/test_quality.py, 96 px): 240 originals, 200 byte copies, 40 lossless
    re-saves, 70 JPEG re-encodes (q60-95), 70 resizes (0.5-0.9x), 70 crops (2-6% per side), 20
    chains of three, 60 look-alikes (for each of 60 originals the closest distinct draw among
    1,300 of another seed by 16x16 thumbnail), 20 dimmed and 20 night originals, 320 black frames.

    Blank. Black frames: luminance mean 0-13.0, spread 0-0.98 (the world draws levels 0-13 with
    noise; a third are JPEG). Content that is dark: dimmed originals mean >= 31.6; night shots
    mean >= 12.5 but spread >= 29.5; ordinary originals mean >= 147, spread >= 5.1 (one
    look-alike has spread 1.6, which is why the flat rule is off). ``dark_mean_max`` 20 and
    ``dark_std_max`` 8 sit in both gaps with room for real sensor noise: blank P = R = 1.0.

    Cosine does not separate copies from look-alikes here, whatever the weights. Untrained
    weights put every pair above 0.99. The bundled sketch model: crops of an original at cosine
    0.945-0.999 (JPEG >= 0.972, resize >= 0.972, chain links >= 0.976), while an original's
    nearest distinct image sits at 0.972 (median) and up to 0.996, a look-alike's at 0.982 and up
    to 0.995, and dimmed images all look alike to it (0.999). Three earlier checkpoints (150-300
    training steps) put some crops as low as 0.883. So the cosine only proposes candidates:
    ``near_threshold`` 0.8 keeps every true link of every checkpoint (weakest 0.883) with margin,
    at the cost of about 27k candidate pairs among 850 images (0.9 would still be exact with the
    bundled weights, with 17k).

    The pHash does not separate them either: crops move it by up to 34 of 64 bits (median 8),
    while distinct sketches collide at distance 0 (a centred object on a plain background leaves
    most low DCT coefficients near zero, so their signs are noise). It stays available
    (``phash_max_distance``) but is off by default.

    The pixel check does separate them: aligned RMSE of JPEG copies 0.26-1.59, resizes
    0.14-0.86, crops 0.32-2.71, chain links up to 2.92; distinct pairs among the 27k candidates
    >= 4.01 (two dimmed images; look-alikes >= 4.35, night shots >= 7.16). ``pixel_max_distance``
    3.5 sits between 2.92 and 4.01: duplicate P = R = 1.0 with the bundled weights, with every
    earlier checkpoint, and with untrained weights (where all 301k pairs become candidates). It costs about 0.6 ms per candidate
    pair on two cores, so on sets where the embedding clusters whole classes (the sketch world
    at 100k images) raise ``near_threshold`` or lower ``max_k`` to bound the candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hotdog_dagster.core.io.decode import ImageRejected, decode
from hotdog_dagster.core.io.vectors import column_matrix

log = logging.getLogger(__name__)

BLANK_REASONS = ("safety_checker", "dark", "flat")
DUP_REASONS = ("identical_bytes", "identical_pixels", "near_duplicate")

QUALITY_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("partition", pa.string()),
        ("is_blank", pa.bool_()),
        ("blank_reason", pa.string()),
        ("blank_score", pa.float32()),
        ("duplicate_group", pa.int32()),
        ("group_size", pa.int32()),
        ("duplicate_of", pa.string()),
        ("similarity", pa.float32()),
        ("pixel_distance", pa.float32()),
        ("phash_distance", pa.int16()),
        ("dup_reason", pa.string()),
        ("keep", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of :func:`assess`; the defaults are justified in the module docstring."""

    #: Dark frame: luminance mean (0-255) at most this ...
    dark_mean_max: float = 20.0
    #: ... and luminance standard deviation at most this (a dark photo with content has more).
    dark_std_max: float = 8.0
    #: Flat frame at any brightness: luminance standard deviation at most this. Off (0) by default:
    #: luminance alone cannot tell a uniform fill from colour content of equal luminance.
    flat_std_max: float = 0.0
    #: Count the generator's safety-checker verdict (``safety_flagged``) as blank.
    use_safety_checker: bool = True
    #: Group identical bytes and identical pixels by hash.
    exact_duplicates: bool = True
    #: Group near duplicates by self k-NN over the vectors.
    near_duplicates: bool = True
    #: Cosine similarity at or above which two images are near-duplicate candidates.
    near_threshold: float = 0.8
    #: Confirm each candidate by its pixels: aligned thumbnail distance at most ``pixel_max_distance``.
    verify_pixels: bool = True
    #: Largest RMSE (0-255, 8x8 RGB, after undoing the best crop) of a confirmed near duplicate.
    pixel_max_distance: float = 3.5
    #: Largest crop per side (fraction of the frame) the verifier undoes.
    max_crop: float = 0.1
    #: Largest perceptual-hash Hamming distance (of 64 bits) that confirms a candidate; None: not used.
    phash_max_distance: int | None = None
    #: Neighbours asked for per query on the first pass (the query itself included).
    k: int = 16
    #: The most neighbours one query may be widened to when its k-th neighbour is still above the threshold.
    max_k: int = 1024
    #: Queries per FAISS search call.
    search_batch: int = 4096

    def __post_init__(self) -> None:
        if not -1.0 <= self.near_threshold <= 1.0:
            raise ValueError(f"near_threshold must be a cosine in [-1, 1], got {self.near_threshold}")
        if self.phash_max_distance is not None and not 0 <= self.phash_max_distance <= 64:
            raise ValueError(f"phash_max_distance must be 0..64 bits or None, got {self.phash_max_distance}")
        if not 0 <= self.max_crop < 0.5 or self.pixel_max_distance < 0:
            raise ValueError(
                f"need 0 <= max_crop < 0.5 and pixel_max_distance >= 0 (got {self.max_crop}, {self.pixel_max_distance})"
            )
        if self.k < 2 or self.max_k < self.k or self.search_batch < 1:
            raise ValueError(
                f"need 2 <= k <= max_k and search_batch >= 1 (got {self.k}, {self.max_k}, {self.search_batch})"
            )


# -- blank frames -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlankFlags:
    is_blank: np.ndarray  # (N,) bool
    reason: np.ndarray  # (N,) object: one of BLANK_REASONS or None
    #: How far inside the blank region the pixel statistics are: 1 for a pure black (or perfectly
    #: flat) frame, 0 on a threshold, negative outside. Independent of the safety checker.
    score: np.ndarray  # (N,) float32


def find_blank(images: pa.Table, config: QualityConfig = QualityConfig()) -> BlankFlags:
    """Blank frames from the ingest statistics (and the safety checker where one was recorded)."""
    n = images.num_rows
    mean = _float_column(images, "lum_mean")
    std = _float_column(images, "lum_std")
    with np.errstate(invalid="ignore", divide="ignore"):
        dark_score = 1.0 - np.maximum(mean / config.dark_mean_max, std / config.dark_std_max)
        flat_score = 1.0 - std / config.flat_std_max if config.flat_std_max > 0 else np.full(n, -np.inf)
    score = np.maximum(dark_score, flat_score)  # missing statistics stay NaN: never blank by pixels
    dark = dark_score >= 0
    flat = flat_score >= 0
    if config.use_safety_checker and "safety_flagged" in images.column_names:
        safety = (
            images.column("safety_flagged")
            .cast(pa.bool_())
            .fill_null(False)
            .to_numpy(zero_copy_only=False)
            .astype(bool)
        )
    else:
        safety = np.zeros(n, dtype=bool)
    # The first reason that applies: the generator's own verdict says most, then dark, then flat.
    reason = np.select([safety, dark, flat], list(BLANK_REASONS), default="")
    reason = np.where(reason == "", None, reason).astype(object)
    return BlankFlags(is_blank=safety | dark | flat, reason=reason, score=score.astype(np.float32))


# -- union-find -------------------------------------------------------------------------------------


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
    rep_of_label = dict(zip(sorted_labels[first].tolist(), order[first].tolist(), strict=True))
    uniq, inverse = np.unique(labels, return_inverse=True)
    rep_per_uniq = np.array([rep_of_label[u] for u in uniq.tolist()], dtype=np.int64)
    return rep_per_uniq[inverse]


# -- exact duplicates -------------------------------------------------------------------------------


def hash_edges(values: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining every eligible row to the first eligible row with the same (non-null) hash."""
    rows = np.flatnonzero(eligible & pd.notna(values))
    if rows.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, first, inverse = np.unique(values[rows].astype(str), return_index=True, return_inverse=True)
    leader = rows[first][inverse]
    keep = leader != rows
    return rows[keep], leader[keep]


# -- near duplicates --------------------------------------------------------------------------------

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def knn_above(
    search: Search,
    queries: np.ndarray,
    ntotal: int,
    threshold: float,
    k: int = 16,
    max_k: int = 1024,
    batch: int = 4096,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query, neighbour position, score) with score >= ``threshold``, by batched k-NN.

    ``search(q, k)`` is a FAISS-style batched search (scores and positions, ``(len(q), k)``). Queries
    whose k-th score is still >= the threshold may have more such neighbours, so they are searched
    again with four times the k until their last score drops below it or k reaches ``max_k`` (or
    the index size); only those few are re-searched, and always in batches.
    """
    cap = max(1, min(max_k, ntotal))
    todo = np.arange(len(queries))
    k_now = min(k, cap)
    out_q, out_p, out_s = [], [], []
    truncated = 0
    while todo.size:
        widen = []
        for start in range(0, todo.size, batch):
            rows = todo[start : start + batch]
            scores, pos = search(np.ascontiguousarray(queries[rows], dtype=np.float32), k_now)
            full = (scores[:, -1] >= threshold) & (pos[:, -1] >= 0)
            if k_now < cap:
                widen.append(rows[full])
                done = ~full
            else:
                truncated += int(full.sum())
                done = np.ones(len(rows), dtype=bool)
            hit = (scores >= threshold) & (pos >= 0) & done[:, None]
            qi, col = np.nonzero(hit)
            out_q.append(rows[qi])
            out_p.append(pos[qi, col])
            out_s.append(scores[qi, col])
        todo = np.concatenate(widen) if widen else np.zeros(0, dtype=np.int64)
        k_now = min(k_now * 4, cap)
    if truncated:
        log.warning(
            "%d queries still had neighbours above %.4f at k=%d; raise max_k to see them all", truncated, threshold, cap
        )
    if not out_q:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_q).astype(np.int64), np.concatenate(out_p).astype(np.int64), np.concatenate(out_s)


def phash_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between 64-bit perceptual hashes stored as signed int64."""
    x = np.asarray(a, dtype=np.int64).view(np.uint64) ^ np.asarray(b, dtype=np.int64).view(np.uint64)
    return np.bitwise_count(x).astype(np.int16)


def _index_search(index: Any, images_ids: np.ndarray, n: int) -> tuple[Search, int, np.ndarray]:
    """A search function over ``index``, its size, and FAISS position -> images row (-1: not in images)."""
    if hasattr(index, "ids") and hasattr(index, "index"):  # core.index.LoadedIndex
        rows = pd.Index(images_ids).get_indexer(np.asarray(index.ids, dtype=object))
        return index.search, int(index.index.ntotal), rows.astype(np.int64)
    if isinstance(index, faiss.Index):
        if index.ntotal != n:
            raise ValueError(
                f"a bare FAISS index must hold one vector per images row ({n}), not {index.ntotal}; "
                "pass a LoadedIndex (with its id map) or no index"
            )
        return index.search, int(index.ntotal), np.arange(n, dtype=np.int64)
    raise TypeError(f"index must be a core.index.LoadedIndex, a faiss.Index or None, not {type(index).__name__}")


@dataclass(frozen=True)
class NearEdges:
    a: np.ndarray  # rows
    b: np.ndarray
    similarity: np.ndarray
    candidates: int  # pairs above the cosine threshold (each unordered pair once)
    vetoed_by_phash: int  # of those, pairs the perceptual hash did not confirm
    vetoed_by_pixels: int  # and pairs the pixel check then did not confirm


def near_edges(
    vectors: np.ndarray,
    eligible: np.ndarray,
    phash: np.ndarray | None = None,
    thumbs: ThumbnailCache | None = None,
    index: Any = None,
    images_ids: np.ndarray | None = None,
    config: QualityConfig = QualityConfig(),
) -> NearEdges:
    """Near-duplicate edges between eligible rows: cosine >= threshold, confirmed by pixels (and pHash)."""
    n = len(vectors)
    rows = np.flatnonzero(eligible)
    if rows.size < 2:
        empty = np.zeros(0, np.int64)
        return NearEdges(empty, empty, np.zeros(0, np.float32), 0, 0, 0)
    if index is None:
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(np.ascontiguousarray(vectors[rows], dtype=np.float32))
        search, ntotal, pos_to_row = flat.search, int(flat.ntotal), rows
    else:
        ids = images_ids if images_ids is not None else np.arange(n).astype(str)
        search, ntotal, pos_to_row = _index_search(index, ids, n)
    qi, pos, score = knn_above(
        search, vectors[rows], ntotal, config.near_threshold, config.k, config.max_k, config.search_batch
    )
    a = rows[qi]
    b = pos_to_row[pos]
    ok = b >= 0
    ok[ok] = eligible[b[ok]]
    ok &= a != b  # a query finds itself
    # Each unordered pair once (found from either side: an approximate index may find only one).
    lo, hi, score = np.minimum(a, b)[ok], np.maximum(a, b)[ok], score[ok]
    _, first = np.unique(lo * n + hi, return_index=True)
    a, b, score = lo[first], hi[first], score[first]
    candidates = len(a)
    confirmed = np.ones(candidates, dtype=bool)
    if config.phash_max_distance is not None and phash is not None and candidates:
        known = pd.notna(phash[a]) & pd.notna(phash[b])
        dist = np.zeros(candidates, dtype=np.int16)
        dist[known] = phash_distance(phash[a][known].astype(np.int64), phash[b][known].astype(np.int64))
        confirmed &= dist <= config.phash_max_distance  # no hash recorded: the other checks decide
    by_phash = candidates - int(confirmed.sum())
    pixel = np.full(candidates, np.nan, dtype=np.float32)
    if config.verify_pixels and confirmed.any():
        if thumbs is None:
            raise ValueError("verify_pixels needs the images' paths (a 'path' column)")
        pixel[confirmed] = aligned_distance(
            thumbs.get(a[confirmed]), thumbs.get(b[confirmed]), max_crop=config.max_crop
        )
        unreadable = int(np.isnan(pixel[confirmed]).sum())
        if unreadable:
            log.warning("%d near-duplicate candidates left unconfirmed: an image file could not be read", unreadable)
        confirmed &= pixel <= config.pixel_max_distance
    by_pixels = candidates - by_phash - int(confirmed.sum())
    return NearEdges(a[confirmed], b[confirmed], score[confirmed].astype(np.float32), candidates, by_phash, by_pixels)


# -- pixel verification -----------------------------------------------------------------------------

THUMB = 32  # pixels a side of the thumbnails the verifier aligns
_COMPARE = 8  # pixels a side of the aligned comparison
_PROFILE = 16  # samples of the 1-D profiles fitted to find the crop


def thumbnails(paths: list[str], workers: int = 4) -> np.ndarray:
    """``(n, 32, 32, 3)`` float32 RGB thumbnails of image files (NaN where a file cannot be read).

    The full frame is squeezed to a square, so a crop box is simply a box in [0, 1]^2 on each axis.
    Decoded by the one decoder, in threads (Pillow releases the GIL while decoding and resizing).
    """

    def one(path: str) -> np.ndarray:
        try:
            img = decode(Path(path).read_bytes(), draft_size=2 * THUMB).image
        except (OSError, ImageRejected):
            return np.full((THUMB, THUMB, 3), np.nan, dtype=np.float32)
        # Pillow's bilinear filter widens with the reduction (antialiased), so images of any size
        # reach the same blur, and what is left to compare is content rather than aliasing.
        return np.asarray(img.resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.float32)

    if not paths:
        return np.zeros((0, THUMB, THUMB, 3), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return np.stack(list(pool.map(one, paths)))


class ThumbnailCache:
    """Thumbnails of the rows of one images table, decoded on first use and kept for the next."""

    def __init__(self, paths: np.ndarray) -> None:
        self.paths = paths
        self._rows = np.zeros(0, dtype=np.int64)
        self._thumbs = np.zeros((0, THUMB, THUMB, 3), dtype=np.float32)

    def get(self, rows: np.ndarray) -> np.ndarray:
        missing = np.setdiff1d(rows, self._rows)
        if missing.size:
            self._thumbs = np.concatenate([self._thumbs, thumbnails([str(p) for p in self.paths[missing]])])
            self._rows = np.concatenate([self._rows, missing])
            order = np.argsort(self._rows)
            self._rows, self._thumbs = self._rows[order], self._thumbs[order]
        return self._thumbs[np.searchsorted(self._rows, rows)]


def _area_weights(lo: np.ndarray, hi: np.ndarray, out: int, src: int = THUMB) -> np.ndarray:
    """Area-resampling matrices ``(len(lo), out, src)``: output pixel j averages [lo, hi] split in ``out``.

    Each output pixel is the exact average of the source over its footprint, so a crop of a box and
    the box taken from the original resample to the same numbers, whatever the two resolutions.
    """
    edges = lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, out + 1)[None, :]  # (H, out+1)
    a, b = edges[:, :-1, None], edges[:, 1:, None]  # (H, out, 1)
    pix = np.arange(src)[None, None, :] / src
    overlap = np.clip(np.minimum(b, pix + 1 / src) - np.maximum(a, pix), 0, None)
    return (overlap / np.maximum(overlap.sum(-1, keepdims=True), 1e-12)).astype(np.float32)


def _fit_axis(
    big: np.ndarray, small: np.ndarray, across: np.ndarray, boxes: tuple[np.ndarray, np.ndarray], axis: int
) -> np.ndarray:
    """Best crop box along one axis: the (lo, hi) whose resampled profile of ``big`` matches ``small``.

    Profiles are means across the other axis (``big`` restricted to its current box ``across``),
    compared at 32 samples, every candidate box at once for every pair at once.
    """
    lo, hi = boxes
    # big: (P, y, x, c). Profile along `axis` (1 = rows/y, 2 = columns/x) averaged over the other one.
    if axis == 2:
        prof_big = np.einsum("py,pyxc->pxc", across, big, optimize=True)
        prof_small = small.mean(axis=1)
    else:
        prof_big = np.einsum("px,pyxc->pyc", across, big, optimize=True)
        prof_small = small.mean(axis=2)
    p, src, c = prof_big.shape
    weights = _area_weights(lo, hi, _PROFILE).reshape(-1, src)  # (H*n, src)
    ident = _area_weights(np.zeros(1), np.ones(1), _PROFILE)[0]
    # Columns are (channel, pair), so one matrix product scores every candidate box of every pair.
    target = (ident @ prof_small).transpose(1, 2, 0).reshape(_PROFILE, c * p)  # (n, c*P)
    pred = (weights @ prof_big.transpose(1, 2, 0).reshape(src, c * p)).reshape(len(lo), _PROFILE, c * p)
    pred -= target[None]
    np.square(pred, out=pred)
    err = pred.reshape(len(lo), _PROFILE * c, p).sum(axis=1)  # (H, P), summed over whole rows: fast
    return np.argmin(err, axis=0)


def _inside_distance(big: np.ndarray, small: np.ndarray, max_crop: float, step: float) -> np.ndarray:
    """RMSE (0-255) between ``small`` and the best-fitting crop box of ``big``, per pair."""
    p = len(big)
    cuts = np.arange(0, max_crop + 1e-9, step)
    lo = np.repeat(cuts, len(cuts))
    hi = 1 - np.tile(cuts, len(cuts))
    box_x = np.zeros(p, dtype=np.int64)  # index into (lo, hi): 0 is the full frame
    box_y = np.zeros(p, dtype=np.int64)
    for _ in range(2):  # alternate: columns given the rows, rows given the columns
        wy = _area_weights(lo[box_y], hi[box_y], 1)[:, 0]  # (P, src): average over the current row box
        box_x = _fit_axis(big, small, wy, (lo, hi), axis=2)
        wx = _area_weights(lo[box_x], hi[box_x], 1)[:, 0]
        box_y = _fit_axis(big, small, wx, (lo, hi), axis=1)
    ry = _area_weights(lo[box_y], hi[box_y], _COMPARE)  # (P, compare, src)
    rx = _area_weights(lo[box_x], hi[box_x], _COMPARE)
    crop = np.einsum("pvy,pyxc,pux->pvuc", ry, big, rx, optimize=True)
    full = _area_weights(np.zeros(1), np.ones(1), _COMPARE)[0]
    ref = np.einsum("vy,pyxc,ux->pvuc", full, small, full, optimize=True)
    return np.sqrt(((crop - ref) ** 2).mean(axis=(1, 2, 3)))


def aligned_distance(
    a: np.ndarray, b: np.ndarray, max_crop: float = 0.1, step: float = 0.01, chunk: int = 512
) -> np.ndarray:
    """Pixel distance between thumbnail pairs after undoing a crop of up to ``max_crop`` per side.

    Either image may be the cropped one, so both directions are fitted and the smaller RMSE (on a
    0-255 scale, over an 8x8 RGB comparison) is returned. A re-encode, a resize or a slight crop
    of the same picture lands within a few levels; a different picture of the same thing (another
    hot dog, moved or tinted) does not, because its colours and geometry cannot both be undone by
    one crop. NaN where a thumbnail is missing.
    """
    out = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), chunk):
        x, y = a[start : start + chunk], b[start : start + chunk]
        out[start : start + chunk] = np.minimum(
            _inside_distance(x, y, max_crop, step), _inside_distance(y, x, max_crop, step)
        )
    return out


# -- duplicates, all kinds --------------------------------------------------------------------------


@dataclass(frozen=True)
class Duplicates:
    group: np.ndarray  # (N,) int32 group number (0 = largest group), -1 when not a duplicate
    group_size: np.ndarray  # (N,) int32, 0 when not a duplicate
    representative: np.ndarray  # (N,) int64 row of the group's representative, -1 when none
    similarity: np.ndarray  # (N,) float32 cosine to the representative (NaN where a vector is missing)
    phash_distance: np.ndarray  # (N,) int16 Hamming distance to the representative, -1 where unknown
    reason: np.ndarray  # (N,) object: one of DUP_REASONS, None for representatives and singletons
    pixel_distance: np.ndarray  # (N,) float32 aligned pixel RMSE to the representative (NaN where not measured)
    near_candidates: int
    near_vetoed_by_phash: int
    near_vetoed_by_pixels: int
    near_edges: int


def find_duplicates(
    images: pa.Table,
    vectors: np.ndarray,
    index: Any = None,
    config: QualityConfig = QualityConfig(),
    exclude: np.ndarray | None = None,
) -> Duplicates:
    """Duplicate groups over the rows of ``images`` (``vectors`` aligned to them, NaN rows for none).

    ``index`` is the FAISS index to search: a ``core.index.LoadedIndex`` (positions mapped to rows
    through its ids), a bare ``faiss.Index`` holding exactly these rows in this order, or None to
    build an exact flat one here. Rows in ``exclude`` (blank frames) join no group.
    """
    n = images.num_rows
    vectors = np.asarray(vectors, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, 1), np.float32)
    ids = _column(images, "id").astype(str) if n else np.zeros(0, dtype=object)
    if len(set(ids.tolist())) != n:
        raise ValueError("image ids must be unique")
    eligible = np.ones(n, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    has_vector = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    phash = _column(images, "phash") if "phash" in images.column_names else None
    content = _column(images, "content_hash")
    pixels = _column(images, "pixel_hash")
    thumbs = ThumbnailCache(_column(images, "path")) if "path" in images.column_names else None

    edges_a, edges_b = [], []
    if config.exact_duplicates:
        for values in (content, pixels):
            ea, eb = hash_edges(values, eligible)
            edges_a.append(ea)
            edges_b.append(eb)
    near = NearEdges(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), 0, 0, 0)
    if config.near_duplicates:
        near = near_edges(vectors, eligible & has_vector, phash, thumbs, index, ids, config)
        edges_a.append(near.a)
        edges_b.append(near.b)
    a = np.concatenate(edges_a) if edges_a else np.zeros(0, np.int64)
    b = np.concatenate(edges_b) if edges_b else np.zeros(0, np.int64)

    labels = connected_groups(n, a, b)
    size = np.bincount(labels, minlength=n)[labels] if n else np.zeros(0, np.int64)
    grouped = size > 1
    width = _float_column(images, "width")
    height = _float_column(images, "height")
    area = np.nan_to_num(width * height, nan=0).astype(np.int64)
    rep = np.full(n, -1, dtype=np.int64)
    members = np.flatnonzero(grouped)
    rep[members] = members[pick_representatives(labels[members], area[members], ids[members])]

    # Number groups by size (largest first), then by representative id: stable for the same data.
    group = np.full(n, -1, dtype=np.int32)
    rep_rows = np.unique(rep[grouped])
    if rep_rows.size:
        _, id_rank = np.unique(ids[rep_rows], return_inverse=True)
        order = np.lexsort((id_rank, -size[rep_rows]))
        number = np.empty(rep_rows.size, dtype=np.int32)
        number[order] = np.arange(rep_rows.size, dtype=np.int32)
        group[grouped] = number[np.searchsorted(rep_rows, rep[grouped])]

    r = rep[members]
    similarity = np.full(n, np.nan, dtype=np.float32)
    both = has_vector[members] & has_vector[r]
    similarity[members[both]] = np.einsum("ij,ij->i", vectors[members[both]], vectors[r[both]])
    distance = np.full(n, -1, dtype=np.int16)
    if phash is not None:
        known = pd.notna(phash[members]) & pd.notna(phash[r])
        distance[members[known]] = phash_distance(
            phash[members[known]].astype(np.int64), phash[r[known]].astype(np.int64)
        )
    reason = np.full(n, None, dtype=object)
    same_bytes = _equal(content[members], content[r])
    same_pixels = _equal(pixels[members], pixels[r])
    is_rep = members == r
    reason[members] = np.where(
        is_rep, None, np.where(same_bytes, DUP_REASONS[0], np.where(same_pixels, DUP_REASONS[1], DUP_REASONS[2]))
    )
    # How far each near duplicate's pixels are from its representative's (0 for identical pixels).
    pixel_distance = np.full(n, np.nan, dtype=np.float32)
    pixel_distance[members[(same_bytes | same_pixels) & ~is_rep]] = 0.0
    near_members = members[reason[members] == DUP_REASONS[2]]
    if config.verify_pixels and thumbs is not None and near_members.size:
        pixel_distance[near_members] = aligned_distance(
            thumbs.get(near_members), thumbs.get(rep[near_members]), max_crop=config.max_crop
        )
    return Duplicates(
        group=group,
        group_size=np.where(grouped, size, 0).astype(np.int32),
        representative=rep,
        similarity=similarity,
        phash_distance=distance,
        reason=reason,
        pixel_distance=pixel_distance,
        near_candidates=near.candidates,
        near_vetoed_by_phash=near.vetoed_by_phash,
        near_vetoed_by_pixels=near.vetoed_by_pixels,
        near_edges=len(near.a),
    )


# -- the quality table ------------------------------------------------------------------------------


def assess(
    images: pa.Table, vectors: np.ndarray, index: Any = None, config: QualityConfig = QualityConfig()
) -> pa.Table:
    """The quality table: one row per image of ``images`` (all partitions), in its order.

    ``vectors`` is ``(N, D)`` aligned to ``images`` (see :func:`vectors_for`; NaN rows for images
    without an embedding, which then join only hash groups). See the module docstring for the rules.
    """
    n = images.num_rows
    blank = find_blank(images, config)
    dups = find_duplicates(images, vectors, index=index, config=config, exclude=blank.is_blank)
    ids = _column(images, "id")
    in_group = dups.group >= 0
    rows = np.arange(n)
    keep = ~blank.is_blank & (~in_group | (dups.representative == rows))
    partition = images.column("partition") if "partition" in images.column_names else pa.nulls(n, pa.string())
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "partition": partition,
            "is_blank": pa.array(blank.is_blank),
            "blank_reason": pa.array(blank.reason, pa.string()),
            "blank_score": pa.array(blank.score, pa.float32(), mask=np.isnan(blank.score)),
            "duplicate_group": pa.array(dups.group, pa.int32(), mask=~in_group),
            "group_size": pa.array(dups.group_size, pa.int32(), mask=~in_group),
            "duplicate_of": pa.array(
                np.where(in_group, ids[np.maximum(dups.representative, 0)] if n else ids, None), pa.string()
            ),
            "similarity": pa.array(dups.similarity, pa.float32(), mask=np.isnan(dups.similarity)),
            "pixel_distance": pa.array(dups.pixel_distance, pa.float32(), mask=np.isnan(dups.pixel_distance)),
            "phash_distance": pa.array(dups.phash_distance, pa.int16(), mask=dups.phash_distance < 0),
            "dup_reason": pa.array(dups.reason, pa.string()),
            "keep": pa.array(keep),
        },
        schema=QUALITY_SCHEMA,
    )
    return table.replace_schema_metadata(
        {
            "near_candidates": str(dups.near_candidates),
            "near_vetoed_by_phash": str(dups.near_vetoed_by_phash),
            "near_vetoed_by_pixels": str(dups.near_vetoed_by_pixels),
            "near_edges": str(dups.near_edges),
        }
    )


def summarize(quality: pa.Table, top: int = 5) -> dict[str, Any]:
    """Counts per reason and the largest groups: plain values for a run's metadata."""
    df = quality.select(
        ["id", "is_blank", "blank_reason", "duplicate_group", "group_size", "duplicate_of", "dup_reason", "keep"]
    ).to_pandas()
    groups = df.dropna(subset=["duplicate_group"])
    largest = (
        groups.groupby("duplicate_group")
        .agg(size=("id", "size"), representative=("duplicate_of", "first"))
        .sort_index()
        .head(top)
    )
    meta = quality.schema.metadata or {}
    return {
        "images": int(len(df)),
        "kept": int(df["keep"].sum()),
        "blank": int(df["is_blank"].sum()),
        "blank_by_reason": {str(k): int(v) for k, v in df["blank_reason"].value_counts().sort_index().items()},
        "duplicates": int(df["dup_reason"].notna().sum()),
        "duplicates_by_reason": {str(k): int(v) for k, v in df["dup_reason"].value_counts().sort_index().items()},
        "groups": int(groups["duplicate_group"].nunique()),
        "largest_groups": [
            {"group": int(g), "size": int(r["size"]), "representative": str(r["representative"])}
            for g, r in largest.iterrows()
        ],
        "near_candidates": int(meta.get(b"near_candidates", 0)),
        "near_vetoed_by_phash": int(meta.get(b"near_vetoed_by_phash", 0)),
        "near_vetoed_by_pixels": int(meta.get(b"near_vetoed_by_pixels", 0)),
    }


def sample_paths(
    images: pa.Table, quality: pa.Table, groups: int = 4, per_group: int = 6, blanks: int = 8
) -> dict[str, list[str]]:
    """Paths for contact sheets: the largest duplicate groups (representative first) and some blanks.

    Blanks are the first by id, a deterministic sample that is as good as random (ids are hashes).
    """
    paths = dict(zip(_column(images, "id").tolist(), _column(images, "path").tolist(), strict=True))
    df = quality.select(["id", "is_blank", "duplicate_group", "duplicate_of"]).to_pandas()
    grouped = df.dropna(subset=["duplicate_group"])
    grouped = grouped[grouped["duplicate_group"] < groups].assign(is_rep=lambda d: d["id"] == d["duplicate_of"])
    grouped = grouped.sort_values(["duplicate_group", "is_rep", "id"], ascending=[True, False, True])
    dup_ids = grouped.groupby("duplicate_group").head(per_group)["id"].tolist()
    blank_ids = df.loc[df["is_blank"], "id"].sort_values().head(blanks).tolist()
    return {"duplicates": [paths[i] for i in dup_ids], "blanks": [paths[i] for i in blank_ids]}


def vectors_for(images: pa.Table, embeddings: pa.Table) -> np.ndarray:
    """The ``embeddings`` vectors in the row order of ``images``; NaN rows where an image has none."""
    matrix = column_matrix(embeddings.column("vector"))
    rows = pd.Index(_column(embeddings, "id")).get_indexer(_column(images, "id"))
    out = np.full((images.num_rows, matrix.shape[1]), np.nan, dtype=np.float32)
    found = rows >= 0
    out[found] = matrix[rows[found]]
    return out


# -- helpers ----------------------------------------------------------------------------------------


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=object)


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return table.column(name).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)


def _equal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise equality of two object arrays where null never equals anything."""
    return pd.notna(x) & pd.notna(y) & (x == y)
