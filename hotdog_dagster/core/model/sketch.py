"""The procedural "hot-dog world": the embedded default's image source.

Real CLIP weights and real photographs cannot be fetched on an offline machine, so the project
draws its own world with known ground truth: one hot dog, two hot dogs, a hamburger, a face, a
black frame, and plain coloured shapes. Every image is a pure function of ``(seed, index)``, so a
batch is reproducible whatever partitioning produced it, and a held-out set is simply another seed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

#: The classes of the world, with their share of a drawn set.
CLASS_WEIGHTS: dict[str, float] = {
    "one_hot_dog": 0.14,
    "two_hot_dogs": 0.14,
    "hamburger": 0.12,
    "face": 0.12,
    "black": 0.08,
    "circle": 0.10,
    "square": 0.10,
    "rectangle": 0.10,
    "framed_circle": 0.10,
}

#: The zero-shot name of each food/face/black class (the seed's label wording).
CLASS_PROMPTS: dict[str, str] = {
    "one_hot_dog": "one hot dog",
    "two_hot_dogs": "two hot dogs",
    "hamburger": "a hamburger",
    "face": "a face",
    "black": "a black image",
}

SHAPES = ("circle", "square", "rectangle", "framed_circle")

#: The plain query wording of each coloured shape; the first caption template of each shape class.
SHAPE_PROMPTS: dict[str, str] = {
    "circle": "a {color} circle",
    "square": "a {color} square",
    "rectangle": "a {color} rectangle",
    "framed_circle": "a {color} circle with a black frame",
}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "blue": (30, 60, 220),
    "green": (30, 170, 50),
    "yellow": (240, 220, 30),
    "orange": (245, 140, 20),
    "purple": (140, 40, 190),
}

_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "grey": (180, 180, 180),
    "beige": (235, 220, 190),
    "light blue": (200, 225, 245),
    "pink": (245, 210, 220),
    "light green": (210, 240, 210),
}

_CAPTIONS: dict[str, tuple[str, ...]] = {
    "one_hot_dog": (
        "one hot dog",
        "a hot dog",
        "a single hot dog",
        "a photo of one hot dog",
        "one hotdog in a bun",
        "a hot dog on a {bg} background",
        "a lone hot dog with mustard",
    ),
    "two_hot_dogs": (
        "two hot dogs",
        "a pair of hot dogs",
        "2 hot dogs",
        "a photo of two hot dogs",
        "two hotdogs side by side",
        "two hot dogs on a {bg} background",
    ),
    "hamburger": (
        "a hamburger",
        "a burger",
        "a photo of a hamburger",
        "a cheeseburger with lettuce",
        "a hamburger on a {bg} background",
    ),
    "face": (
        "a face",
        "a smiling face",
        "a cartoon face",
        "a photo of a face",
        "a face with two eyes and a mouth",
        "a face on a {bg} background",
    ),
    "black": (
        "a black image",
        "an all black frame",
        "a dark empty picture",
        "a black frame with nothing in it",
        "a completely black photo",
    ),
    "circle": (
        "a {color} circle",
        "a {size} {color} circle",
        "a {color} disc on a {bg} background",
        "a photo of a {color} circle",
    ),
    "square": (
        "a {color} square",
        "a {size} {color} square",
        "a {color} square on a {bg} background",
        "a photo of a {color} square",
    ),
    "rectangle": (
        "a {color} rectangle",
        "a {size} {color} rectangle",
        "a wide {color} rectangle on a {bg} background",
        "a photo of a {color} rectangle",
    ),
    "framed_circle": (
        "a {color} circle with a black frame",
        "a {color} circle with a black outline",
        "a {size} {color} circle with a thick black border",
        "a {color} ring-framed circle on a {bg} background",
    ),
}


@dataclass(frozen=True)
class SketchImage:
    """One drawn image and the truth about it."""

    image: Image.Image
    label: str
    color: str | None
    caption: str
    #: "small", "medium" or "large" for plain shapes, else None.
    size: str | None = None
    #: The background's name ("white", "light blue", ...); None for black frames.
    background: str | None = None


def class_sequence(seed: int, count: int, start: int = 0) -> list[str]:
    """Classes of images ``start .. start+count`` of a seed's stream (cheap: nothing is drawn)."""
    return [_pick_class(_rng(seed, i)) for i in range(start, start + count)]


