"""The one image decoder: bytes in, an RGB picture or a reason it could not be read.

Real folders hold everything: 16-bit PNGs, CMYK JPEGs, palette GIFs, rotated phone photos,
truncated downloads, text files named ``.jpg`` and decompression bombs. Ingest, embedding and
search all decode through here so an image means the same pixels everywhere, and a failure is a
sentence a person can act on rather than a traceback.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Formats we accept (Pillow's names); MPO is what some cameras call a JPEG.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 64_000_000
#: Files (and zip members) larger than this are not read into memory at ingest.
DEFAULT_MAX_FILE_BYTES = 1 << 30
#: The longest side may be at most this many times the shorter one. CLIP-style preprocessing resizes
#: the *shorter* side to the model's input size before cropping, so a 100000x1 strip (a 300-byte
#: file) would become a 6,400,000x64 picture at 64 px (2.4 GB of memory) and 22,400,000x224 at
#: 224 px: one tiny file could take down an embedding worker or the search server. Panoramas stay
#: well under this.
MAX_ASPECT_RATIO = 50.0


#: Stable reason codes: counts per reason are grouped by these, never by parsing the message.
#: ``changed``: the file changed or was replaced while it was being read (taken again on a rerun);
#: ``too_large``: more bytes than the ingest cap (a zip bomb's member, a stray disk image).
REJECT_CODES = (
    "empty",
    "unsupported_format",
    "too_many_pixels",
    "no_pixels",
    "extreme_aspect",
    "not_an_image",
    "corrupt",
    "unreadable",
    "changed",
    "too_large",
)


class ImageRejected(Exception):
    """A file that is not a usable image; ``str(exc)`` is the message, ``code`` one of REJECT_CODES."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    format: str
    mode: str  # the mode the file was stored in, before conversion
    width: int
    height: int


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> DecodedImage:
    """Decode ``data`` to RGB, or raise :class:`ImageRejected` saying why not.

    ``draft_size`` lets a JPEG decode at a reduced DCT scale that still covers that many pixels on
    its shorter side: a model that looks at 224 pixels need not decode 4000. Ingest decodes in full
    (its statistics and hashes describe the real file); embedding passes the model's input size.
    """
    if len(data) == 0:
        raise ImageRejected("empty file (0 bytes)", "empty")
    _allow_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in SUPPORTED_FORMATS:
                raise ImageRejected(
                    f"unsupported image format {fmt}; supported: {', '.join(sorted(SUPPORTED_FORMATS))}",
                    "unsupported_format",
                )
            w, h = img.size
            if w * h > max_pixels:
                raise ImageRejected(
                    f"declared size {w}x{h} exceeds the pixel limit of {max_pixels:,} (raise max_pixels to accept it)",
                    "too_many_pixels",
                )
            if w == 0 or h == 0:
                raise ImageRejected(f"declared size {w}x{h} has no pixels", "no_pixels")
            if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
                raise ImageRejected(
                    f"declared size {w}x{h} is more than {MAX_ASPECT_RATIO:g} times as long as it is wide "
                    "(resizing its shorter side for the model would take gigabytes)",
                    "extreme_aspect",
                )
            img.seek(0)  # first frame of an animation
            if draft_size and fmt in ("JPEG", "MPO"):
                scale = min(w, h) / draft_size
                if scale >= 2:
                    img.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
            img.load()
            mode = img.mode
            img = ImageOps.exif_transpose(img) or img
            rgb = to_rgb(img)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not a recognised image (the bytes match no image format)", "not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(
            f"declared size exceeds the pixel limit of {max_pixels:,} (decompression bomb guard: {exc})",
            "too_many_pixels",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"truncated or corrupt image data ({type(exc).__name__}: {exc})", "corrupt") from None
    return DecodedImage(image=rgb, format=fmt, mode=mode, width=rgb.width, height=rgb.height)


def _allow_pixels(max_pixels: int) -> None:
    """Let ``max_pixels`` decide: Pillow's own global bomb check runs inside ``Image.open``, before ours,
    so a limit above Pillow's (about 89M pixels) would otherwise be refused anyway. Only ever raised."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and max_pixels > limit:
        Image.MAX_IMAGE_PIXELS = max_pixels


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping high bit depths or blackening alpha."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr8 = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def content_hash(data: bytes) -> str:
    """Hash of the file's bytes: equal for byte-identical copies."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def pixel_hash(img: Image.Image) -> str:
    """Hash of the decoded pixels: equal for a PNG and its lossless re-save."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def luminance_stats(img: Image.Image) -> tuple[float, float]:
    """Mean and standard deviation of luminance (0-255): what blank-frame detection reads."""
    lum = np.asarray(img.convert("L"), dtype=np.float32)
    return float(lum.mean()), float(lum.std())
