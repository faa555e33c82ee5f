"""``hotdog serve``: the search page and ``/api/search``, one Starlette app over one :class:`Searcher`.

Routes:

- ``GET /``: the page (a Jinja2 template; the grid is drawn by ``static/app.js`` from the API).
- ``GET|POST /api/search``: the same query as ``hotdog search``, as query-string or form fields
  (multipart for uploads); JSON hits. Bad input is a 4xx with the CLI's message, never a 500.
- ``GET /thumb/{id}``: a PNG thumbnail of an indexed image, decoded by the project's decoder.
- ``GET /image/{id}``: the image file itself, only when it lies under ``HOTDOG_HOME``.
- ``GET /static/...``: the page's script and style.

Files are only ever found through an id of the catalog, never through a path from the request, so
no request can read a file the catalog does not list.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, QueryParams, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from hotdog_dagster.core.search.engine import (
    MODES,
    RRF_K,
    SPACES,
    Part,
    Query,
    QueryError,
    Searcher,
    parse_modifier,
    split_weight,
)
from hotdog_dagster.core.search.gallery import thumbnail_png

HERE = Path(__file__).parent
DEFAULT_PORT = 8750
DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 * 1024
MAX_LIMIT = 500
THUMB_SIZES = (64, 128, 256, 512)
log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A request the API refuses with a 4xx; ``input`` names the field at fault, ``position`` the character."""

    def __init__(self, message: str, status: int = 400, input: str | None = None, position: int | None = None) -> None:
        super().__init__(message)
        self.status, self.input, self.position = status, input, position


