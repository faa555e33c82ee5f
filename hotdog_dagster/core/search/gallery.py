"""A self-contained HTML gallery of search hits: thumbnails inlined, so the page travels alone.

The page is a Jinja2 template (``templates/gallery.html.j2``) with autoescaping on, so captions,
ids and column values can hold any text without breaking the markup.
"""

from __future__ import annotations

import base64
import io
from functools import lru_cache
from pathlib import Path

import jinja2

from hotdog_dagster.core.io.decode import ImageRejected, decode
from hotdog_dagster.core.io.store import atomic_path
from hotdog_dagster.core.search.engine import Hit

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def thumbnail_png(path: str, size: int = 200) -> bytes | None:
    """A small PNG of an image file, decoded by the one decoder, or None when it cannot be read any more."""
    try:
        img = decode(Path(path).read_bytes(), draft_size=size).image
    except (OSError, ImageRejected):
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_data_uri(path: str, size: int = 200) -> str | None:
    """A small inline PNG of an image, or None when the file cannot be read any more."""
    png = thumbnail_png(path, size)
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


def render_gallery(hits: list[Hit], title: str, shown_columns: tuple[str, ...] = ()) -> str:
    """The page as text; each card shows the rank, score, id, caption and chosen columns."""
    cards = [
        {
            "rank": rank,
            "score": hit.score,
            "id": hit.id,
            "uri": thumbnail_data_uri(hit.path),
            "caption": hit.columns.get("caption"),
            "extra": [(c, _fmt(hit.columns.get(c))) for c in shown_columns if c in hit.columns],
        }
        for rank, hit in enumerate(hits, start=1)
    ]
    return _environment().get_template("gallery.html.j2").render(title=title, cards=cards)


def write_gallery(hits: list[Hit], out: Path, title: str, shown_columns: tuple[str, ...] = ()) -> Path:
    """Write the page atomically."""
    page = render_gallery(hits, title, shown_columns)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
