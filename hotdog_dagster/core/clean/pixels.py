"""Thumbnails, and the aligned pixel distance that confirms a near duplicate.

Every image gets a 32x32 RGB thumbnail at ingest: the whole frame squeezed to a square, so a crop
is simply a box in [0, 1] on each axis. Two thumbnails are compared after undoing the crop (up to
``max_crop`` per side, on either image) that best maps one onto the other: a re-encode, a resize or
a slight crop of one picture lands within a few levels, while a different picture of the same
thing does not, because its colours and its geometry cannot both be undone by one crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from hotdog_dagster.core.io.decode import ImageRejected, decode

THUMB = 32  # pixels a side of a thumbnail
THUMB_BYTES = THUMB * THUMB * 3
_COMPARE = 8  # pixels a side of the aligned comparison
_PROFILE = 16  # samples of the 1-D profiles fitted to find the crop


def thumbnail(img: Image.Image) -> np.ndarray:
    """``(32, 32, 3)`` uint8 thumbnail of an RGB picture.

    Pillow's bilinear filter widens with the reduction (antialiased), so pictures of any size reach
    the same blur and what is left to compare is content rather than aliasing; a large picture is
    first box-reduced (``reducing_gap``), which costs little and changes nothing visible at 32 pixels.
    """
    small = img.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(small, dtype=np.uint8)


def thumbnail_of_file(path: str | Path) -> np.ndarray | None:
    """The thumbnail of an image file through the one decoder; None when it cannot be read."""
    try:
        return thumbnail(decode(Path(path).read_bytes(), draft_size=2 * THUMB).image)
    except (OSError, ImageRejected):
        return None


def thumbs_from_column(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Stored thumbnails (binary, 32*32*3 bytes each) as ``(n, 32, 32, 3)`` uint8, and which were usable.

    A null or a value of the wrong length is unusable (left black here, flagged False), never fatal.
    """
    values, ok = fixed_bytes(column, THUMB_BYTES)
    return values.reshape(-1, THUMB, THUMB, 3), ok


def fixed_bytes(column: pa.Array | pa.ChunkedArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A binary column as ``(n, width)`` uint8 rows, and which rows were present with exactly ``width`` bytes.

    Fixed-size binary of that width is read straight from its buffer; anything else row by row.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if pa.types.is_fixed_size_binary(arr.type) and arr.type.byte_width == width:
        data = np.frombuffer(arr.buffers()[1], dtype=np.uint8, count=(arr.offset + n) * width)
        rows = data[arr.offset * width :].reshape(n, width).copy()
        ok = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        rows[~ok] = 0
        return rows, ok
    rows = np.zeros((n, width), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    for i, value in enumerate(arr.to_pylist()):
        if isinstance(value, bytes) and len(value) == width:
            rows[i] = np.frombuffer(value, dtype=np.uint8)
            ok[i] = True
    return rows, ok


def thumbs_to_column(thumbs: np.ndarray) -> pa.FixedSizeBinaryArray:
    """``(n, 32, 32, 3)`` uint8 thumbnails as a fixed-size binary column, without a per-row copy."""
    thumbs = np.ascontiguousarray(thumbs, dtype=np.uint8).reshape(-1, THUMB_BYTES)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(THUMB_BYTES), len(thumbs), [None, pa.py_buffer(thumbs.tobytes())]
    )


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


def _fit_axis(big: np.ndarray, target: np.ndarray, across: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Best crop box along one axis: the (lo, hi) whose resampled profile of ``big`` matches the target.

    Profiles are means across the other axis (``big`` restricted to its current box ``across``),
    compared at 16 samples, every candidate box of every pair in one matrix product. ``target`` is
    the other image's profile at 16 samples, ``(16, channels * pairs)``; ``weights`` resample a
    profile over every candidate box, ``(boxes * 16, 32)``.
    """
    # big: (P, y, x, c). Profile along `axis` (1 = rows/y, 2 = columns/x) averaged over the other one.
    if axis == 2:
        prof_big = np.einsum("py,pyxc->pxc", across, big, optimize=True)
    else:
        prof_big = np.einsum("px,pyxc->pyc", across, big, optimize=True)
    p, src, c = prof_big.shape
    boxes = len(weights) // _PROFILE
    # Columns are (channel, pair), so one matrix product scores every candidate box of every pair.
    pred = (weights @ prof_big.transpose(1, 2, 0).reshape(src, c * p)).reshape(boxes, _PROFILE, c * p)
    pred -= target[None]
    np.square(pred, out=pred)
    err = pred.reshape(boxes, _PROFILE * c, p).sum(axis=1)  # (H, P), summed over whole rows: fast
    return np.argmin(err, axis=0)


def _inside_distance(big: np.ndarray, small: np.ndarray, max_crop: float, step: float) -> np.ndarray:
    """RMSE (0-255) between ``small`` and the best-fitting crop box of ``big``, per pair."""
    p = len(big)
    cuts = np.arange(0, max_crop + 1e-9, step)
    lo = np.repeat(cuts, len(cuts))
    hi = 1 - np.tile(cuts, len(cuts))
    weights = _area_weights(lo, hi, _PROFILE).reshape(-1, THUMB)  # (H*16, src), the same for every fit
    ident = _area_weights(np.zeros(1), np.ones(1), _PROFILE)[0]
    c = small.shape[3]
    # The small image's profiles do not change between fits: (16, c*P), columns (channel, pair).
    target_x = (ident @ small.mean(axis=1)).transpose(1, 2, 0).reshape(_PROFILE, c * p)
    target_y = (ident @ small.mean(axis=2)).transpose(1, 2, 0).reshape(_PROFILE, c * p)
    box_x = np.zeros(p, dtype=np.int64)  # index into (lo, hi): 0 is the full frame
    box_y = np.zeros(p, dtype=np.int64)
    for _ in range(2):  # alternate: columns given the rows, rows given the columns
        wy = _area_weights(lo[box_y], hi[box_y], 1)[:, 0]  # (P, src): average over the current row box
        box_x = _fit_axis(big, target_x, wy, weights, axis=2)
        wx = _area_weights(lo[box_x], hi[box_x], 1)[:, 0]
        box_y = _fit_axis(big, target_y, wx, weights, axis=1)
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

    Either image may be the cropped one, so both directions are fitted and the smaller RMSE (0-255,
    over an 8x8 RGB comparison) is returned: the same number whichever image is passed first.
    """
    out = np.empty(len(a), dtype=np.float32)
    for start in range(0, len(a), chunk):
        x = np.asarray(a[start : start + chunk], dtype=np.float32)
        y = np.asarray(b[start : start + chunk], dtype=np.float32)
        out[start : start + chunk] = np.minimum(
            _inside_distance(x, y, max_crop, step), _inside_distance(y, x, max_crop, step)
        )
    return out