class JSON(JSONResponse):
    """JSON that never fails on a date or a numpy scalar, and never writes NaN (not JSON)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _error(message: str, status: int = 400, input: str | None = None, position: int | None = None) -> JSON:
    return JSON({"error": message, "input": input, "position": position}, status_code=status)


# -- request fields -> Query ---------------------------------------------------------------------


def _one(fields: FormData | QueryParams, name: str) -> str | None:
    values = [v for v in fields.getlist(name) if isinstance(v, str)]
    if len(values) > 1:
        raise BadRequest(f"{name}: given {len(values)} times; give it once", input=name)
    return values[0] if values else None


def _number(fields: FormData | QueryParams, name: str, default: float, kind: type = float) -> Any:
    text = _one(fields, name)
    if text is None or not text.strip():
        return default
    try:
        value = kind(text.strip())
    except ValueError:
        raise BadRequest(f"{name}: invalid {kind.__name__} value: {text!r}", input=name) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"{name}: must be a finite number (got {text!r})", input=name)
    return value


def _flag(fields: FormData | QueryParams, name: str) -> bool:
    text = (_one(fields, name) or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise BadRequest(f"{name}: expected true or false, got {text!r}", input=name)


def _choice(fields: FormData | QueryParams, name: str, choices: Sequence[str], default: str) -> str:
    value = _one(fields, name) or default
    if value not in choices:
        raise BadRequest(f"{name}: invalid choice {value!r} (choose from {', '.join(choices)})", input=name)
    return value


def _texts(fields: FormData | QueryParams, name: str) -> list[str]:
    return [v for v in fields.getlist(name) if isinstance(v, str)]


async def query_from_fields(fields: FormData | QueryParams, max_upload_bytes: int) -> Query:
    """The :class:`Query` the CLI would build from the same options (``text=a face:0.5`` = ``--text 'a face:0.5'``)."""
    text_weight = _number(fields, "text_weight", 1.0)
    image_weight = _number(fields, "image_weight", 1.0)
    parts: list[Part] = []
    q = _one(fields, "q")
    if q is not None and q.strip():
        parts.append(Part("text", q, text_weight))
    for spec in _texts(fields, "text"):
        text, w = split_weight(spec, text_weight)
        parts.append(Part("text", text, w))
    for spec in _texts(fields, "image"):
        url, w = split_weight(spec.strip(), image_weight)
        if not url.lower().startswith(("http://", "https://")):
            raise BadRequest(
                f"image {url}: the server takes http(s) URLs, uploads and indexed ids, not paths on its disk",
                input="image",
            )
        parts.append(Part("image", url, w))
    for spec in _texts(fields, "like"):
        image_id, w = split_weight(spec.strip(), image_weight)
        parts.append(Part("id", image_id, w))
    uploads = [f for f in fields.getlist("upload") if isinstance(f, UploadFile)]
    weights = _texts(fields, "upload_weight")
    if len(weights) > len(uploads):
        raise BadRequest(f"upload_weight: {len(weights)} weights for {len(uploads)} uploads", input="upload_weight")
    for i, upload in enumerate(uploads):
        data = await upload.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise BadRequest(_too_large(max_upload_bytes), status=413, input="upload")
        try:
            w = float(weights[i]) if i < len(weights) and weights[i].strip() else image_weight
        except ValueError:
            raise BadRequest(f"upload_weight: invalid float value: {weights[i]!r}", input="upload_weight") from None
        parts.append(Part("image", upload.filename or f"upload {i + 1}", w, data=data))
    if not parts:
        raise BadRequest("the query is empty: give text (q=a face), text, image (a URL), like (an id) or an upload")
    limit = _number(fields, "limit", 10, int)
    if limit > MAX_LIMIT:
        raise BadRequest(f"limit must be at most {MAX_LIMIT} (got {limit}); page with offset", input="limit")
    try:
        factors = tuple(parse_modifier(s) for s in _texts(fields, "multiply_score_by"))
        addends = tuple(parse_modifier(s) for s in _texts(fields, "add_to_score"))
    except QueryError as exc:
        raise BadRequest(str(exc), input="modifiers") from None
    return Query(
        parts=tuple(parts),
        space=_choice(fields, "space", SPACES, "image"),  # type: ignore[arg-type]
        image_space_weight=_number(fields, "image_space_weight", 1.0),
        description_space_weight=_number(fields, "description_space_weight", 1.0),
        filter=_one(fields, "filter") or None,
        limit=limit,
        offset=_number(fields, "offset", 0, int),
        include_flagged=_flag(fields, "include_flagged"),
        mode=_choice(fields, "mode", MODES, "vector"),  # type: ignore[arg-type]
        alpha=_number(fields, "alpha", 0.5),
        rrf_k=_number(fields, "rrf_k", float(RRF_K)),
        multiply_score_by=factors,
        add_to_score=addends,
    )


def _too_large(cap: int) -> str:
    size = f"{cap / 2**20:g} MiB" if cap >= 2**20 else f"{cap / 1024:g} KiB"
    return f"upload too large: over the {size} cap (hotdog serve --max-upload-mb)"


async def _capped_form(request: Request, max_upload_bytes: int) -> FormData:
    """The request's form, refusing a body over the cap before it is all read (413).

    The body may exceed the upload cap by what form fields and multipart framing add around it.
    """
    cap = max_upload_bytes + 256 * 1024
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise BadRequest(_too_large(max_upload_bytes), status=413, input="upload")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BadRequest(_too_large(max_upload_bytes), status=413, input="upload")
        chunks.append(chunk)
    body = b"".join(chunks)

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=16, max_fields=200)
    except HTTPException as exc:  # a malformed multipart body
        raise BadRequest(f"the form could not be read: {exc.detail}") from None


def hit_json(hit: Any) -> dict[str, Any]:
    """A hit as the API returns it: the Python API's ``to_dict()`` plus the URLs the page shows."""
    ref = quote(hit.id, safe="")
    return {**hit.to_dict(), "thumbnail": f"/thumb/{ref}", "image": f"/image/{ref}"}


# -- the app --------------------------------------------------------------------------------------


