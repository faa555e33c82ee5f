"""A self-contained HTML gallery of search hits: thumbnails inlined, so the page travels alone."""

from __future__ import annotations

import html
import io
from pathlib import Path

from hotdog_dagster.core.io.decode import ImageRejected, decode
from hotdog_dagster.core.io.store import atomic_path
from hotdog_dagster.core.search.engine import Hit

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.2rem} .q{color:#555;font-family:monospace;white-space:pre-wrap}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;font-size:.8rem}
.card img{width:100%;height:auto;image-rendering:auto;border-radius:4px;background:#eee}
.score{font-weight:600} .id{font-family:monospace;color:#777;word-break:break-all}
.missing{height:160px;display:flex;align-items:center;justify-content:center;background:#eee;color:#999}
"""


def thumbnail_data_uri(path: str, size: int = 200) -> str | None:
    """A small inline PNG of an image, or None when the file cannot be read any more."""
    import base64

    try:
        img = decode(Path(path).read_bytes()).image
    except (OSError, ImageRejected):
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_gallery(hits: list[Hit], out: Path, title: str, shown_columns: tuple[str, ...] = ()) -> Path:
    """Write the page atomically; each card shows the rank, score, id, caption and chosen columns."""
    cards = []
    for rank, hit in enumerate(hits, start=1):
        uri = thumbnail_data_uri(hit.path)
        img = f'<img src="{uri}" alt="{html.escape(hit.id)}">' if uri else '<div class="missing">image unreadable</div>'
        extra = "".join(
            f"<div>{html.escape(c)}: {html.escape(_fmt(hit.columns.get(c)))}</div>"
            for c in shown_columns
            if c in hit.columns
        )
        caption = hit.columns.get("caption")
        cards.append(
            f'<div class="card">{img}<div class="score">#{rank} · {hit.score:.4f}</div>'
            f'<div class="id">{html.escape(hit.id)}</div>'
            + (f"<div>{html.escape(str(caption))}</div>" if caption else "")
            + extra
            + "</div>"
        )
    body = "".join(cards) or "<p>No hits.</p>"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>hotdog search</h1><div class='q'>{html.escape(title)}</div>"
        f"<p>{len(hits)} hit(s)</p><div class='grid'>{body}</div></body></html>"
    )
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
