"""A named walk end to end, for the asset layer: select, order, improve, write; then render.

``build_walk`` writes the ``ordered_walk`` partition named after the walk (one row per frame) and
returns its figures; ``render_walk`` reads that partition back and draws it. Both take a
:class:`~hotdog_dagster.core.settings.WalkSettings` (see :mod:`.definition` to save one by name).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.search.engine import Searcher, recorded_model
from hotdog_dagster.core.settings import WalkSettings
from hotdog_dagster.core.walk.definition import media_dir
from hotdog_dagster.core.walk.improve import PathStats, improve, step_distances
from hotdog_dagster.core.walk.render import Rendered, render
from hotdog_dagster.core.walk.select import WalkError, candidate_set, select_walk
from hotdog_dagster.core.walk.tour import TourStats, greedy_tour

TABLE = "ordered_walk"
SCHEMA = pa.schema(
    [
        ("walk", pa.string()),
        ("position", pa.int32()),  # 0 = the start frame
        ("id", pa.string()),
        ("distance", pa.float32()),  # chord distance |a - b| from the previous frame; null for the first
        ("similarity", pa.float32()),  # inner product with the previous frame; null for the first
        ("greedy_position", pa.int32()),  # where the frame was in the greedy tour, before improvement
    ]
)


@dataclass(frozen=True)
class WalkResult:
    """What a walk build did, as plain values; :meth:`metadata` flattens it for a run's metadata."""

    settings: WalkSettings
    table: pa.Table
    candidates: int
    start_id: str | None = None
    start_score: float | None = None
    greedy: PathStats | None = None
    improved: PathStats | None = None
    tour: TourStats | None = None
    moves: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    message: str = ""
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.table.num_rows == 0

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "walk": self.settings.name,
            "frames": self.table.num_rows,
            "candidates": self.candidates,
            "start_id": self.start_id,
            "start_score": None if self.start_score is None else round(self.start_score, 4),
        }
        if self.message:
            out["message"] = self.message
        for prefix, stats in (("greedy", self.greedy), ("improved", self.improved)):
            if stats is not None:
                out |= {
                    f"{prefix}_length": round(stats.length, 4),
                    f"{prefix}_mean_step": round(stats.mean_step, 4),
                    f"{prefix}_p95_step": round(stats.p95_step, 4),
                    f"{prefix}_longest_jump": round(stats.longest_jump, 4),
                }
        if self.tour is not None:
            out |= {"engine": self.tour.engine, "fallbacks": self.tour.fallbacks}
        out |= {f"{k}_seconds": round(v, 3) for k, v in self.seconds.items()}
        out |= {f"{k}_moves": v for k, v in self.moves.items()}
        out |= {f"left_out_{k}": v for k, v in self.left_out.items() if v}
        return out


def walk_table(
    name: str, ids: np.ndarray, vectors: np.ndarray, order: np.ndarray, greedy_position: np.ndarray
) -> pa.Table:
    """The ``ordered_walk`` rows of one walk: frames ``order`` (rows of ``ids``/``vectors``) in order."""
    steps = step_distances(vectors, order)
    similarity = 1.0 - steps**2 / 2.0
    first = np.zeros(len(order), dtype=bool)
    first[:1] = True
    table = pa.table(
        {
            "walk": pa.array([name] * len(order), pa.string()),
            "position": pa.array(np.arange(len(order), dtype=np.int32)),
            "id": pa.array([str(i) for i in ids[order]], pa.string()),
            "distance": pa.array(steps.astype(np.float32), mask=first),
            "similarity": pa.array(similarity.astype(np.float32), mask=first),
            "greedy_position": pa.array(np.asarray(greedy_position, dtype=np.int32)),
        },
        schema=SCHEMA,
    )
    return table


