"""Blank frames: flagged per batch from the statistics ingest recorded, with a code and a sentence.

A frame is blank when the generator's safety checker flagged it (it returns a black frame), or
when it is dark: luminance mean and spread both low. Both statistics are needed because a night
shot (bright things on black) has a low mean but a large spread. A flat rule (low spread at any
brightness) exists but is off by default: luminance alone cannot tell a uniform fill from colour
content of equal luminance. docs/cleaning.md has the measurements behind the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from hotdog_dagster.core.settings import CleanSettings

#: Stable codes, in the order they are tried: the generator's own verdict says most.
BLANK_CODES = ("safety_checker", "dark", "flat")

QUALITY_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("partition", pa.string()),
        ("is_blank", pa.bool_()),
        ("blank_reason", pa.string()),
        ("blank_code", pa.string()),
        ("blank_score", pa.float32()),
    ]
)


@dataclass(frozen=True)
class BlankFlags:
    is_blank: np.ndarray  # (N,) bool
    code: np.ndarray  # (N,) object: one of BLANK_CODES or None
    reason: np.ndarray  # (N,) object: a sentence with the numbers, or None
    #: How far inside the blank region the pixel statistics are: 1 for a pure black (or perfectly
    #: flat) frame, 0 on a threshold, negative outside, NaN without statistics.
    score: np.ndarray  # (N,) float32


def blank_flags(images: pa.Table, settings: CleanSettings) -> BlankFlags:
    """Flags for the rows of ``images`` (needs ``lum_mean``, ``lum_std``; ``safety_flagged`` if any)."""
    n = images.num_rows
    mean = float_column(images, "lum_mean")
    std = float_column(images, "lum_std")
    with np.errstate(invalid="ignore", divide="ignore"):
        dark_score = 1.0 - np.maximum(mean / settings.dark_mean_max, std / settings.dark_std_max)
        flat_score = 1.0 - std / settings.flat_std_max if settings.flat_std_max > 0 else np.full(n, -np.inf)
    score = np.maximum(dark_score, flat_score)  # missing statistics stay NaN: never blank by pixels
    dark = dark_score >= 0
    flat = flat_score >= 0
    if settings.use_safety_checker and "safety_flagged" in images.column_names:
        safety = images.column("safety_flagged").cast(pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False)
        safety = np.asarray(safety, dtype=bool)
    else:
        safety = np.zeros(n, dtype=bool)
    code = np.select([safety, dark, flat], list(BLANK_CODES), default="")
    code = np.where(code == "", None, code).astype(object)
    reason = np.full(n, None, dtype=object)
    for i in np.flatnonzero(code != None):  # noqa: E711 - elementwise comparison with None
        if code[i] == "safety_checker":
            reason[i] = "blanked by the generator's safety checker"
        elif code[i] == "dark":
            reason[i] = (
                f"dark frame: luminance mean {mean[i]:.1f} <= {settings.dark_mean_max:g} "
                f"and spread {std[i]:.1f} <= {settings.dark_std_max:g}"
            )
        else:
            reason[i] = f"flat frame: luminance spread {std[i]:.2f} <= {settings.flat_std_max:g}"
    return BlankFlags(is_blank=safety | dark | flat, code=code, reason=reason, score=score.astype(np.float32))


def blank_table(images: pa.Table, settings: CleanSettings) -> pa.Table:
    """The ``image_quality`` partition of a batch: one row per image, in the order of ``images``."""
    flags = blank_flags(images, settings)
    n = images.num_rows
    partition = images.column("partition") if "partition" in images.column_names else pa.nulls(n, pa.string())
    return pa.table(
        {
            "id": images.column("id"),
            "partition": partition,
            "is_blank": pa.array(flags.is_blank, pa.bool_()),
            "blank_reason": pa.array(flags.reason, pa.string()),
            "blank_code": pa.array(flags.code, pa.string()),
            "blank_score": pa.array(flags.score, pa.float32(), mask=np.isnan(flags.score)),
        },
        schema=QUALITY_SCHEMA,
    )


def float_column(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls (all NaN when the column is absent)."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return table.column(name).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