def draw(seed: int, index: int, size: int = 128, label: str | None = None) -> SketchImage:
    """Draw image ``index`` of the stream ``seed``; ``label`` forces the class (for planted sets)."""
    rng = _rng(seed, index)
    drawn_label = _pick_class(rng)
    label = label or drawn_label
    if label not in CLASS_WEIGHTS:
        raise ValueError(f"unknown sketch class {label!r}; choose one of {sorted(CLASS_WEIGHTS)}")
    scale = 4  # draw large and downsample: smooth edges like a photograph, not a pixel map
    canvas_size = size * scale
    bg_name = str(rng.choice(list(_BACKGROUNDS)))
    color: str | None = None
    size_word = ""
    if label == "black":
        img = _black_frame(rng, canvas_size)
    else:
        img = _background(rng, canvas_size, _BACKGROUNDS[bg_name])
        d = ImageDraw.Draw(img)
        if label == "one_hot_dog":
            _hot_dog(d, rng, canvas_size, count=1)
        elif label == "two_hot_dogs":
            _hot_dog(d, rng, canvas_size, count=2)
        elif label == "hamburger":
            _hamburger(d, rng, canvas_size)
        elif label == "face":
            _face(d, rng, canvas_size)
        else:
            color = str(rng.choice(list(COLORS)))
            size_word = _shape(d, rng, canvas_size, label, COLORS[color])
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    if label != "black":
        img = _add_noise(img, rng, sigma=float(rng.uniform(0, 6)))
    template = str(rng.choice(_CAPTIONS[label]))
    caption = captions(label, color, size_word or None, bg_name)[_CAPTIONS[label].index(template)]
    return SketchImage(
        image=img,
        label=label,
        color=color,
        caption=caption,
        size=size_word or None,
        background=None if label == "black" else bg_name,
    )


def captions(
    label: str, color: str | None = None, size: str | None = None, background: str | None = None
) -> tuple[str, ...]:
    """Every wording of one image's caption, so training can show a new phrasing each epoch."""
    out = []
    for template in _CAPTIONS[label]:
        text = template.format(color=color or "", size=size or "", bg=background or "white")
        out.append(_articles(" ".join(text.split())))
    return tuple(out)


def shape_prompt(shape: str, color: str) -> str:
    """The plain query for a coloured shape ("a blue square", "an orange circle with a black frame")."""
    return _articles(SHAPE_PROMPTS[shape].format(color=color))


def _articles(text: str) -> str:
    """Turn "a orange" into "an orange": captions and queries should read the way people type them."""
    return re.sub(r"\ba(?= [aeiou])", "an", text)


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def _pick_class(rng: np.random.Generator) -> str:
    names = list(CLASS_WEIGHTS)
    p = np.array([CLASS_WEIGHTS[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 18) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)  # type: ignore[return-value]


def _background(rng: np.random.Generator, n: int, base: tuple[int, int, int]) -> Image.Image:
    # Every row is one colour, so compute one column and repeat it: the same pixels as filling
    # the whole canvas in float, at a fraction of the cost (drawing is the training-set bottleneck).
    base_arr = np.array(_jitter(rng, base, 12), dtype=np.float32)
    if rng.random() < 0.4:  # a soft vertical gradient
        ramp = np.linspace(-1, 1, n, dtype=np.float32)[:, None] * float(rng.uniform(5, 25))
        column = np.clip(base_arr[None, :] + ramp, 0, 255).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(np.broadcast_to(column[:, None, :], (n, n, 3))), "RGB")
    fill = np.clip(base_arr, 0, 255).astype(np.uint8)
    return Image.new("RGB", (n, n), tuple(int(c) for c in fill))


