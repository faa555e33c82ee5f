"""Model-input preprocessing in two halves: uint8 pixels per image, floats per batch.

open_clip hands out a torchvision ``Compose`` over PIL images (resize, centre crop, to-tensor,
normalise). Two things about it cost throughput at scale, and both are fixed here without changing
what the model sees beyond one grey level:

* Pillow's bicubic resampling is the single most expensive step of the per-image work: about
  1.2 ms of core time to take a 256-px JPEG to 224 px, more than decoding it. torch's antialiased
  uint8 kernels compute the same filter in about 0.4 ms and agree with Pillow to within two levels
  (of 255; vectors agree to a cosine of 0.99999). At 5,000 images/s on a GPU, that difference is the number of CPU cores needed to keep
  the accelerator fed; on a 2-core CPU it is what lets decoding hide behind the forward pass.
* Per-image float conversion ships four times the bytes between processes. Workers ship uint8;
  the main process scales and normalises a whole batch in one vectorised step, with ToTensor's and
  Normalize's arithmetic.

Every path that turns a picture into a vector (the embedding asset's DataLoader workers, query
images in search, model evaluation) goes through :class:`Preprocess`, so one image is one vector
wherever it is encoded. A Compose with any step this module does not recognise falls back to running
its PIL steps as given, so an unusual model is slower, never different.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

#: Step names that only make sure the picture is RGB; decode.py always hands out RGB already.
_CONVERT_STEPS = frozenset({"_convert_to_rgb", "MaybeConvertMode", "convert_to_rgb"})
_TO_TENSOR_STEPS = frozenset({"ToTensor", "MaybeToTensor", "PILToTensor"})
_INTERPOLATIONS = frozenset({InterpolationMode.BICUBIC, InterpolationMode.BILINEAR, InterpolationMode.NEAREST})


@dataclass(frozen=True)
class TensorResize:
    """torchvision ``Resize`` semantics (an int is the shorter side), on a uint8 CHW tensor."""

    size: int | tuple[int, int]
    interpolation: InterpolationMode
    max_size: int | None

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        size = [self.size] if isinstance(self.size, int) else list(self.size)
        return TF.resize(pixels, size, interpolation=self.interpolation, max_size=self.max_size, antialias=True)


@dataclass(frozen=True)
class TensorCenterCrop:
    size: tuple[int, int]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return TF.center_crop(pixels, list(self.size))


class PilSteps:
    """The PIL transforms in order, then HWC uint8; a class, not a closure, so spawned DataLoader
    workers can unpickle it."""

    def __init__(self, steps: Sequence[Callable]) -> None:
        self.steps = list(steps)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        for step in self.steps:
            img = step(img)
        return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8))


class TensorSteps:
    """Resize and crop on a uint8 tensor with torch's kernels (see the module docstring)."""

    def __init__(self, steps: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.steps = list(steps)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode != "RGB":
            img = img.convert("RGB")
        # CHW as a view of HWC memory (channels-last): the layout torch's uint8 kernels are fast on,
        # and the one they return, so going back to HWC at the end costs no copy.
        pixels = torch.from_numpy(np.array(img)).permute(2, 0, 1)
        for step in self.steps:
            pixels = step(pixels)
        return pixels.permute(1, 2, 0).contiguous()


@dataclass(frozen=True)
class Preprocess:
    """``pixels`` runs per image (in a worker) and returns uint8 ``(H, W, 3)``; ``finish`` runs per
    batch of those and returns the normalised float ``(B, 3, H, W)`` tensor the model takes."""

    pixels: PilSteps | TensorSteps
    mean: torch.Tensor  # (1, 3, 1, 1)
    std: torch.Tensor
    input_size: tuple[int, int]

    def finish(self, batch: torch.Tensor) -> torch.Tensor:
        """Runs on whatever device ``batch`` is on: move uint8 to the GPU first, a quarter of the bytes."""
        mean, std = self.mean.to(batch.device), self.std.to(batch.device)
        return batch.permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.finish(torch.stack([self.pixels(im) for im in images]))


def from_compose(preprocess: Callable, input_size: int | tuple[int, int]) -> Preprocess | None:
    """Split a torchvision ``Compose`` ending in to-tensor + Normalize; ``None`` for any other shape.

    The pixel half is torch kernels when every step before to-tensor is a Resize, a CenterCrop or an
    RGB conversion, and the Compose's own PIL steps otherwise.
    """
    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) < 2 or type(steps[-1]).__name__ != "Normalize" or _step_name(steps[-2]) not in _TO_TENSOR_STEPS:
        return None
    norm = steps[-1]
    pil_steps = steps[:-2]
    tensor_steps = _tensor_steps(pil_steps)
    pixels: PilSteps | TensorSteps = TensorSteps(tensor_steps) if tensor_steps is not None else PilSteps(pil_steps)
    size = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    return Preprocess(
        pixels=pixels,
        mean=torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1),
        std=torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1),
        input_size=size,
    )


def _tensor_steps(steps: Sequence[Callable]) -> list[Callable[[torch.Tensor], torch.Tensor]] | None:
    out: list[Callable[[torch.Tensor], torch.Tensor]] = []
    for step in steps:
        name = _step_name(step)
        if name in _CONVERT_STEPS:
            continue
        if name == "Resize" and step.interpolation in _INTERPOLATIONS:
            size = step.size
            if isinstance(size, Sequence) and len(size) == 1:
                size = int(size[0])
            elif isinstance(size, Sequence):
                size = (int(size[0]), int(size[1]))
            out.append(TensorResize(size=size, interpolation=step.interpolation, max_size=step.max_size))
        elif name == "CenterCrop":
            out.append(TensorCenterCrop(size=(int(step.size[0]), int(step.size[1]))))
        else:
            return None
    return out


def _step_name(step: Callable) -> str:
    return getattr(step, "__name__", None) or type(step).__name__
