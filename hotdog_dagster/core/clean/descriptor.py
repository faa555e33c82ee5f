"""The candidate descriptor: 57 bytes per image, computed from its thumbnail at ingest.

Near-duplicate candidates are pairs that are close in either of two parts (docs/cleaning.md has
the measurements behind both):

``grid`` (48 values)
    The thumbnail averaged to 4x4 RGB cells. Aligned, so it follows any picture through re-encoding
    and resizing, but a crop of a few percent moves every edge across cells and so moves it a lot.
``signature`` (9 values)
    The background colour (a plane fitted to the thumbnail's border, robust to an object that
    touches it) and the mean colour of the content around its centre of mass, at half and one
    standard deviation of its extent. A crop that keeps the object changes none of these, and the
    exact shades of background and object are what tell two drawings of the same thing apart.

Values are rounded to whole levels, so FAISS computes exact integer distances: the candidate relation
is symmetric and the same in every search, whatever the order in which images arrived.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from hotdog_dagster.core.clean.pixels import THUMB, fixed_bytes

GRID = 4  # cells a side of the aligned part
GRID_DIMS = GRID * GRID * 3
SIGNATURE_DIMS = 9
DESCRIPTOR_BYTES = GRID_DIMS + SIGNATURE_DIMS

_RING = 2  # pixels of the border the background is fitted to
_BACKGROUND_TOLERANCE = 24.0  # border pixels this far (colour distance) from its median colour are object
_CONTENT_THRESHOLD = 20.0  # levels of colour distance from the background below which a pixel is background
_MIN_CONTENT = 10.0  # total content weight below which a picture has no object (the whole frame is used)
_MIN_SPREAD = 0.03  # smallest spread of the content (fraction of the frame) the windows use
_WINDOWS = (0.5, 1.0)  # half-widths of the colour windows, in standard deviations of the content

_yy, _xx = np.mgrid[0:THUMB, 0:THUMB]
_RING_MASK = (np.minimum(_yy, THUMB - 1 - _yy) < _RING) | (np.minimum(_xx, THUMB - 1 - _xx) < _RING)
_CENTRES = ((np.arange(THUMB) + 0.5) / THUMB).astype(np.float32)
# A plane a + b*y + c*x per channel, coordinates centred on the frame: ``a`` is the background at the centre.
_PLANE = np.stack([np.ones(THUMB * THUMB), _CENTRES[_yy.ravel()] - 0.5, _CENTRES[_xx.ravel()] - 0.5], 1)
_PLANE_RING = _PLANE[_RING_MASK.ravel()]
_PLANE_RING_OUTER = (_PLANE_RING[:, :, None] * _PLANE_RING[:, None, :]).reshape(-1, 9)
_PLANE_F32 = _PLANE.astype(np.float32)


def descriptors(thumbs: np.ndarray) -> np.ndarray:
    """``(n, 57)`` uint8 descriptors of ``(n, 32, 32, 3)`` uint8 thumbnails: grid, then signature."""
    thumbs = np.asarray(thumbs, dtype=np.uint8).reshape(-1, THUMB, THUMB, 3)
    if len(thumbs) == 0:
        return np.zeros((0, DESCRIPTOR_BYTES), dtype=np.uint8)
    out = np.concatenate([grid(thumbs), signature(thumbs)], axis=1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def descriptor_column(desc: np.ndarray) -> pa.FixedSizeBinaryArray:
    """``(n, 57)`` uint8 descriptors as a fixed-size binary column."""
    desc = np.ascontiguousarray(desc, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(DESCRIPTOR_BYTES), len(desc), [None, pa.py_buffer(desc.tobytes())]
    )


def descriptors_from_column(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Stored descriptors as ``(n, 57)`` uint8, and which were usable (null or wrong length: not)."""
    return fixed_bytes(column, DESCRIPTOR_BYTES)