def _black_frame(rng: np.random.Generator, n: int) -> Image.Image:
    """A safety-filter style black frame: pure black, or near black with sensor-like noise."""
    level = 0 if rng.random() < 0.5 else int(rng.integers(0, 14))
    arr = np.full((n, n, 3), level, dtype=np.float32)
    if rng.random() < 0.6:
        arr += rng.normal(0, float(rng.uniform(0.5, 4.0)), size=(n, n, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _add_noise(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    if sigma < 0.5:
        return img
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, sigma, size=(img.height, img.width, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _rotated_ellipse(
    cx: float, cy: float, rx: float, ry: float, angle: float, steps: int = 48
) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    pts = []
    for k in range(steps):
        t = 2 * math.pi * k / steps
        x, y = rx * math.cos(t), ry * math.sin(t)
        pts.append((cx + x * ca - y * sa, cy + x * sa + y * ca))
    return pts


def _hot_dog(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, count: int) -> None:
    length = n * float(rng.uniform(0.55, 0.8)) / (1.0 if count == 1 else 1.15)
    angle = float(rng.uniform(-0.6, 0.6))
    cx = n / 2 + float(rng.uniform(-0.08, 0.08)) * n
    cy = n / 2 + float(rng.uniform(-0.08, 0.08)) * n
    gap = n * float(rng.uniform(0.2, 0.26))
    centres = (
        [(cx, cy)]
        if count == 1
        else [
            (cx - gap * math.sin(angle) * -1, cy - gap * math.cos(angle)),
            (cx + gap * math.sin(angle) * -1, cy + gap * math.cos(angle)),
        ]
    )
    bun = _jitter(rng, (222, 170, 100))
    sausage = _jitter(rng, (170, 55, 35))
    mustard = _jitter(rng, (240, 200, 20), 10)
    for x, y in centres:
        d.polygon(_rotated_ellipse(x, y, length / 2, length * 0.17, angle), fill=bun)
        d.polygon(_rotated_ellipse(x, y, length * 0.56, length * 0.08, angle), fill=sausage)
        # a mustard zig-zag along the sausage
        pts = []
        for k in range(9):
            t = -0.4 + 0.8 * k / 8
            off = (length * 0.03) * (1 if k % 2 else -1)
            px = x + t * length * math.cos(angle) - off * math.sin(angle)
            py = y + t * length * math.sin(angle) + off * math.cos(angle)
            pts.append((px, py))
        d.line(pts, fill=mustard, width=max(2, n // 90))


def _hamburger(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int) -> None:
    w = n * float(rng.uniform(0.5, 0.75))
    cx = n / 2 + float(rng.uniform(-0.08, 0.08)) * n
    cy = n / 2 + float(rng.uniform(-0.06, 0.06)) * n
    h = w * 0.75
    top, bottom = cy - h / 2, cy + h / 2
    bun = _jitter(rng, (215, 150, 70))
    d.pieslice([cx - w / 2, top, cx + w / 2, top + h * 0.8], 180, 360, fill=bun)
    y = top + h * 0.4
    d.rectangle([cx - w / 2 * 1.05, y, cx + w / 2 * 1.05, y + h * 0.08], fill=_jitter(rng, (60, 170, 40)))
    y += h * 0.08
    d.rectangle([cx - w / 2 * 0.98, y, cx + w / 2 * 0.98, y + h * 0.06], fill=_jitter(rng, (245, 190, 30)))
    y += h * 0.06
    d.rounded_rectangle(
        [cx - w / 2, y, cx + w / 2, y + h * 0.18], radius=int(h * 0.06), fill=_jitter(rng, (100, 50, 25))
    )
    y += h * 0.18
    d.rounded_rectangle([cx - w / 2, y, cx + w / 2, bottom], radius=int(h * 0.08), fill=bun)
    for _ in range(int(rng.integers(4, 9))):  # sesame seeds
        sx = cx + float(rng.uniform(-0.35, 0.35)) * w
        sy = top + h * float(rng.uniform(0.08, 0.3))
        d.ellipse([sx - n * 0.008, sy - n * 0.005, sx + n * 0.008, sy + n * 0.005], fill=(250, 240, 210))


def _face(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int) -> None:
    r = n * float(rng.uniform(0.25, 0.38))
    cx = n / 2 + float(rng.uniform(-0.08, 0.08)) * n
    cy = n / 2 + float(rng.uniform(-0.08, 0.08)) * n
    skin = _jitter(rng, [(250, 215, 180), (225, 175, 130), (170, 120, 80), (110, 75, 50)][int(rng.integers(0, 4))])
    d.ellipse([cx - r, cy - r * 1.15, cx + r, cy + r * 1.15], fill=skin, outline=(60, 40, 30), width=max(2, n // 120))
    eye = r * 0.14
    for sx in (-1, 1):
        ex, ey = cx + sx * r * 0.4, cy - r * 0.3
        d.ellipse([ex - eye, ey - eye, ex + eye, ey + eye], fill=(255, 255, 255))
        d.ellipse([ex - eye / 2, ey - eye / 2, ex + eye / 2, ey + eye / 2], fill=(30, 30, 30))
    d.arc([cx - r * 0.5, cy - r * 0.1, cx + r * 0.5, cy + r * 0.6], 20, 160, fill=(150, 40, 40), width=max(3, n // 60))
    d.line([(cx, cy - r * 0.15), (cx - r * 0.08, cy + r * 0.15)], fill=(90, 60, 40), width=max(2, n // 120))


def _shape(d: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, shape: str, rgb: tuple[int, int, int]) -> str:
    frac = float(rng.uniform(0.25, 0.7))
    size_word = "small" if frac < 0.4 else ("large" if frac > 0.55 else "medium")
    half = n * frac / 2
    cx = n / 2 + float(rng.uniform(-1, 1)) * (n / 2 - half) * 0.6
    cy = n / 2 + float(rng.uniform(-1, 1)) * (n / 2 - half) * 0.6
    fill = _jitter(rng, rgb, 15)
    if shape == "circle":
        d.ellipse([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif shape == "square":
        d.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif shape == "rectangle":
        hh = half * float(rng.uniform(0.35, 0.55))
        d.rectangle([cx - half, cy - hh, cx + half, cy + hh], fill=fill)
    elif shape == "framed_circle":
        border = max(3, int(half * float(rng.uniform(0.15, 0.25))))
        d.ellipse([cx - half, cy - half, cx + half, cy + half], fill=fill, outline=(0, 0, 0), width=border)
    return size_word
