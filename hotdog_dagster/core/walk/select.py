"""Which images a walk visits, in which space, and where it starts: all through the search engine.

The filter is compiled by the search engine (the one filter language, over the catalog's
``search_items`` view; flagged images are left out unless asked for), the start query is encoded
by it (a text, an image file or URL, or a stored image by id), and the vectors are its vectors:

* ``image``: each image's vector; ``description``: its caption's text vector; ``both``: the two
  concatenated and scaled by 1/sqrt(2), so an inner product is the mean of the two spaces' scores,
  the search engine's ``both`` score. Images without a caption have no description vector and are
  left out of ``description`` and ``both`` walks (counted in ``left_out``).
* Rows are sorted by image id, so the tour's "lowest row wins a tie" is "lowest id wins".
* The start is the filtered image that scores highest for the start query in the walk's space
  (lowest id on a tie); a start given by id must itself pass the filter.

Fewer than two images is not an error: the walk is empty and ``message`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from hotdog_dagster.core.search.engine import SPACES, Part, QueryError, Searcher
from hotdog_dagster.core.search.filters import FilterError

StartKind = Literal["text", "image", "id"]


class WalkError(ValueError):
    """A walk that cannot be built as defined; the message says what to change."""


class StartNotFound(WalkError):
    """The start matches nothing inside the walk's filter: an id that is not there, or a query whose
    best match inside the filter scores below ``min_start_score``."""


@dataclass(frozen=True)
class WalkSet:
    """The images of one walk: ids (sorted), vectors in the walk's space, and the start row."""

    ids: np.ndarray  # (n,) object, sorted
    vectors: np.ndarray  # (n, d) float32, unit length
    paths: np.ndarray  # (n,) object: image files, for rendering
    start: int  # row of the first frame; -1 when the walk is empty
    start_score: float | None  # the start query's score for that image
    message: str = ""  # why the walk is empty ("" when it is not)
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.start < 0


def space_vectors(searcher: Searcher, positions: np.ndarray, space: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of ``positions`` (FAISS positions) in ``space``, and which positions have them."""
    if space not in SPACES:
        raise WalkError(f"unknown space {space!r}: use one of {', '.join(SPACES)}")
    image = searcher.image_vectors[positions]
    if space == "image":
        return image, np.ones(len(positions), dtype=bool)
    text = searcher.text_vectors[positions]
    captioned = np.einsum("ij,ij->i", text, text) > 0.5  # a missing caption is stored as zeros
    if space == "description":
        return text[captioned], captioned
    both = np.concatenate([image, text], axis=1)[captioned] / np.float32(np.sqrt(2.0))
    return both, captioned


def candidate_set(
    searcher: Searcher, filter_text: str | None, space: str = "image", include_flagged: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """(ids sorted, vectors, FAISS positions, left-out counts) of the images a walk may visit."""
    try:
        allowed = searcher.candidates(filter_text, include_flagged)
    except (FilterError, QueryError) as exc:
        raise WalkError(f"filter {filter_text!r}: {exc}") from None
    positions = np.arange(len(searcher.ids)) if allowed is None else allowed
    vectors, has = space_vectors(searcher, positions, space)
    left_out = {"no_description": int((~has).sum())} if space != "image" else {}
    positions = positions[has]
    ids = np.asarray([str(i) for i in searcher.ids[positions]], dtype=object)
    order = np.argsort(ids, kind="stable")
    return ids[order], np.ascontiguousarray(vectors[order], dtype=np.float32), positions[order], left_out


def select_walk(
    searcher: Searcher,
    start: str,
    start_kind: StartKind = "text",
    filter_text: str | None = None,
    space: str = "image",
    include_flagged: bool = False,
    min_start_score: float | None = None,
) -> WalkSet:
    """The walk's images and first frame; see the module docstring.

    Raises :class:`WalkError` for a bad filter, space or start query, and :class:`StartNotFound`
    when the start matches nothing inside the filter.
    """
    ids, vectors, positions, left_out = candidate_set(searcher, filter_text, space, include_flagged)
    paths = _paths(searcher, positions)
    where = f"the filter {filter_text!r}" if filter_text and filter_text.strip() else "the index"
    flagged = "" if include_flagged else " (flagged images are left out unless include_flagged)"
    if len(ids) < 2:
        what = "no images" if len(ids) == 0 else f"only one image ({ids[0]})"
        message = f"{where} keeps {what}{flagged}: a walk needs at least two, so this walk is empty"
        if left_out.get("no_description"):
            message += f"; {left_out['no_description']} more have no caption for the {space} space"
        return WalkSet(ids, vectors, paths, -1, None, message, left_out)
    if start_kind == "id":
        row = int(np.searchsorted(ids, start))
        if row >= len(ids) or ids[row] != start:
            raise StartNotFound(f"start image {start!r} is not among the {len(ids)} images {where} keeps{flagged}")
        return WalkSet(ids, vectors, paths, row, 1.0, "", left_out)
    if start_kind not in ("text", "image"):
        raise WalkError(f"unknown start kind {start_kind!r}: use text, image or id")
    q = _query(searcher, start, start_kind)
    if space == "both":
        q = np.concatenate([q, q]) / np.float32(np.sqrt(2.0))
    scores = vectors @ q
    row = int(np.argmax(scores))  # the first maximum: the lowest id on a tie
    best = float(scores[row])
    if min_start_score is not None and best < min_start_score:
        raise StartNotFound(
            f"the start {start_kind} {start!r} matches nothing inside {where}: its best match "
            f"({ids[row]}) scores {best:.3f}, below min_start_score {min_start_score}"
        )
    return WalkSet(ids, vectors, paths, row, best, "", left_out)


def _query(searcher: Searcher, start: str, kind: str) -> np.ndarray:
    if searcher.encoder is None:
        raise WalkError(f"a {kind} start needs the model that embedded the images; open the searcher with it")
    try:
        return np.asarray(searcher.query_vector((Part(kind, start),)), dtype=np.float32)  # type: ignore[arg-type]
    except QueryError as exc:
        raise WalkError(f"start {kind} {start!r}: {exc}") from None


def _paths(searcher: Searcher, positions: np.ndarray) -> np.ndarray:
    rows = searcher.row_of[positions]
    column: list[Any] = searcher.items.column("path").to_pylist()
    return np.asarray([column[r] if r >= 0 else None for r in rows], dtype=object)
