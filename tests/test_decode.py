"""The one image decoder: what it accepts, what it refuses and why, and the hashes it feeds cleaning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus import CORPUS_MAX_PIXELS, EXPECTED_SIZES, encode, huge_png_header, make_bad_corpus, photo
from PIL import Image

from hotdog_dagster.core.io.decode import (
    ImageRejected,
    content_hash,
    decode,
    luminance_stats,
    pixel_hash,
    to_rgb,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, make_bad_corpus(root)


def _decode_file(root: Path, name: str):
    return decode((root / name).read_bytes(), max_pixels=CORPUS_MAX_PIXELS)


def test_corpus_has_both_outcomes(corpus):
    _, expected = corpus
    assert sum(v is None for v in expected.values()) >= 12
    assert sum(v is not None for v in expected.values()) >= 6
    assert set(EXPECTED_SIZES) == {k for k, v in expected.items() if v is None}


def test_every_accepted_file_decodes_to_rgb_at_its_size(corpus):
    root, expected = corpus
    for name, outcome in expected.items():
        if outcome is not None:
            continue
        decoded = _decode_file(root, name)
        assert decoded.image.mode == "RGB", name
        assert (decoded.width, decoded.height) == EXPECTED_SIZES[name], name
        assert decoded.image.size == EXPECTED_SIZES[name], name


def test_every_bad_file_is_rejected_with_its_reason(corpus):
    root, expected = corpus
    for name, outcome in expected.items():
        if outcome is None:
            continue
        with pytest.raises(ImageRejected) as info:
            _decode_file(root, name)
        assert outcome in str(info.value), (name, str(info.value))


def test_formats_and_source_modes_are_reported(corpus):
    root, _ = corpus
    assert _decode_file(root, "good.webp").format == "WEBP"
    assert _decode_file(root, "good.tiff").format == "TIFF"
    assert _decode_file(root, "cmyk.jpg").mode == "CMYK"
    assert _decode_file(root, "deep16.png").mode.startswith("I")
    assert _decode_file(root, "palette.png").mode == "P"
    assert _decode_file(root, "grey.png").mode == "L"


def test_16_bit_png_is_rescaled_not_clipped_to_white(corpus):
    root, _ = corpus
    img = _decode_file(root, "deep16.png").image
    mean, std = luminance_stats(img)
    assert 100 < mean < 155, mean  # the ramp spans 0..65535: mid-grey on average, not 255
    assert std > 50
    arr = np.asarray(img)
    assert arr[:, 0].max() <= 2 and arr[:, -1].min() >= 253  # both ends of the range survive


def test_rgba_transparency_is_composited_on_white_not_black(corpus):
    root, _ = corpus
    arr = np.asarray(_decode_file(root, "rgba.png").image)
    assert (arr[:, 20:] == 255).all()  # transparent half: white, although its colour bytes are black
    assert tuple(arr[5, 5]) == (200, 20, 20)  # opaque half unchanged


def test_palette_with_transparency_is_composited():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    pal.paste(1, (0, 0, 4, 8))
    decoded = decode(encode(pal, "PNG", transparency=0))
    arr = np.asarray(decoded.image)
    assert tuple(arr[0, 0]) == (255, 0, 0)
    assert tuple(arr[0, 7]) == (255, 255, 255)


def test_animated_gif_gives_its_first_frame(corpus):
    root, _ = corpus
    arr = np.asarray(_decode_file(root, "anim.gif").image).reshape(-1, 3)
    assert (arr == (255, 0, 0)).all(axis=1).all()


def test_cmyk_jpeg_keeps_its_colours(corpus):
    root, _ = corpus
    cmyk = np.asarray(_decode_file(root, "cmyk.jpg").image, dtype=np.float64)
    ref = np.asarray(photo(40, 30, seed=3), dtype=np.float64)
    assert np.abs(cmyk - ref).mean() < 20  # not inverted, not washed out


def test_exif_orientation_is_applied(corpus):
    root, _ = corpus
    raw = Image.open(root / "rotated.jpg")
    assert raw.size == (80, 40)
    decoded = _decode_file(root, "rotated.jpg")
    assert (decoded.width, decoded.height) == (40, 80)
    # Orientation 6 means "rotate 90 degrees clockwise to display": the stored top-left corner
    # (dark in the gradient photo) ends up top-right.
    ref = np.asarray(photo(80, 40, seed=6).transpose(Image.Transpose.ROTATE_270), dtype=np.float64)
    assert np.abs(np.asarray(decoded.image, dtype=np.float64) - ref).mean() < 12


def test_huge_declared_size_is_refused_before_decoding():
    with pytest.raises(ImageRejected, match="pixel limit"):
        decode(huge_png_header(100_000, 100_000))
    with pytest.raises(ImageRejected, match="pixel limit"):
        decode(huge_png_header(3_000, 2_000), max_pixels=5_000_000)


def test_max_pixels_above_pillows_own_limit_is_honoured(monkeypatch):
    """Pillow checks its global limit inside ``Image.open``; ``max_pixels`` must still be the one that decides."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    data = encode(photo(200, 100), "PNG")  # 20,000 pixels: over Pillow's (patched) limit, under ours
    assert decode(data, max_pixels=50_000).image.size == (200, 100)
    with pytest.raises(ImageRejected, match="pixel limit"):
        decode(encode(photo(300, 300), "PNG"), max_pixels=50_000)


