"""Consistency checks between the tables and the index: plain functions the asset checks call.

The index is only useful while its id map agrees with the tables it was built from; cleaning and
search read positions through it, so a drift would flag or return the wrong images. These checks
say exactly what disagrees, with a few example ids, rather than only that something does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from hotdog_dagster.core.io.vectors import column_matrix


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    metadata: dict[str, object] = field(default_factory=dict)


def _ids(table: pa.Table | None) -> np.ndarray:
    if table is None:
        return np.zeros(0, dtype=object)
    return np.asarray(table.column("id").to_numpy(zero_copy_only=False), dtype=object)


def unit_norm(embeddings: pa.Table | None, tolerance: float = 1e-3) -> CheckOutcome:
    """Every vector finite with norm 1 (inner product is cosine only for unit vectors)."""
    if embeddings is None or embeddings.num_rows == 0:
        return CheckOutcome(False, {"problem": "no embeddings"})
    m = column_matrix(embeddings.column("vector"))
    finite = np.isfinite(m).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], m, 0), axis=1)
    bad = ~finite | (np.abs(norms - 1) > tolerance)
    ids = _ids(embeddings)
    return CheckOutcome(
        not bad.any(),
        {
            "vectors": int(len(m)),
            "not_finite": int((~finite).sum()),
            "not_unit_norm": int((bad & finite).sum()),
            "examples": [str(i) for i in ids[bad][:5]],
        },
    )


def same_ids(images: pa.Table | None, embeddings: pa.Table | None, index_ids: np.ndarray) -> CheckOutcome:
    """Images, embeddings and the index hold one and the same set of ids, each once."""
    a, b, c = _ids(images), _ids(embeddings), np.asarray(index_ids, dtype=object)
    sa, sb, sc = set(a), set(b), set(c)
    meta: dict[str, object] = {
        "images": len(a),
        "embeddings": len(b),
        "indexed": len(c),
        "duplicate_ids": int((len(a) - len(sa)) + (len(b) - len(sb)) + (len(c) - len(sc))),
        "images_not_embedded": sorted(sa - sb)[:5],
        "embedded_not_indexed": sorted(sb - sc)[:5],
        "indexed_not_in_images": sorted(sc - sa)[:5],
    }
    return CheckOutcome(sa == sb == sc and meta["duplicate_ids"] == 0, meta)


def covers(images: pa.Table | None, per_image: pa.Table | None) -> CheckOutcome:
    """A per-image table has exactly one row for each image."""
    a, b = _ids(images), _ids(per_image)
    missing, extra = set(a) - set(b), set(b) - set(a)
    dup = len(b) - len(set(b))
    return CheckOutcome(
        not missing and not extra and dup == 0,
        {
            "images": len(a),
            "rows": len(b),
            "missing": sorted(missing)[:5],
            "extra": sorted(extra)[:5],
            "duplicate_rows": dup,
        },
    )
