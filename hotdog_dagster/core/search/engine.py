"""One query engine for text, image and weighted multimodal queries with filters.

How a query is scored (also in the README and ``hotdog search --help``):

* A query is a list of parts, each a text, an image or an indexed image's id with a weight
  (negative weights push away, weight 0 parts are not encoded at all). Every text and image is
  encoded to a unit vector by the same OpenCLIP model that embedded the images; an id brings its
  stored vector.
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

Three ranking modes (``Query.mode``):

* ``vector`` (default): the cosine scores above.
* ``keyword``: BM25 over each image's caption and prompt (:mod:`.keyword`), from the text parts only;
  a part's weight multiplies its words' BM25 contributions (negative weights subtract). Images with
  no query word are not hits. Scores are BM25 sums, not cosines.
* ``hybrid``: reciprocal rank fusion of the vector ranking and the keyword ranking, weighted as
  Marqo's ``alpha`` (LanceDB's unweighted ``RRFReranker`` orders as ``alpha = 0.5`` does)::

      score(d) = alpha / (rrf_k + rank_vector(d)) + (1 - alpha) / (rrf_k + rank_keyword(d))

  with 1-based ranks (Cormack et al. 2009, ``rrf_k = 60``) and a missing term where a list does not
  hold ``d``. Each list contributes its first ``max(HYBRID_WINDOW, offset + limit)`` results, so
  pages within the window come from one fused ranking. ``alpha = 1`` is the vector order and
  ``alpha = 0`` the keyword order, each followed by the images only the other list holds. Image
  parts feed the vector side only; texts feed both.

Score modifiers (Marqo's ``score_modifiers``) then rescore by numeric columns of ``search_items``::

    score = raw * (w1 * field1) * (w2 * field2) ... + (w3 * field3) + (w4 * field4) ...

``multiply_score_by`` gives the factors and ``add_to_score`` the addends; a modifier whose field is
missing (NULL) for an image is skipped for that image. Modifiers re-rank every candidate the mode
scores: all images the filter allows in vector mode (an exact matrix product), the matched ones in
keyword mode, the fused window in hybrid mode. Hits then carry ``raw_score`` beside ``score``.

Filters narrow the candidates before the vector search: the filter becomes parameterised SQL over
the catalog's ``search_items`` view, the matching ids become a FAISS ID selector (or the rows of
the exact matrix product), so a selective filter still returns ``limit`` hits when that many match.
Flagged images (``keep`` false in ``image_quality``) are left out unless ``include_flagged``.
"""

from __future__ import annotations

import http.client
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from hotdog_dagster.core.io import catalog
from hotdog_dagster.core.io.decode import ImageRejected, decode
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.io.vectors import column_matrix
from hotdog_dagster.core.search import keyword
from hotdog_dagster.core.search.filters import FilterError, columns_of, compile_filter, resolve_field
from hotdog_dagster.core.search.index import load as load_index

Space = Literal["image", "description", "both"]
SPACES = ("image", "description", "both")
Mode = Literal["vector", "keyword", "hybrid"]
MODES = ("vector", "keyword", "hybrid")
#: Results each list contributes to hybrid fusion (more when a page reaches further).
HYBRID_WINDOW = 1000
RRF_K = 60
URL_TIMEOUT_S = 10.0
URL_MAX_BYTES = 20 * 1024 * 1024
URL_MAX_REDIRECTS = 3
_WEIGHT_SUFFIX = re.compile(r"^(?P<body>.*?):(?P<weight>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)$", re.S)


class QueryError(ValueError):
    """A query that cannot run; the message says what is wrong and what a query needs.

    ``input`` names the part of the query at fault when one is ("filter", "multiply_score_by", ...)
    and ``position`` the character in it, so a page can point at it as the CLI's caret does.
    """

    def __init__(self, message: str, input: str | None = None, position: int | None = None) -> None:
        super().__init__(message)
        self.input = input
        self.position = position


@dataclass(frozen=True)
class Part:
    """One weighted piece of a query.

    ``text``: words. ``image``: a path or http(s) URL, or raw bytes in ``data`` (an upload; then
    ``value`` only names it in messages). ``id``: an indexed image by its id, scored by its stored
    vector (nothing decoded or encoded: what clicking a result does).
    """

    kind: Literal["text", "image", "id"]
    value: str
    weight: float = 1.0
    data: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Modifier:
    """A numeric column of ``search_items`` and its weight, for ``multiply_score_by`` / ``add_to_score``."""

    field: str
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
    mode: Mode = "vector"
    alpha: float = 0.5  # hybrid: the vector ranking's share of the fused score (Marqo's alpha)
    rrf_k: float = RRF_K
    multiply_score_by: tuple[Modifier, ...] = ()
    add_to_score: tuple[Modifier, ...] = ()


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    path: str
    columns: dict[str, Any] = field(default_factory=dict)
    #: How the score came about, when more than one number made it: ``raw_score`` before modifiers;
    #: in hybrid mode ``vector_score``/``vector_rank`` and ``keyword_score``/``keyword_rank`` (None
    #: where that list did not hold the image).
    details: dict[str, float | int | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "path": self.path, **self.details, **self.columns}


