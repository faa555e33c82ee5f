"""Pictures made for people: contact sheets shown in the Dagster UI and in reports."""

from __future__ import annotations

import math

from PIL import Image


def contact_sheet(images: list[Image.Image], columns: int = 8, cell: int = 96) -> Image.Image:
    """Tile images into one picture, so a run's metadata can show what it drew or flagged."""
    rows = max(1, math.ceil(len(images) / columns))
    sheet = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))
    for i, im in enumerate(images):
        thumb = im.convert("RGB").copy()
        thumb.thumbnail((cell - 4, cell - 4))
        sheet.paste(thumb, ((i % columns) * cell + 2, (i // columns) * cell + 2))
    return sheet
