"""The split preprocess gives the model what open_clip's own Compose gives it, within two grey levels."""

from __future__ import annotations

import pickle

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.names import RANDOM_SKETCH_MODEL
from hotdog_dagster.core.model.preprocess import PilSteps, TensorSteps, from_compose
from hotdog_dagster.core.model.sketch import draw

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def pictures() -> list[Image.Image]:
    """Odd sizes and aspect ratios, both up- and downscaling, so crops and rounding are exercised."""
    out = []
    for i, (w, h) in enumerate([(256, 256), (301, 197), (97, 150), (640, 480), (64, 64), (333, 333)]):
        out.append(draw(11, i, size=max(w, h)).image.resize((w, h), Image.Resampling.BICUBIC))
    return out


def levels(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference between two normalised batches, in 0-255 pixel levels."""
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return float(((a - b) * std * 255).abs().max())


@pytest.mark.parametrize(
    "compose",
    [
        # open_clip's default for a 224-px model: shorter side, then centre crop
        open_clip.image_transform(224, is_train=False, mean=MEAN, std=STD),
        # open_clip's "squash" resize mode, bilinear
        open_clip.image_transform(
            (96, 128), is_train=False, mean=MEAN, std=STD, resize_mode="squash", interpolation="bilinear"
        ),
        T.Compose(
            [
                T.Resize(64, interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop(64),
                T.ToTensor(),
                T.Normalize(MEAN, STD),
            ]
        ),
    ],
    ids=["shortest-bicubic-224", "squash-bilinear-96x128", "plain-torchvision-64"],
)
def test_tensor_path_matches_the_compose(compose):
    size = _compose_size(compose)
    split = from_compose(compose, size)
    assert split is not None and isinstance(split.pixels, TensorSteps)
    images = pictures()
    ours = split.batch(images)
    reference = torch.stack([compose(im) for im in images])
    assert ours.shape == reference.shape == (len(images), 3, *split.input_size)
    assert levels(ours, reference) < 2.01  # float rounding of the normalised values aside
    assert float((ours - reference).abs().mean()) < 0.002  # and almost every pixel is identical


def test_pixels_are_uint8_hwc_and_finish_is_channel_first():
    split = from_compose(open_clip.image_transform(224, is_train=False, mean=MEAN, std=STD), 224)
    px = split.pixels(pictures()[1])
    assert px.dtype == torch.uint8 and px.shape == (224, 224, 3) and px.is_contiguous()
    batch = split.finish(torch.stack([px, px]))
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 224, 224)


def test_an_unknown_step_falls_back_to_the_composes_own_pil_steps():
    compose = T.Compose([T.Resize(80), T.CenterCrop(64), T.Grayscale(3), T.ToTensor(), T.Normalize(MEAN, STD)])
    split = from_compose(compose, 64)
    assert split is not None and isinstance(split.pixels, PilSteps)
    images = pictures()
    # the fallback runs the very same PIL steps, so it is exact, not within a tolerance
    assert torch.equal(split.batch(images), torch.stack([compose(im) for im in images]))


def test_a_compose_without_normalize_is_not_split():
    assert from_compose(T.Compose([T.Resize(64), T.ToTensor()]), 64) is None
    assert from_compose(lambda im: im, 64) is None


def test_pixel_steps_survive_pickling_for_spawned_workers():
    split = from_compose(open_clip.image_transform(64, is_train=False, mean=MEAN, std=STD), 64)
    again = pickle.loads(pickle.dumps(split))
    im = pictures()[2]
    assert torch.equal(again.pixels(im), split.pixels(im))


def test_non_rgb_input_is_converted():
    split = from_compose(open_clip.image_transform(64, is_train=False, mean=MEAN, std=STD), 64)
    grey = pictures()[0].convert("L")
    assert torch.equal(split.pixels(grey), split.pixels(grey.convert("RGB")))


def test_encoder_single_image_path_uses_the_split_and_agrees_with_open_clip():
    enc = ClipEncoder(RANDOM_SKETCH_MODEL)
    assert enc.split_preprocess is not None and enc.input_size == (64, 64)
    images = pictures()
    ours = enc.encode_pil(images)
    reference = enc.encode_image_tensor(torch.stack([enc.preprocess(im) for im in images]))
    assert np.min(np.sum(ours * reference, axis=1)) > 0.9999


def _compose_size(compose) -> tuple[int, int]:
    for step in compose.transforms:
        if isinstance(step, T.CenterCrop):
            return tuple(step.size)
        if isinstance(step, T.Resize) and not isinstance(step.size, int) and len(step.size) == 2:
            return tuple(step.size)
    raise AssertionError("no output size in compose")