def split_weight(spec: str, default: float = 1.0) -> tuple[str, float]:
    """``"a hamburger:-0.5"`` -> ("a hamburger", -0.5); no numeric suffix -> the default weight.

    Only a final ``:<number>`` is a weight, so a URL (``http://host:8080/x.png``) or a Windows path
    keeps its colons.
    """
    m = _WEIGHT_SUFFIX.match(spec)
    if m and m.group("body"):
        return m.group("body"), float(m.group("weight"))
    return spec, default


def parse_modifier(spec: str) -> Modifier:
    """``"top_probability:2"`` -> Modifier("top_probability", 2.0); no weight -> 1 (the CLI's and API's syntax)."""
    name, weight = split_weight(spec.strip())
    if not name.strip():
        raise QueryError(f"a score modifier needs a field name, e.g. top_probability:0.5 (got {spec!r})")
    return Modifier(name.strip(), weight)


class _LimitedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows at most ``URL_MAX_REDIRECTS`` redirects, and only to http(s) URLs.

    urllib's own handler follows ten, and to ``ftp://`` too; a query URL must not become a way to
    make the search server fetch other schemes or bounce around.
    """

    max_redirections = 0  # set per opener from URL_MAX_REDIRECTS

    def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001, ANN201 - urllib's signature
        target = headers.get("location") or headers.get("uri")
        if target:
            newurl = urllib.parse.urljoin(req.full_url, target)
            if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
                raise QueryError(f"image URL {req.full_url} redirects to {newurl!r}: only http(s) URLs are fetched")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener() -> urllib.request.OpenerDirector:
    """An opener that speaks http and https only (no file:, ftp: or data: handlers at all)."""
    redirects = _LimitedRedirects()
    redirects.max_redirections = URL_MAX_REDIRECTS
    redirects.max_repeats = 1
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        redirects,
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def fetch_image_url(url: str) -> bytes:
    """The bytes of a query image at an http(s) URL, fetched defensively; a QueryError says what went wrong.

    - only ``http`` and ``https``, also after redirects, and at most ``URL_MAX_REDIRECTS`` of them;
    - ``URL_TIMEOUT_S`` for any one wait and for the fetch as a whole: a server that trickles a
      byte every few seconds is cut off (once the read in progress returns) rather than holding a
      request, or ``hotdog serve``, for ever;
    - at most ``URL_MAX_BYTES``: a larger ``Content-Length`` is refused before reading, a body that
      runs past it is refused when it does;
    - the answer must say ``Content-Type: image/...``: an HTML page or a JSON error is not decoded.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise QueryError(f"image URL {url}: only http(s) URLs are fetched")
    deadline = time.monotonic() + URL_TIMEOUT_S
    request = urllib.request.Request(url, headers={"Accept": "image/*", "User-Agent": "hotdog-search"})
    try:
        with _opener().open(request, timeout=URL_TIMEOUT_S) as resp:
            kind = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if not kind.startswith("image/"):
                raise QueryError(f"image URL {url} answered content type {kind or '(none)'!r}, not an image/* type")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > URL_MAX_BYTES:
                raise QueryError(f"image URL {url} is {int(declared):,} bytes, over the {_mb(URL_MAX_BYTES)} MB cap")
            chunks, size = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = resp.read1(64 * 1024) if hasattr(resp, "read1") else resp.read(64 * 1024)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > URL_MAX_BYTES:
                    raise QueryError(f"image URL {url} is larger than the {_mb(URL_MAX_BYTES)} MB cap")
            return b"".join(chunks)
    except QueryError:
        raise
    except TimeoutError:
        raise QueryError(f"image URL {url} timed out after {URL_TIMEOUT_S:g} s") from None
    except urllib.error.HTTPError as exc:
        if exc.code in (301, 302, 303, 307, 308):
            raise QueryError(f"image URL {url} redirects more than {URL_MAX_REDIRECTS} times (or in a loop)") from None
        raise QueryError(f"image URL {url} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise QueryError(f"image URL {url} timed out after {URL_TIMEOUT_S:g} s") from None
        raise QueryError(f"image URL {url} could not be fetched: {reason}") from None


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g}"