def test_zero_sized_and_unsupported_formats_are_refused():
    with pytest.raises(ImageRejected, match="unsupported image format"):
        decode(encode(photo(16, 16), "PPM"))
    with pytest.raises(ImageRejected, match="empty file"):
        decode(b"")


def test_to_rgb_handles_other_modes():
    assert to_rgb(Image.new("LA", (4, 4), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("1", (4, 4), 1)).getpixel((0, 0)) == (255, 255, 255)
    f = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32) * 255)
    assert f.mode == "F"
    assert to_rgb(f).getpixel((0, 0)) == (128, 128, 128)
    rgb = Image.new("RGB", (2, 2))
    assert to_rgb(rgb) is rgb


def test_content_hash_equal_for_identical_bytes(corpus):
    root, _ = corpus
    a = (root / "good.png").read_bytes()
    b = (root / "nested" / "copy_of_good.png").read_bytes()
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash((root / "good.jpg").read_bytes())
    assert content_hash(a) != content_hash(a + b"\x00")


def test_pixel_hash_survives_a_lossless_resave_content_hash_does_not():
    img = photo(48, 32, seed=11)
    png_a = encode(img, "PNG", compress_level=1)
    png_b = encode(img, "PNG", compress_level=9, optimize=True)
    assert png_a != png_b
    assert content_hash(png_a) != content_hash(png_b)
    assert pixel_hash(decode(png_a).image) == pixel_hash(decode(png_b).image)
    assert pixel_hash(decode(encode(img, "BMP")).image) == pixel_hash(decode(png_a).image)
    # same bytes per row but another shape, and one changed pixel: different hashes
    assert pixel_hash(img) != pixel_hash(Image.frombytes("RGB", (32, 48), img.tobytes()))
    changed = img.copy()
    changed.putpixel((0, 0), (1, 2, 3))
    assert pixel_hash(changed) != pixel_hash(img)


def test_luminance_stats_of_a_black_frame_and_a_flat_grey():
    mean, std = luminance_stats(Image.new("RGB", (64, 64), (0, 0, 0)))
    assert mean == 0.0 and std == 0.0
    mean, std = luminance_stats(decode(encode(Image.new("RGB", (32, 32), (128, 128, 128)), "PNG")).image)
    assert mean == pytest.approx(128.0) and std == pytest.approx(0.0)
    half = np.zeros((10, 10, 3), np.uint8)
    half[:, 5:] = 255
    mean, std = luminance_stats(Image.fromarray(half))
    assert mean == pytest.approx(127.5) and std == pytest.approx(127.5)