def create_app(
    searcher: Searcher, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, blas_threads: int | None = 1
) -> Starlette:
    """The app over an open searcher (the caller owns it: ``hotdog serve`` closes it on exit).

    ``blas_threads`` caps the process's BLAS threads: concurrent requests are the server's
    parallelism, and a multi-threaded matrix-vector product per request makes the threads fight
    (8 concurrent hybrid queries over 100k vectors on two cores: 34 requests/s with BLAS's own
    threads, 178 with one each). None leaves BLAS as it is.
    """
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=blas_threads, user_api="blas")
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    home = searcher.store.root.resolve()

    @lru_cache(maxsize=4096)
    def thumbnail(image_id: str, size: int) -> bytes | None:
        path = searcher.path_of(image_id)
        return None if path is None else thumbnail_png(path, size)

    async def page(request: Request) -> Response:
        config = {
            "modes": list(MODES),
            "spaces": list(SPACES),
            "numeric_fields": searcher.numeric_fields(),
            "fields": searcher.columns,
            "rrf_k": RRF_K,
            "max_limit": MAX_LIMIT,
            "max_upload_bytes": max_upload_bytes,
        }
        context = {
            "images": len(searcher.ids),
            "home": str(home),
            "config": config,
            "fields": sorted(searcher.columns),
            "numeric_fields": config["numeric_fields"],
        }
        return templates.TemplateResponse(request, "index.html", context)

    async def api_search(request: Request) -> Response:
        try:
            if request.method == "POST":
                fields: FormData | QueryParams = await _capped_form(request, max_upload_bytes)
            else:
                fields = request.query_params
            query = await query_from_fields(fields, max_upload_bytes)
            hits = await run_in_threadpool(searcher.search, query)
        except BadRequest as exc:
            return _error(str(exc), exc.status, exc.input, exc.position)
        except QueryError as exc:
            return _error(str(exc), 400, exc.input, exc.position)
        return JSON(
            {
                "hits": [hit_json(h) for h in hits],
                "count": len(hits),
                "offset": query.offset,
                "limit": query.limit,
                "mode": query.mode,
                "space": query.space,
            }
        )

    def _known(image_id: str) -> None:
        try:
            searcher.position_of(image_id)
        except QueryError as exc:
            raise BadRequest(str(exc), status=404) from None

    async def thumb(request: Request) -> Response:
        image_id = request.path_params["image_id"]
        try:
            size = int(request.query_params.get("size", "256"))
        except ValueError:
            return _error(f"size: invalid int value: {request.query_params.get('size')!r}")
        if size not in THUMB_SIZES:
            return _error(f"size must be one of {', '.join(map(str, THUMB_SIZES))} (got {size})")
        try:
            _known(image_id)
        except BadRequest as exc:
            return _error(str(exc), exc.status)
        png = await run_in_threadpool(thumbnail, image_id, size)
        if png is None:
            return _error(f"image {image_id} can no longer be read from its file", 404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def image(request: Request) -> Response:
        image_id = request.path_params["image_id"]
        try:
            _known(image_id)
        except BadRequest as exc:
            return _error(str(exc), exc.status)
        path = searcher.path_of(image_id)
        resolved = Path(path).resolve() if path else None
        if resolved is None or not resolved.is_relative_to(home):
            return _error(
                f"image {image_id} lives outside HOTDOG_HOME ({home}); only its thumbnail is served", status=404
            )
        if not resolved.is_file():
            return _error(f"image {image_id} can no longer be read from its file", 404)
        return FileResponse(resolved)

    async def not_found(request: Request, exc: Exception) -> Response:
        detail = getattr(exc, "detail", "not found")
        return _error(f"{request.url.path}: {detail}", getattr(exc, "status_code", 404))

    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("hotdog serve: %s %s failed", request.method, request.url.path)
        return _error(f"internal error ({type(exc).__name__}); the server log has the details", 500)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/api/search", api_search, methods=["GET", "POST"]),
        Route("/thumb/{image_id}", thumb, methods=["GET"]),
        Route("/image/{image_id}", image, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    handlers: dict[Any, Callable] = {HTTPException: not_found, Exception: internal}
    return Starlette(routes=routes, exception_handlers=handlers)