def load_image_bytes(source: str) -> bytes:
    """Bytes of a query image from a path or an http(s) URL (:func:`fetch_image_url`)."""
    if re.match(r"^https?://", source, re.I):
        return fetch_image_url(source)
    if re.match(r"^[a-z][a-z0-9+.-]*:", source, re.I) and not re.match(r"^[a-z]:[\\/]", source, re.I):
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
        self._lock = threading.Lock()
        self.exact = self.index.info.kind.startswith("Flat")  # an exact index: search by matrix product
        self._keyword: sp.csc_matrix | None = None  # BM25 weights, rows in FAISS position order
        self._keyword_index: keyword.KeywordIndex | None = None
        self._column_values: dict[str, np.ndarray] = {}

    def _load_items(self) -> tuple[pa.Table, np.ndarray]:
        """The catalog's ``search_items`` rows, in FAISS position order, held in memory.

        Filters and hit rows are then an in-memory scan and a ``take``: milliseconds, where a
        per-query scan of the Parquet-backed views costs tens of milliseconds at 100k images.
        """
        with catalog.reading(self.store) as cat:
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
        stored = [p for p in live if p.kind == "id"]
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
                    pil.append(decode(p.data if p.data is not None else load_image_bytes(p.value)).image)
                except ImageRejected as exc:
                    raise QueryError(f"image {p.value} is not a usable image: {exc}") from None
            vecs.append(np.asarray(self.encoder.encode_pil(pil), dtype=np.float32))
            weights += [p.weight for p in images]
        if stored:
            vecs.append(self.image_vectors[[self.position_of(p.value) for p in stored]])
            weights += [p.weight for p in stored]
        q = np.asarray(weights, dtype=np.float32) @ np.concatenate(vecs)
        norm = float(np.linalg.norm(q))
        if norm < 1e-6:
            raise QueryError("the weighted parts cancel out exactly; change a weight")
        return q / norm

    def path_of(self, image_id: str) -> str | None:
        """The catalog's file path of an indexed image (None when the catalog has no row for it)."""
        row = int(self.row_of[self.position_of(image_id)])
        return None if row < 0 else self.items.column("path")[row].as_py()

    def position_of(self, image_id: str) -> int:
        """The FAISS position of an indexed image id."""
        pos = int(self.position.get_indexer([image_id])[0])
        if pos < 0:
            raise QueryError(f"no indexed image has id {image_id!r}")
        return pos

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
        with self.con.cursor() as cur:  # one cursor per call: the app's threads share this searcher
            cur.register("search_items", self.items)  # a view over the Arrow table: no copy
            return np.asarray(cur.execute(sql, params).fetchnumpy()["_pos"], dtype=np.int64)

    # -- search -----------------------------------------------------------------------------------
    def search(self, query: Query) -> list[Hit]:
        if query.space not in SPACES:
            raise QueryError(f"unknown space {query.space!r}: use one of {', '.join(SPACES)}")
        if query.mode not in MODES:
            raise QueryError(f"unknown mode {query.mode!r}: use one of {', '.join(MODES)}")
        if query.limit < 1 or query.offset < 0:
            raise QueryError(f"limit must be >= 1 and offset >= 0 (got {query.limit}, {query.offset})")
        if not 0 <= query.alpha <= 1:
            raise QueryError(f"alpha must be between 0 (keyword order) and 1 (vector order) (got {query.alpha:g})")
        if not query.rrf_k > 0:
            raise QueryError(f"rrf_k must be > 0 (got {query.rrf_k:g}); 60 is the usual value")
        w_img = query.image_space_weight if query.space != "description" else 0.0
        w_txt = query.description_space_weight if query.space != "image" else 0.0
        if w_img < 0 or w_txt < 0 or w_img + w_txt == 0:
            raise QueryError("space weights must be >= 0 and not both 0")
        try:
            allowed = self.candidates(query.filter, query.include_flagged)
        except FilterError as exc:
            raise QueryError(str(exc), input="filter", position=exc.position) from None
        factors = [(m, self.column_values(m.field, "multiply_score_by")) for m in query.multiply_score_by]
        addends = [(m, self.column_values(m.field, "add_to_score")) for m in query.add_to_score]
        modified = bool(factors or addends)
        k = query.offset + query.limit
        details: dict[str, np.ndarray] = {}
        if query.mode == "keyword":
            positions, scores = self._keyword_scores(query.parts, allowed, require_text=True)
            if not modified:
                positions, scores = _top(positions, scores, k)
        elif query.mode == "hybrid":
            positions, scores, details = self._hybrid(query, allowed, w_img, w_txt, max(HYBRID_WINDOW, k))
        else:
            q = self.query_vector(query.parts)
            if modified:
                positions, scores = self._vector_scores(q, allowed, w_img, w_txt)
            else:
                positions, scores = self._vector_top(q, k, allowed, w_img, w_txt)
        if modified:
            raw = scores
            scores = _modify(positions, scores, factors, addends)
            order = _top_order(positions, scores, k)
            positions, scores, raw = positions[order], scores[order], raw[order]
            details = {name: values[order] for name, values in details.items()}
            details["raw_score"] = raw
        elif details:
            order = _top_order(positions, scores, k)
            positions, scores = positions[order], scores[order]
            details = {name: values[order] for name, values in details.items()}
        page = slice(query.offset, None)
        return self._hits(positions[page], scores[page], {name: v[page] for name, v in details.items()})

    def _vector_top(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, w_img: float, w_txt: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best by vector score, best first.

        An approximate index (IVF, HNSW) answers the image space through FAISS. Otherwise the answer
        is an exact matrix-vector product over the vectors held in memory: BLAS uses every core and
        reads each vector once, where FAISS scans one query's candidates on one thread (about twice
        as slow at 100k x 512 on two cores), and a selective filter only touches its own rows.
        """
        if w_txt == 0 and not self.exact:
            return self._search_image_space(q, k, allowed)
        return _top(*self._vector_scores(q, allowed, w_img, w_txt), k)

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
        return pos[0][keep].astype(np.int64), scores[0][keep]

    def _vector_scores(
        self, q: np.ndarray, allowed: np.ndarray | None, w_img: float, w_txt: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact weighted two-space scores of every candidate (one matrix product per space), unsorted."""
        n = len(self.ids)
        rows = np.arange(n, dtype=np.int64) if allowed is None else allowed
        if len(rows) == 0:
            return rows, np.zeros(0, np.float32)
        # a selective filter multiplies only its rows; a broad one multiplies all and picks (no big copy)
        gather = allowed is not None and len(rows) < n // 4
        scores = np.zeros(len(rows), dtype=np.float32)
        for weight, matrix in ((w_img, self.image_vectors), (w_txt, self.text_vectors)):
            if weight:
                part = matrix[rows] @ q if gather else matrix @ q
                scores += np.float32(weight) * (part if gather or allowed is None else part[rows])
        scores /= np.float32(w_img + w_txt)
        return rows, scores

    # -- keyword and hybrid -------------------------------------------------------------------------
    def keyword_weights(self) -> sp.csc_matrix:
        """The BM25 weights with rows in FAISS position order, loaded on first use (vector search never needs them)."""
        with self._lock:
            if self._keyword is None:
                index = keyword.load(self.store)
                rows = pd.Index(index.ids).get_indexer(self.ids)  # keyword row of each FAISS position
                have = np.flatnonzero(rows >= 0)
                select = sp.csr_matrix(
                    (np.ones(len(have), np.float32), (have, rows[have])), shape=(len(self.ids), len(index.ids))
                )
                self._keyword = (select @ index.weights.tocsr()).tocsc()
                self._keyword_index = index
            return self._keyword

    def _keyword_scores(
        self, parts: tuple[Part, ...], allowed: np.ndarray | None, require_text: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates with a positive BM25 score for the weighted text parts, unsorted."""
        texts = [p for p in parts if p.kind == "text" and p.weight != 0]
        if require_text:
            if any(p.kind != "text" and p.weight != 0 for p in parts):
                raise QueryError("keyword mode reads words only: use mode vector or hybrid for image parts")
            if not texts:
                raise QueryError("the query is empty: keyword mode needs a text part with a non-zero weight")
        for p in texts:
            if not p.value.strip():
                raise QueryError("a text part is empty: give some words, e.g. 'a face'")
        if not texts:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        try:
            weights = self.keyword_weights()
        except FileNotFoundError as exc:
            raise QueryError(str(exc)) from None
        assert self._keyword_index is not None
        cols, qw = self._keyword_index.query_terms([(p.value, p.weight) for p in texts])
        scores = keyword.score_matrix(weights, cols, qw)
        rows = np.arange(len(scores), dtype=np.int64) if allowed is None else allowed
        scores = scores[rows]
        hit = scores > 0
        return rows[hit], scores[hit]

    def _hybrid(
        self, query: Query, allowed: np.ndarray | None, w_img: float, w_txt: float, window: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Reciprocal rank fusion of the vector and keyword top ``window``, unsorted, with each side's score and rank."""
        q = self.query_vector(query.parts)
        v_pos, v_score = self._vector_top(q, window, allowed, w_img, w_txt)
        k_pos, k_score = _top(*self._keyword_scores(query.parts, allowed, require_text=False), window)
        positions = np.union1d(v_pos, k_pos)
        fused = np.zeros(len(positions), dtype=np.float64)
        details = {name: np.full(len(positions), np.nan) for name in ("vector_score", "vector_rank")}
        details |= {name: np.full(len(positions), np.nan) for name in ("keyword_score", "keyword_rank")}
        for side, pos, score, share in (
            ("vector", v_pos, v_score, query.alpha),
            ("keyword", k_pos, k_score, 1 - query.alpha),
        ):
            at = np.searchsorted(positions, pos)
            ranks = np.arange(1, len(pos) + 1)
            fused[at] += share / (query.rrf_k + ranks)
            details[f"{side}_score"][at] = score
            details[f"{side}_rank"][at] = ranks
        return positions, fused, details

    # -- modifiers ---------------------------------------------------------------------------------
    def numeric_fields(self) -> list[str]:
        """The columns score modifiers can use (numbers), in the view's order."""
        return [name for name in self.columns if resolve_field(name, self.columns)[1] in ("int", "float")]

    def column_values(self, name: str, role: str = "a score modifier") -> np.ndarray:
        """A numeric column as float64 by FAISS position (NaN where missing), for score modifiers."""
        try:
            column, kind = resolve_field(name, self.columns)
        except FilterError as exc:
            raise QueryError(f"{role}: {exc.message}", input=role) from None
        if kind not in ("int", "float"):
            numeric = ", ".join(self.numeric_fields()) or "(none)"
            raise QueryError(
                f"{role}: field {column!r} is {self.columns[column]}, not a number; numeric fields are: {numeric}",
                input=role,
            )
        if column not in self._column_values:
            values = self.items.column(column).cast(pa.float64()).to_numpy(zero_copy_only=False)
            by_position = np.full(len(self.ids), np.nan)
            have = self.row_of >= 0
            by_position[have] = np.asarray(values, dtype=np.float64)[self.row_of[have]]
            self._column_values[column] = by_position
        return self._column_values[column]

    def _hits(self, positions: np.ndarray, scores: np.ndarray, details: dict[str, np.ndarray]) -> list[Hit]:
        rows = self.row_of[positions]
        found = self.items.take(pa.array(np.where(rows >= 0, rows, 0))).drop_columns(["_pos"]).to_pylist()
        hits = []
        for i, (pos, row, record, s) in enumerate(zip(positions, rows, found, scores, strict=True)):
            record = {k: _plain(v) for k, v in record.items()} if row >= 0 else {}
            record.pop("id", None)
            path = str(record.pop("path", "") or "")
            extra = {name: _detail(name, values[i]) for name, values in details.items()}
            hits.append(Hit(id=str(self.ids[pos]), score=float(s), path=path, columns=record, details=extra))
        return hits


def _top_order(positions: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first, ties broken by FAISS position (stable pages)."""
    n = len(scores)
    if n == 0:
        return np.zeros(0, np.int64)
    k = min(k, n)
    if k < n:
        # argpartition keeps an arbitrary subset of the scores tied at the cut: take those with the
        # lowest positions instead, so a page, a hybrid window and a longer list agree on ties
        cut = scores[np.argpartition(-scores, k - 1)[k - 1]]
        above = np.flatnonzero(scores > cut)
        tied = np.flatnonzero(scores == cut)
        top = np.concatenate([above, tied[np.argsort(positions[tied], kind="stable")][: k - len(above)]])
    else:
        top = np.arange(n)
    return top[np.lexsort((positions[top], -scores[top]))]


def _top(positions: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = _top_order(positions, scores, k)
    return positions[order], scores[order]


def _modify(
    positions: np.ndarray,
    scores: np.ndarray,
    factors: list[tuple[Modifier, np.ndarray]],
    addends: list[tuple[Modifier, np.ndarray]],
) -> np.ndarray:
    """Marqo's rule: ``raw * prod(w * field) + sum(w * field)``; a missing value skips its modifier."""
    out = np.asarray(scores, dtype=np.float64).copy()
    for m, values in factors:
        v = values[positions]
        out = np.where(np.isnan(v), out, out * (m.weight * v))
    for m, values in addends:
        v = values[positions]
        out = out + np.where(np.isnan(v), 0.0, m.weight * v)
    return out


def _detail(name: str, value: float) -> float | int | None:
    if np.isnan(value):
        return None
    return int(value) if name.endswith("_rank") else float(value)


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
