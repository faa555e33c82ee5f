"""Vectors at the seams: (N, D) float32 matrices to and from Arrow columns, in bulk."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vector_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """A (N, D) float32 matrix as an Arrow fixed-size-list column, without copying row by row."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def column_matrix(column: pa.ChunkedArray | pa.Array, dim: int | None = None) -> np.ndarray:
    """The inverse of :func:`vector_column` (nulls are not allowed here)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    width = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, width)