def build_walk(
    store: Store,
    settings: WalkSettings,
    encoder: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> WalkResult:
    """Select the walk's images, order them (exact greedy tour), improve, write its partition.

    ``encoder`` is the model that embedded the images (needed for text and image starts; loaded
    from the recorded model name when omitted). A filter keeping fewer than two images writes an
    empty partition and says why in ``message``; a bad filter raises
    :class:`~hotdog_dagster.core.walk.select.WalkError`, an unmatched start
    :class:`~hotdog_dagster.core.walk.select.StartNotFound`.
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if settings.start_kind != "id" and encoder is None:
        encoder = _RecordedEncoder(store)
    with Searcher(store, encoder) as searcher:
        chosen = select_walk(
            searcher,
            settings.start,
            settings.start_kind,
            settings.filter,
            settings.space,
            settings.include_flagged,
            settings.min_start_score,
        )
    seconds["select"] = time.perf_counter() - t0
    result = WalkResult(
        settings=settings,
        table=SCHEMA.empty_table(),
        candidates=len(chosen.ids),
        message=chosen.message,
        left_out=chosen.left_out,
        seconds=seconds,
    )
    if chosen.empty:
        _write(store, settings, result.table)
        return result
    t0 = time.perf_counter()
    tour = greedy_tour(chosen.vectors, chosen.start, max_frames=settings.max_length, progress=progress)
    seconds["tour"] = time.perf_counter() - t0
    greedy = PathStats.of(step_distances(chosen.vectors, tour.order))
    order, greedy_position, improved, moves = tour.order, np.arange(len(tour.order)), None, {}
    if settings.improve:
        better = improve(chosen.vectors, tour.order, tour.neighbours)
        seconds["improve"] = better.seconds
        rank = np.empty(len(chosen.ids), dtype=np.int64)
        rank[tour.order] = np.arange(len(tour.order))
        order, greedy_position, improved = better.order, rank[better.order], better.after
        moves = {"two_opt": better.two_opt_moves, "or_opt": better.or_opt_moves}
    table = walk_table(settings.name, chosen.ids, chosen.vectors, order, greedy_position)
    _write(store, settings, table)
    return WalkResult(
        settings=settings,
        table=table,
        candidates=len(chosen.ids),
        start_id=str(chosen.ids[chosen.start]),
        start_score=chosen.start_score,
        greedy=greedy,
        improved=improved,
        tour=tour.stats,
        moves=moves,
        seconds=seconds,
        left_out=chosen.left_out,
    )


class _RecordedEncoder:
    """The model that embedded the images, loaded on first use: an empty walk never pays for it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._encoder: Any = None

    def _get(self) -> Any:
        if self._encoder is None:
            from hotdog_dagster.core.model.encoder import ClipEncoder

            self._encoder = ClipEncoder(recorded_model(self.store))
        return self._encoder

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self._get().encode_texts(texts)

    def encode_pil(self, images: list[Any]) -> np.ndarray:
        return self._get().encode_pil(images)


def _write(store: Store, settings: WalkSettings, table: pa.Table) -> None:
    meta = {"walk_settings": json.dumps(settings.values())}
    store.write_table(TABLE, table.replace_schema_metadata(meta), settings.name)


def render_walk(store: Store, settings: WalkSettings) -> Rendered:
    """Draw the stored ``ordered_walk`` partition of ``settings.name`` (see :func:`render.render`).

    Frames are captioned with each image's top label and its probability when ``settings.caption``
    and label scores exist. Raises :class:`WalkError` for an empty or missing walk.
    """
    table = store.read_table(TABLE, settings.name)
    if table is None:
        raise WalkError(f"walk {settings.name!r} has not been built yet; materialise ordered_walk for it first")
    if table.num_rows == 0:
        raise WalkError(f"walk {settings.name!r} is empty (its filter keeps fewer than two images): nothing to draw")
    ids = np.asarray(table.sort_by("position").column("id").to_pylist(), dtype=object)
    with Searcher(store, None) as searcher:
        set_ids, vectors, _, _ = candidate_set(searcher, settings.filter, settings.space, settings.include_flagged)
        positions = searcher.position.get_indexer(ids)
        rows = searcher.row_of[np.maximum(positions, 0)]
        rows = np.where(positions >= 0, rows, -1)
        paths = _column(searcher, "path", rows)
        captions = None
        if settings.caption and "top_label" in searcher.columns:
            labels = _column(searcher, "top_label", rows)
            probs = _column(searcher, "top_probability", rows)
            captions = [None if lb is None else f"{lb} {p:.2f}" for lb, p in zip(labels, probs, strict=True)]
    walk_rows = np.searchsorted(set_ids, ids) if len(set_ids) else np.zeros(len(ids), dtype=np.int64)
    inside = (walk_rows < len(set_ids)) & (set_ids[np.minimum(walk_rows, max(0, len(set_ids) - 1))] == ids)
    return render(
        paths,
        media_dir(store, settings.name),
        captions=captions,
        vectors=vectors,
        walk_rows=walk_rows[inside],
        size=settings.size,
        fps=settings.fps,
        sheet_every=settings.sheet_every,
        title=f"{settings.name}: {len(set_ids)} images, walk of {len(ids)} frames",
    )


def _column(searcher: Searcher, name: str, rows: np.ndarray) -> list[Any]:
    values = searcher.items.column(name).to_pylist()
    return [values[r] if r >= 0 else None for r in rows]
