"""Pictures made for people: contact sheets shown in the Dagster UI and in reports."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

from PIL import Image

from hotdog_dagster.core.io.store import atomic_path


def contact_sheet(images: list[Image.Image], columns: int = 8, cell: int = 96) -> Image.Image:
    """Tile images into one picture, so a run's metadata can show what it drew or flagged."""
    rows = max(1, math.ceil(len(images) / columns))
    sheet = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))
    for i, im in enumerate(images):
        thumb = im.convert("RGB").copy()
        thumb.thumbnail((cell - 4, cell - 4))
        sheet.paste(thumb, ((i % columns) * cell + 2, (i // columns) * cell + 2))
    return sheet


def contact_sheet_file(paths: list[str], out: Path, columns: int = 8, cell: int = 96) -> str:
    """Write a contact sheet of ``paths`` to ``out`` and return Markdown that shows it inline.

    The Dagster UI renders Markdown metadata, and a data-URI image needs no file server, so the
    sheet is visible in the run's metadata wherever the UI runs; the PNG stays under media/ too.
    """
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        except OSError:
            continue  # a file that vanished since ingest: the sheet shows the rest
    sheet = contact_sheet(images, columns=columns, cell=cell)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    thumb = sheet.copy()
    thumb.thumbnail((768, 768))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return f"![contact sheet of {len(images)} images](data:image/png;base64,{data})\n\n`{out}`"