def grid(thumbs: np.ndarray) -> np.ndarray:
    """The aligned part: mean RGB of each of 4x4 cells, ``(n, 48)`` float32."""
    cell = THUMB // GRID
    t = thumbs.reshape(-1, GRID, cell, GRID, cell, 3).astype(np.float32)
    return t.mean(axis=(2, 4)).reshape(len(thumbs), GRID_DIMS)


def signature(thumbs: np.ndarray) -> np.ndarray:
    """The crop-tolerant part: background colour, then the content's colour in two windows, ``(n, 9)``."""
    t = thumbs.reshape(-1, THUMB, THUMB, 3).astype(np.float32)
    coef = _background_plane(t)  # (n, 3 terms, 3 channels)
    background = (_PLANE_F32 @ coef).reshape(t.shape)  # (n, 1024, 3) -> (n, y, x, 3)
    distance = np.sqrt(((t - background) ** 2).sum(-1))
    weight = np.maximum(distance - _CONTENT_THRESHOLD, 0)  # (n, y, x): how much a pixel is object
    wx, wy = weight.sum(1), weight.sum(2)
    total = weight.sum((1, 2))
    has = total > _MIN_CONTENT
    total = np.where(has, total, 1.0)
    mx, my = wx @ _CENTRES / total, wy @ _CENTRES / total
    sx = np.sqrt(np.maximum(wx @ _CENTRES**2 / total - mx**2, 0))
    sy = np.sqrt(np.maximum(wy @ _CENTRES**2 / total - my**2, 0))
    # No object (a flat picture, or one with no plain border): the middle of the frame stands in.
    mx, my = np.where(has, mx, 0.5), np.where(has, my, 0.5)
    sx, sy = np.where(has, np.maximum(sx, _MIN_SPREAD), 0.25), np.where(has, np.maximum(sy, _MIN_SPREAD), 0.25)
    parts = [coef[:, 0, :]]
    for k in _WINDOWS:
        wcol = _window(mx - k * sx, mx + k * sx)
        wrow = _window(my - k * sy, my + k * sy)
        rows = (wrow[:, None, :] @ t.reshape(len(t), THUMB, THUMB * 3)).reshape(len(t), THUMB, 3)
        parts.append((rows * wcol[:, :, None]).sum(1))
    return np.concatenate(parts, axis=1)


def _background_plane(t: np.ndarray) -> np.ndarray:
    """Least-squares plane per channel through the border pixels near the border's median colour.

    The median decides what the background is, so an object touching the border is left out of the
    fit; a gradient background (a plane) is followed, so a crop that moves the frame over it does not
    move the background colour at the centre by more than the gradient over the cut.
    """
    ring = t[:, _RING_MASK]  # (n, R, 3)
    median = np.median(ring, axis=1)
    good = (np.sqrt(((ring - median[:, None, :]) ** 2).sum(-1)) <= _BACKGROUND_TOLERANCE).astype(np.float64)
    ata = (good @ _PLANE_RING_OUTER).reshape(len(t), 3, 3)
    atb = _PLANE_RING.T @ (good[:, :, None] * ring)  # (n, 3 terms, 3 channels)
    coef = np.zeros((len(t), 3, 3))
    coef[:, 0, :] = median
    fit = good.sum(1) >= len(_PLANE_RING) // 4  # enough background on the border to fit a plane
    if fit.any():
        coef[fit] = np.linalg.solve(ata[fit], atb[fit])
    return coef.astype(np.float32)


def _window(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Area weights ``(n, 32)`` of the interval [lo, hi] (clipped to the frame) over the pixels."""
    lo, hi = np.clip(lo, 0, 1)[:, None], np.clip(hi, 0, 1)[:, None]
    pix = np.arange(THUMB, dtype=np.float32)[None, :] / THUMB
    overlap = np.clip(np.minimum(hi, pix + 1 / THUMB) - np.maximum(lo, pix), 0, None)
    return (overlap / np.maximum(overlap.sum(1, keepdims=True), 1e-12)).astype(np.float32)
