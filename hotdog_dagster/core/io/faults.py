"""Fault points: named places on the real write path where the fault suite can kill the process.

Every atomic write, directory swap, catalog refresh and dbt build passes through
:func:`fault_point`. Normally it does nothing (one dictionary lookup). Two environment variables,
read once when this module is imported, turn it on:

- ``HOTDOG_FAULT_TRACE=FILE``: append one line per point reached, ``<n>\\t<stage>\\t<label>``, so a
  clean run lists every point where a crash could happen, per stage.
- ``HOTDOG_FAULT_KILL_AT=N``: at the ``N``-th point reached (1-based, counted in this process),
  send this process SIGKILL, exactly as the OOM killer or ``kill -9`` would: no ``finally`` block,
  no ``atexit`` handler, no flush. ``HOTDOG_FAULT_KILL_AT=<stage>:K`` counts only the points of
  that stage (``embed:3``: the third embed point of this run). ``HOTDOG_FAULT_KILL_GROUP=1`` kills
  the whole process group (the dbt child too), like a container or machine going away.

The tests in ``tests/reliability/`` and ``bench/faults.py`` use them to crash each stage at a chosen
point and check that the rerun completes and that every table equals a clean run's.
"""

from __future__ import annotations

import os
import signal
import threading


def _kill_spec(text: str) -> tuple[str | None, int]:
    stage, _, n = text.rpartition(":")
    return (stage or None), int(n or 0)


_TRACE = os.environ.get("HOTDOG_FAULT_TRACE") or None
_KILL_STAGE, _KILL_AT = _kill_spec(os.environ.get("HOTDOG_FAULT_KILL_AT", ""))
_KILL_GROUP = os.environ.get("HOTDOG_FAULT_KILL_GROUP", "") in ("1", "true", "yes")
_ACTIVE = bool(_TRACE or _KILL_AT)
_count = 0
_stage_counts: dict[str, int] = {}
_mutex = threading.Lock()

#: Stages as the fault suite names them, from the table (or file) a write goes to.
TABLE_STAGES = {
    "images": "ingest",
    "rejected": "ingest",
    "thumbnails": "ingest",
    "embeddings": "embed",
    "embedding_failures": "embed",
    "image_quality": "clean",
    "duplicate_edges": "clean",
    "duplicate_groups": "clean",
    "label_scores": "labels",
    "label_set": "labels",
    "ordered_walk": "walk",
}


def stage_of(path: os.PathLike[str] | str) -> str:
    """The stage a file under ``HOTDOG_HOME`` belongs to, from its place in the layout."""
    parts = os.fspath(path).replace("\\", "/").split("/")
    if "tables" in parts:
        rest = parts[parts.index("tables") + 1 :]
        if rest:
            table = rest[0].removesuffix(".parquet")
            return TABLE_STAGES.get(table, table)
    for marker, stage in (("index", "index"), ("walks", "walk"), ("batches", "plan"), ("images", "ingest")):
        if marker in parts:
            return stage
    if "media" in parts:
        return "walk" if "walks" in parts else "clean"
    return "other"


def fault_point(stage: str, label: str) -> None:
    """A place where a crash may happen; kills the process here when the suite asked for it."""
    if not _ACTIVE:
        return
    global _count
    with _mutex:
        _count += 1
        n = _count
        _stage_counts[stage] = k = _stage_counts.get(stage, 0) + 1
        if _TRACE:
            with open(_TRACE, "a", encoding="utf-8") as fh:
                fh.write(f"{n}\t{stage}\t{' '.join(label.split())}\n")
    if (k if _KILL_STAGE else n) == _KILL_AT and _KILL_STAGE in (None, stage):
        if _KILL_GROUP:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
