"""Drawn sketches with planted copies, shared by the cleaning benchmarks.

A copy is a re-encode (JPEG, quality 50-95), a resize (0.5-0.9x) or a crop (each side cut by up to
``max_crop`` of the frame, drawn independently); every tenth original also gets a chain: a resize,
a JPEG of the resize and a crop of that JPEG. Black frames are never originals (cleaning leaves
blanks out of duplicate search).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hotdog_dagster.core.model import sketch

KINDS = ("jpeg", "resize", "crop")


@dataclass(frozen=True)
class Copy:
    image: Image.Image
    kind: str  # jpeg, resize, crop, chain_a, chain_b, chain_c
    parent: int  # -1: the original; k: the k-th copy of the same original (a chain link)


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def resize(img: Image.Image, factor: float) -> Image.Image:
    return img.resize((max(8, round(img.width * factor)), max(8, round(img.height * factor))), Image.Resampling.LANCZOS)


def crop(img: Image.Image, cuts: np.ndarray) -> Image.Image:
    """``cuts``: fractions of the frame cut off the left, top, right and bottom."""
    w, h = img.size
    return img.crop((round(cuts[0] * w), round(cuts[1] * h), w - round(cuts[2] * w), h - round(cuts[3] * h)))


def copies_of(img: Image.Image, number: int, seed: int, max_crop: float) -> list[Copy]:
    """The planted copies of the ``number``-th original (its kind cycles; every tenth has a chain too)."""
    rng = np.random.default_rng([seed, number, 7])
    kind = KINDS[number % len(KINDS)]
    if kind == "jpeg":
        out = [Copy(jpeg(img, int(rng.integers(50, 96))), "jpeg", -1)]
    elif kind == "resize":
        out = [Copy(resize(img, float(rng.uniform(0.5, 0.9))), "resize", -1)]
    else:
        out = [Copy(crop(img, rng.uniform(0, max_crop, size=4)), "crop", -1)]
    if number % 10 == 0:
        a = resize(img, float(rng.uniform(0.6, 0.9)))
        b = jpeg(a, int(rng.integers(60, 90)))
        c = crop(b, rng.uniform(0, max_crop, size=4))
        first = len(out)
        out += [Copy(a, "chain_a", -1), Copy(b, "chain_b", first), Copy(c, "chain_c", first + 1)]
    return out


def copy_count(number: int) -> int:
    """How many copies :func:`copies_of` makes for the ``number``-th original."""
    return 1 + (3 if number % 10 == 0 else 0)


def non_black(seed: int, count: int, start: int = 0) -> list[int]:
    """Indices of a seed's stream (from ``start``) whose class is not a black frame, ``count`` of them."""
    out: list[int] = []
    chunk = start
    while len(out) < count:
        labels = sketch.class_sequence(seed, 4096, start=chunk)
        out += [chunk + i for i, label in enumerate(labels) if label != "black"]
        chunk += 4096
    return out[:count]
