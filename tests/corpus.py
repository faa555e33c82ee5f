"""A folder of awkward files, as real image folders hold them, with what the decoder must make of each.

``make_bad_corpus(dir)`` writes the files and returns ``{relative name: expected outcome}``: ``None``
for a file that must be accepted as an image, else a substring of the reason it must be rejected
with. ``CORPUS_MAX_PIXELS`` is the pixel limit the corpus is meant to be decoded with (``big.png``
is cheap to write yet over it). ``zip_corpus`` packs the same files into a zip.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: The ``max_pixels`` to decode the corpus with: ``big.png`` (1200x1000) is over it, the rest under.
CORPUS_MAX_PIXELS = 1_000_000

#: Sizes (width, height) the accepted files must decode to (after EXIF rotation).
EXPECTED_SIZES: dict[str, tuple[int, int]] = {
    "good.jpg": (64, 48),
    "good.png": (64, 48),
    "good.webp": (64, 48),
    "good.bmp": (64, 48),
    "good.tiff": (64, 48),
    "deep16.png": (256, 32),
    "cmyk.jpg": (40, 30),
    "rgba.png": (32, 32),
    "anim.gif": (24, 24),
    "palette.png": (40, 20),
    "grey.png": (30, 20),
    "rotated.jpg": (40, 80),  # stored 80x40 with EXIF orientation 6
    "nested/deeper/inner.png": (16, 16),
    "nested/copy_of_good.png": (64, 48),
}

#: The hidden file the listing must skip.
HIDDEN = ".DS_Store"


def photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A small RGB picture with structure (gradients, a block) and some noise, like a photograph."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1).astype(
        np.float64
    )
    arr[height // 4 : height // 2, width // 4 : width // 2] = rng.integers(0, 256, 3)
    arr += rng.normal(0, 8, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def huge_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG signature and IHDR declaring ``width x height`` RGB, with a tiny IDAT: a bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def make_bad_corpus(dir: Path) -> dict[str, str | None]:  # noqa: A002 - the name the callers use
    """Write the corpus under ``dir``; return ``{relative name: None | expected reason substring}``."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    expected: dict[str, str | None] = {}

    def add(name: str, data: bytes, outcome: str | None) -> None:
        files[name] = data
        expected[name] = outcome

    base = photo(64, 48, seed=1)
    add("good.jpg", encode(base, "JPEG", quality=90), None)
    add("good.png", encode(base, "PNG"), None)
    add("good.webp", encode(base, "WEBP", quality=90), None)
    add("good.bmp", encode(base, "BMP"), None)
    add("good.tiff", encode(base, "TIFF"), None)

    add(
        "corrupt.png",
        np.random.default_rng(7).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
        "not a recognised image",
    )
    big_jpeg = encode(photo(256, 256, seed=2), "JPEG", quality=95)
    add("truncated.jpg", big_jpeg[: len(big_jpeg) // 2], "truncated or corrupt")
    add("empty.jpg", b"", "empty file")
    add(
        "notes.jpg",
        b"these are my shopping notes, not a picture\nbuns, mustard, onions\n" * 4,
        "not a recognised image",
    )

    # 16-bit greyscale spanning the whole 0..65535 range: must be rescaled, not clipped to white.
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (32, 1))
    add("deep16.png", encode(Image.fromarray(ramp), "PNG"), None)

    add("cmyk.jpg", encode(photo(40, 30, seed=3).convert("CMYK"), "JPEG", quality=90), None)

    # Red, left half opaque, right half fully transparent with black colour underneath.
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:, :16] = (200, 20, 20, 255)
    add("rgba.png", encode(Image.fromarray(rgba), "PNG"), None)

    red = Image.new("RGB", (24, 24), (255, 0, 0))
    blue = Image.new("RGB", (24, 24), (0, 0, 255))
    add("anim.gif", encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0), None)

    add(
        "palette.png",
        encode(photo(40, 20, seed=4).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"),
        None,
    )
    add("grey.png", encode(photo(30, 20, seed=5).convert("L"), "PNG"), None)

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    add("rotated.jpg", encode(photo(80, 40, seed=6), "JPEG", quality=90, exif=exif.tobytes()), None)

    add("huge.png", huge_png_header(100_000, 100_000), "pixel limit")
    add("big.png", encode(Image.new("RGB", (1200, 1000), (10, 120, 200)), "PNG"), "pixel limit")

    add("nested/deeper/inner.png", encode(photo(16, 16, seed=8), "PNG"), None)
    add("nested/copy_of_good.png", files["good.png"], None)  # byte-identical copy at another path

    for name, data in files.items():
        path = dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # Hidden files are skipped by listing, so they are not in the expected map.
    (dir / HIDDEN).write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    (dir / "nested" / ".hidden.png").write_bytes(files["good.png"])
    return expected


def zip_corpus(dir: Path, zip_path: Path) -> Path:
    """Pack every file under ``dir`` (hidden ones included, as a Mac would) into ``zip_path``."""
    dir, zip_path = Path(dir), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(dir.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(dir).as_posix())
        zf.writestr("__MACOSX/._good.jpg", b"\x00\x05\x16\x07resource fork")
    return zip_path
