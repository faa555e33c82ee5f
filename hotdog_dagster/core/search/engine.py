"""One query engine for text, image and weighted multimodal queries with filters.

How a query is scored (also in the README and ``hotdog search --help``):

* A query is a list of parts, each a text or an image with a weight (negative weights push away,
  weight 0 parts are not encoded at all). Every part is encoded to a unit vector by the same
  OpenCLIP model that embedded the images.
* Per space, the query vector is the weighted sum of its parts' vectors, renormalised to unit
  length: ``q = normalise(sum_i w_i * e_i)``. Texts and images share CLIP's space, so a text part and
  an image part mix directly (Marqo's ``{"query": weight}``).
* There are two spaces (the image+description aggregation of the Superlinked seed): the *image*
  space scores ``q . v_image`` and the *description* space scores ``q . v_caption`` (the text
  vector of each image's caption). ``space="both"`` combines them by their weights,
  ``score = (W_img * s_img + W_desc * s_desc) / (W_img + W_desc)``, which is the inner product of
  the concatenated vectors ``[sqrt(W_img) q, sqrt(W_desc) q] . [v_image, v_caption]`` scaled back to
  a cosine's range. An image without a caption scores 0 in the description space.
* Scores are cosines (or their weighted mean): an image queried with itself in the image space
  scores 1.

Filters narrow the candidates before the vector search: the filter becomes parameterised SQL over
the catalog's ``search_items`` view, the matching ids become a FAISS ID selector (or the rows of
the exact matrix product), so a selective filter still returns ``limit`` hits when that many match.
Flagged images (``keep`` false in ``image_quality``) are left out unless ``include_flagged``.
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import faiss
import numpy as np
import pandas as pd
import pyarrow as pa

from hotdog_dagster.core.io import catalog
from hotdog_dagster.core.io.decode import ImageRejected, decode
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.io.vectors import column_matrix
from hotdog_dagster.core.search.filters import FilterError, columns_of, compile_filter
from hotdog_dagster.core.search.index import load as load_index

Space = Literal["image", "description", "both"]
SPACES = ("image", "description", "both")
URL_TIMEOUT_S = 10.0
URL_MAX_BYTES = 20 * 1024 * 1024
_WEIGHT_SUFFIX = re.compile(r"^(?P<body>.*?):(?P<weight>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)$", re.S)


class QueryError(ValueError):
    """A query that cannot run; the message says what is wrong and what a query needs."""


@dataclass(frozen=True)
class Part:
    kind: Literal["text", "image"]
    value: str  # the text, or an image path or http(s) URL
    weight: float = 1.0


@dataclass(frozen=True)
class Query:
    parts: tuple[Part, ...]
    space: Space = "image"
    image_space_weight: float = 1.0
    description_space_weight: float = 1.0
    filter: str | None = None
    limit: int = 10
    offset: int = 0
    include_flagged: bool = False


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    path: str
    columns: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "path": self.path, **self.columns}


def split_weight(spec: str, default: float = 1.0) -> tuple[str, float]:
    """``"a hamburger:-0.5"`` -> ("a hamburger", -0.5); no numeric suffix -> the default weight.

    Only a final ``:<number>`` is a weight, so a URL (``http://host:8080/x.png``) or a Windows path
    keeps its colons.
    """
    m = _WEIGHT_SUFFIX.match(spec)
    if m and m.group("body"):
        return m.group("body"), float(m.group("weight"))
    return spec, default


def load_image_bytes(source: str) -> bytes:
    """Bytes of a query image from a path or an http(s) URL, with a timeout and a size cap."""
    if re.match(r"^https?://", source, re.I):
        try:
            with urllib.request.urlopen(source, timeout=URL_TIMEOUT_S) as resp:  # noqa: S310 (scheme checked)
                data = resp.read(URL_MAX_BYTES + 1)
        except TimeoutError:
            raise QueryError(f"image URL {source} timed out after {URL_TIMEOUT_S:.0f} s") from None
        except urllib.error.HTTPError as exc:
            raise QueryError(f"image URL {source} answered HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise QueryError(f"image URL {source} could not be fetched: {reason}") from None
        if len(data) > URL_MAX_BYTES:
            raise QueryError(f"image URL {source} is larger than the {URL_MAX_BYTES // (1024 * 1024)} MB cap")
        return data
    if re.match(r"^[a-z][a-z0-9+.-]*://", source, re.I):
        raise QueryError(f"image {source}: only local paths and http(s) URLs are supported")
    path = Path(source).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise QueryError(f"image file {path} does not exist") from None
    except OSError as exc:
        raise QueryError(f"image file {path} could not be read: {exc.strerror or exc}") from None


def recorded_model(store: Store) -> str:
    """The model spec the embeddings were made with: queries must be encoded by the same model."""
    table = store.read_table("embeddings", columns=["model"])
    if table is None or table.num_rows == 0:
        raise FileNotFoundError(f"no embeddings under {store.root}; run the pipeline first (`hotdog run`)")
    models = sorted(set(table.column("model").to_pylist()))
    if len(models) != 1:
        raise QueryError(f"the embeddings mix models ({', '.join(models)}); re-embed every partition with one model")
    return models[0]


class Searcher:
    """Search one ``HOTDOG_HOME``: opens the index, the vectors and the catalog once, then answers queries.

    ``encoder`` is anything with ``encode_texts(list[str])`` and ``encode_pil(list[PIL.Image])``
    returning unit vectors; it must be the model that embedded the images.
    """

    def __init__(self, store: Store, encoder: Any) -> None:
        self.store = store
        self.encoder = encoder
        self.index = load_index(store)
        self.ids = np.asarray(self.index.ids, dtype=object)
        emb = store.read_table("embeddings", columns=["id", "vector", "text_vector"])
        if emb is None:
            raise FileNotFoundError(f"no embeddings under {store.root}; run the pipeline first (`hotdog run`)")
        rows = pd.Index(emb.column("id").to_numpy(zero_copy_only=False)).get_indexer(self.ids)
        if (rows < 0).any():
            raise FileNotFoundError("the index and the embeddings table disagree; re-materialise image_index")
        self.image_vectors = column_matrix(emb.column("vector"))[rows]
        text = emb.column("text_vector").combine_chunks()
        has_text = ~np.asarray(text.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        text_matrix = np.zeros_like(self.image_vectors)
        if has_text.any():
            text_matrix[has_text] = column_matrix(text.filter(pa.array(has_text)))
        self.text_vectors = text_matrix[rows]
        self.position = pd.Index(self.ids)
        self.items, self.row_of = self._load_items()
        self.con = duckdb.connect()  # in memory: filters run over the Arrow table, never the catalog's lock
        self.con.register("search_items", self.items)
        self.columns = {k: v for k, v in columns_of(self.con, "search_items").items() if k != "_pos"}

    def _load_items(self) -> tuple[pa.Table, np.ndarray]:
        """The catalog's ``search_items`` rows, in FAISS position order, held in memory.

        Filters and hit rows are then an in-memory scan and a ``take``: milliseconds, where a
        per-query scan of the Parquet-backed views costs tens of milliseconds at 100k images.
        """
        with catalog.connect(self.store) as cat:
            items = cat.sql("SELECT * FROM search_items").to_arrow_table()
        pos = self.position.get_indexer(np.asarray(items.column("id").to_numpy(zero_copy_only=False), dtype=object))
        items = items.append_column("_pos", pa.array(pos, pa.int64())).filter(pa.array(pos >= 0))
        items = items.sort_by("_pos")
        row_of = np.full(len(self.ids), -1, dtype=np.int64)
        row_of[items.column("_pos").to_numpy()] = np.arange(items.num_rows)
        return items, row_of

    @classmethod
    def open(cls, store: Store, device: str = "auto") -> Searcher:
        """A searcher with the model that embedded the images (read from the embeddings table)."""
        from hotdog_dagster.core.model.encoder import ClipEncoder

        return cls(store, ClipEncoder(recorded_model(store), device=device))

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- query encoding -------------------------------------------------------------------------
    def query_vector(self, parts: tuple[Part, ...]) -> np.ndarray:
        """The unit query vector of weighted parts; weight-0 parts are skipped before encoding."""
        live = [p for p in parts if p.weight != 0]
        if not live:
            raise QueryError("the query is empty: give a text, an image, or a part with a non-zero weight")
        texts = [p for p in live if p.kind == "text"]
        images = [p for p in live if p.kind == "image"]
        vecs, weights = [], []
        if texts:
            for p in texts:
                if not p.value.strip():
                    raise QueryError("a text part is empty: give some words, e.g. 'a face'")
            vecs.append(np.asarray(self.encoder.encode_texts([p.value for p in texts]), dtype=np.float32))
            weights += [p.weight for p in texts]
        if images:
            pil = []
            for p in images:
                try:
                    pil.append(decode(load_image_bytes(p.value)).image)
                except ImageRejected as exc:
                    raise QueryError(f"image {p.value} is not a usable image: {exc}") from None
            vecs.append(np.asarray(self.encoder.encode_pil(pil), dtype=np.float32))
            weights += [p.weight for p in images]
        q = np.asarray(weights, dtype=np.float32) @ np.concatenate(vecs)
        norm = float(np.linalg.norm(q))
        if norm < 1e-6:
            raise QueryError("the weighted parts cancel out exactly; change a weight")
        return q / norm

    # -- candidates -----------------------------------------------------------------------------
    def candidates(self, filter_text: str | None, include_flagged: bool) -> np.ndarray | None:
        """FAISS positions allowed by the filter and the flags; ``None`` when everything is allowed."""
        clauses, params = [], []
        if filter_text and filter_text.strip():
            sql, params = compile_filter(filter_text, self.columns)
            clauses.append(sql)
        if not include_flagged and "keep" in self.columns:
            clauses.append("keep IS NOT FALSE")
        if not clauses:
            return None
        sql = f"SELECT _pos FROM search_items WHERE {' AND '.join(clauses)} ORDER BY _pos"
        return np.asarray(self.con.execute(sql, params).fetchnumpy()["_pos"], dtype=np.int64)

    # -- search -----------------------------------------------------------------------------------
    def search(self, query: Query) -> list[Hit]:
        if query.space not in SPACES:
            raise QueryError(f"unknown space {query.space!r}: use one of {', '.join(SPACES)}")
        if query.limit < 1 or query.offset < 0:
            raise QueryError(f"limit must be >= 1 and offset >= 0 (got {query.limit}, {query.offset})")
        w_img = query.image_space_weight if query.space != "description" else 0.0
        w_txt = query.description_space_weight if query.space != "image" else 0.0
        if w_img < 0 or w_txt < 0 or w_img + w_txt == 0:
            raise QueryError("space weights must be >= 0 and not both 0")
        try:
            allowed = self.candidates(query.filter, query.include_flagged)
        except FilterError as exc:
            raise QueryError(str(exc)) from None
        q = self.query_vector(query.parts)
        k = query.offset + query.limit
        if w_txt == 0:
            positions, scores = self._search_image_space(q, k, allowed)
        else:
            positions, scores = self._search_exact(q, k, allowed, w_img, w_txt)
        positions, scores = positions[query.offset :], scores[query.offset :]
        return self._hits(positions, scores)

    def _search_image_space(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """FAISS top-k, restricted by an ID selector when a filter or the flags narrow the set."""
        n = self.index.index.ntotal
        if allowed is not None and len(allowed) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        k = min(k, n if allowed is None else len(allowed))
        params = None
        if allowed is not None and len(allowed) < n:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        scores, pos = self.index.index.search(q[None, :].astype(np.float32), k, params=params)
        keep = pos[0] >= 0
        return pos[0][keep], scores[0][keep]

    def _search_exact(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, w_img: float, w_txt: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact weighted two-space scores over the candidates (one matrix product per space)."""
        rows = np.arange(len(self.ids)) if allowed is None else allowed
        if len(rows) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        img = self.image_vectors if allowed is None else self.image_vectors[rows]
        txt = self.text_vectors if allowed is None else self.text_vectors[rows]
        scores = np.zeros(len(rows), dtype=np.float32)
        if w_img:
            scores += np.float32(w_img) * (img @ q)
        if w_txt:
            scores += np.float32(w_txt) * (txt @ q)
        scores /= np.float32(w_img + w_txt)
        k = min(k, len(rows))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        top = top[np.lexsort((rows[top], -scores[top]))]
        return rows[top], scores[top]

    def _hits(self, positions: np.ndarray, scores: np.ndarray) -> list[Hit]:
        rows = self.row_of[positions]
        found = self.items.take(pa.array(np.where(rows >= 0, rows, 0))).drop_columns(["_pos"]).to_pylist()
        hits = []
        for pos, row, record, s in zip(positions, rows, found, scores, strict=True):
            record = {k: _plain(v) for k, v in record.items()} if row >= 0 else {}
            record.pop("id", None)
            path = str(record.pop("path", "") or "")
            hits.append(Hit(id=str(self.ids[pos]), score=float(s), path=path, columns=record))
        return hits


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (numpy and pandas values from DuckDB)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    if pd.isna(value) if not isinstance(value, (list, dict, bytes, np.ndarray)) else False:
        return None
    return value
