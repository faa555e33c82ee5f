"""Draw a walk: GIF and MP4 of the frames in order, a contact sheet, and a 2-D map with the path.

The animations are what people watch; the contact sheet (every n-th frame) and the map are what the
Dagster UI shows inline. The map projects the filtered set's vectors onto their first two principal
components (an eigendecomposition of the d x d covariance, so 100k vectors cost one small matrix
product) and draws the walk over them as a line from blue (start) to red (end). Every file is
written under a temporary name and renamed into place.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hotdog_dagster.core.io.media import contact_sheet_file
from hotdog_dagster.core.io.store import atomic_path

SHEET_FRAMES = 64
MAP_SIZE = 768
BACKGROUND = (24, 24, 24)


@dataclass(frozen=True)
class Rendered:
    """The files written and the Markdown previews for a run's metadata."""

    gif: Path
    mp4: Path
    sheet: Path
    map: Path
    frames: int
    sheet_markdown: str
    map_markdown: str
    seconds: float


def frame(path: str | None, size: int, caption: str | None = None) -> np.ndarray:
    """One ``size`` x ``size`` RGB frame: the image fitted on a dark square, the caption along the bottom.

    An unreadable file (deleted since ingest) becomes a dark frame, so the frame count stays one per step.
    """
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    if path:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                scale = size / max(im.size)
                fitted = im.resize(
                    (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS
                )
            canvas.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
        except OSError:
            pass
    if caption:
        draw = ImageDraw.Draw(canvas, "RGBA")
        font = ImageFont.load_default(size=max(10, size // 16))
        box = draw.textbbox((0, 0), caption, font=font)
        band = box[3] - box[1] + size // 32 + 4
        draw.rectangle((0, size - band, size, size), fill=(0, 0, 0, 170))
        draw.text((size // 32 + 2, size - band + 2 - box[1] + size // 64), caption, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _frames(paths: Sequence[str | None], size: int, captions: Sequence[str | None] | None) -> Iterator[np.ndarray]:
    for i, path in enumerate(paths):
        yield frame(path, size, captions[i] if captions is not None else None)


def write_gif(
    paths: Sequence[str | None], out: Path, size: int, fps: float, captions: Sequence[str | None] | None = None
) -> Path:
    """An animated GIF, looping, one frame per step."""
    import imageio.v3 as iio

    frames = np.stack(list(_frames(paths, size, captions)))
    with atomic_path(out) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", plugin="pillow", duration=max(20, round(1000 / fps)), loop=0)
    return out


def write_mp4(
    paths: Sequence[str | None], out: Path, size: int, fps: float, captions: Sequence[str | None] | None = None
) -> Path:
    """An H.264 MP4 (yuv420p, plays in browsers), streamed frame by frame through imageio's ffmpeg."""
    import imageio.v3 as iio

    with atomic_path(out) as tmp, iio.imopen(tmp, "w", plugin="FFMPEG", extension=".mp4") as file:
        writer = file.legacy_get_writer(
            fps=fps,
            codec="libx264",
            quality=7,
            macro_block_size=16,
            ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart", "-f", "mp4"],  # -f: the temporary name has no .mp4
        )
        try:
            for f in _frames(paths, size, captions):
                writer.append_data(f)
        finally:
            writer.close()
    return out


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """Coordinates on the first two principal components (centred; a d x d eigendecomposition)."""
    x = np.asarray(vectors, dtype=np.float64)
    if len(x) == 0:
        return np.zeros((0, 2))
    x = x - x.mean(axis=0)
    _, vecs = np.linalg.eigh(x.T @ x)
    pcs = vecs[:, ::-1][:, :2]
    coords = x @ pcs
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


def draw_map(vectors: np.ndarray, walk: np.ndarray, title: str = "", size: int = MAP_SIZE) -> Image.Image:
    """The filtered set as grey dots on its principal plane, and the walk (rows of ``vectors``) as a line."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    coords = project_2d(vectors)
    margin = 24
    if len(coords):
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        xy = margin + (coords - lo) / span * (size - 2 * margin)
        xy[:, 1] = size - xy[:, 1]  # y up
        r = 2 if len(xy) < 20_000 else 1
        for x, y in xy:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(190, 190, 190))
        path = xy[np.asarray(walk, dtype=np.int64)]
        steps = max(1, len(path) - 1)
        for i in range(len(path) - 1):
            f = i / steps
            colour = (round(40 + 215 * f), 60, round(230 - 200 * f))
            draw.line((*path[i], *path[i + 1]), fill=colour, width=2)
        if len(path):
            (sx, sy), (ex, ey) = path[0], path[-1]
            draw.ellipse((sx - 6, sy - 6, sx + 6, sy + 6), outline=(0, 150, 0), width=3)
            draw.rectangle((ex - 5, ey - 5, ex + 5, ey + 5), outline=(200, 0, 0), width=3)
    font = ImageFont.load_default(size=14)
    draw.text((margin, 4), title, fill=(0, 0, 0), font=font)
    return img


def save_png(image: Image.Image, out: Path, alt: str) -> str:
    """Write ``image`` to ``out`` atomically; return Markdown that shows a thumbnail inline (data URI)."""
    with atomic_path(out) as tmp:
        image.save(tmp, format="PNG")
    thumb = image.copy()
    thumb.thumbnail((768, 768))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})\n\n`{out}`"


def render(
    paths: Sequence[str | None],
    out_dir: Path,
    *,
    captions: Sequence[str | None] | None = None,
    vectors: np.ndarray | None = None,
    walk_rows: np.ndarray | None = None,
    size: int = 256,
    fps: float = 12.0,
    sheet_every: int = 0,
    title: str = "",
) -> Rendered:
    """GIF, MP4, contact sheet and map of a walk whose frames are the image files ``paths``, in order.

    ``vectors`` are the filtered set's vectors and ``walk_rows`` the frames' rows in them (for the
    map; without them the map shows the frames alone).
    """
    if not len(paths):
        raise ValueError("a walk without frames has nothing to render")
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    gif = write_gif(paths, out_dir / "walk.gif", size, fps, captions)
    mp4 = write_mp4(paths, out_dir / "walk.mp4", size, fps, captions)
    every = sheet_every or max(1, -(-len(paths) // SHEET_FRAMES))
    sheet_md = contact_sheet_file([p for p in paths[::every] if p], out_dir / "sheet.png")
    if vectors is None or walk_rows is None:  # no filtered set at hand: the map of a straight line
        vectors, walk_rows = np.eye(len(paths), 2), np.arange(len(paths))
    title = title or f"{len(vectors)} images, walk of {len(paths)} frames"
    map_md = save_png(draw_map(vectors, walk_rows, title), out_dir / "map.png", f"map: {title}")
    return Rendered(
        gif=gif,
        mp4=mp4,
        sheet=out_dir / "sheet.png",
        map=out_dir / "map.png",
        frames=len(paths),
        sheet_markdown=sheet_md,
        map_markdown=map_md,
        seconds=time.perf_counter() - t0,
    )
