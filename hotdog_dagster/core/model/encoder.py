"""The one encoder: an OpenCLIP model named by a spec string, batched for images and texts.

A spec is ``open_clip/<architecture>/<weights>`` where weights is a pretrained tag
(``laion2b_s34b_b79k``), a local checkpoint path (``.safetensors``, or a ``.pt``/``.bin`` loaded with
``weights_only=True``), ``bundled`` for the weights shipped with this package, or ``random`` for an
untrained model (tests and timing). Architectures include open_clip's own configs and the ones this
package registers (``hotdog-sketch``), so a new architecture is a JSON config, never a fork.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[2]
MODEL_CONFIG_DIR = PACKAGE_DIR / "model_configs"
BUNDLED_DIR = PACKAGE_DIR / "bundled"

open_clip.add_model_config(MODEL_CONFIG_DIR)

from hotdog_dagster.core.model.checkpoint import load_into, read_state_dict  # noqa: E402
from hotdog_dagster.core.model.names import REAL_MODEL  # noqa: E402
from hotdog_dagster.core.model.preprocess import from_compose  # noqa: E402


class ModelSpecError(ValueError):
    """A model spec that cannot be resolved; the message says what to pass instead."""


@dataclass(frozen=True)
class ModelSpec:
    family: str
    arch: str
    weights: str

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        parts = spec.split("/", 2)
        if len(parts) != 3 or parts[0] != "open_clip" or not parts[1] or not parts[2]:
            raise ModelSpecError(
                f"bad model spec {spec!r}: expected open_clip/<architecture>/<weights>, e.g. "
                f"{REAL_MODEL!r}, 'open_clip/hotdog-sketch/bundled' or 'open_clip/ViT-B-32//path/to/ckpt.safetensors'"
            )
        family, arch, weights = parts
        if arch not in open_clip.list_models():
            raise ModelSpecError(
                f"unknown open_clip architecture {arch!r} in {spec!r}; known include hotdog-sketch, ViT-B-32, ViT-B-16, ViT-L-14"
            )
        return cls(family, arch, weights)

    def __str__(self) -> str:
        return f"{self.family}/{self.arch}/{self.weights}"

    def checkpoint(self) -> str | None:
        """The ``pretrained`` argument for open_clip: a tag, a local file, or ``None`` (random)."""
        if self.weights == "random":
            return None
        if self.weights == "bundled":
            path = BUNDLED_DIR / f"{self.arch}.safetensors"
            if not path.exists():
                raise ModelSpecError(f"no bundled weights for {self.arch!r} (looked for {path})")
            return str(path)
        looks_like_path = "/" in self.weights or self.weights.endswith((".safetensors", ".pt", ".pth", ".bin"))
        if looks_like_path:
            path = Path(self.weights).expanduser()
            if not path.exists():
                raise ModelSpecError(f"checkpoint file {path} does not exist")
            return str(path)
        return self.weights  # a pretrained tag; open_clip downloads it (or finds it in its cache)

    def is_local_file(self) -> bool:
        """Weights from a file on this machine (bundled or a path), as opposed to a tag or ``random``."""
        if self.weights in ("random",):
            return False
        return (
            self.weights == "bundled"
            or "/" in self.weights
            or self.weights.endswith((".safetensors", ".pt", ".pth", ".bin"))
        )


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _no_random_init_warning() -> Any:
    """Silence open_clip's root-logger warning that a model built without weights is random."""
    root, quiet = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ClipEncoder:
    """An OpenCLIP model plus its preprocessing and tokenizer, ready for batched inference."""

    def __init__(self, spec: str | ModelSpec, device: str = "auto", precision: str = "auto") -> None:
        self.spec = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
        self.device = resolve_device(device)
        ckpt = self.spec.checkpoint()
        log.info("loading %s on %s", self.spec, self.device)
        if ckpt is not None and self.spec.is_local_file():
            # Local weights (the bundled file, a path) are read by checkpoint.py, safetensors or
            # torch.load(weights_only=True) only, and refused with a clear error when they need more.
            state = read_state_dict(ckpt)
            with _no_random_init_warning():  # the weights come next: open_clip's "initialized randomly" is wrong here
                model, _, preprocess = open_clip.create_model_and_transforms(self.spec.arch, pretrained=None)
            load_into(model, state, ckpt)
            model = model.to(self.device)
        else:  # random weights, or a pretrained tag open_clip fetches (and reads with weights_only=True)
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.spec.arch, pretrained=ckpt, device=self.device, weights_only=True
            )
        self.model = model.eval()
        self.preprocess = preprocess
        self.input_size = _input_size(model)
        #: the same preprocessing as ``preprocess``, split per image / per batch; ``None`` if unsplittable
        self.split_preprocess = from_compose(preprocess, self.input_size)
        self.tokenizer = open_clip.get_tokenizer(self.spec.arch)
        self.autocast_dtype = _autocast_dtype(self.device, precision)

    @property
    def dim(self) -> int:
        return int(open_clip.get_model_config(self.spec.arch)["embed_dim"])

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def encode_image_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Preprocessed images ``(B, 3, H, W)`` to L2-normalised float32 vectors ``(B, D)``."""
        with self._autocast():
            feats = self.model.encode_image(batch.to(self.device, non_blocking=True))
        return _normalise(feats)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Texts to L2-normalised float32 vectors, in batches."""
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[start : start + batch_size]).to(self.device)
            with self._autocast():
                out.append(_normalise(self.model.encode_text(tokens)))
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out)

    def encode_pil(self, images: list[Any]) -> np.ndarray:
        """PIL images to vectors (for a handful of query images; bulk work goes through embedding.py)."""
        if not images:
            raise ValueError("no images to encode")
        if self.split_preprocess is not None:
            return self.encode_image_tensor(self.split_preprocess.batch(images))
        return self.encode_image_tensor(torch.stack([self.preprocess(im) for im in images]))


def _input_size(model: torch.nn.Module) -> tuple[int, int]:
    size = model.visual.image_size
    return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))


def _normalise(feats: torch.Tensor) -> np.ndarray:
    feats = feats.float()
    feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return feats.cpu().numpy().astype(np.float32, copy=False)


def _autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if precision in ("fp16", "auto"):
        return torch.float16
    raise ValueError(f"unknown precision {precision!r}: use auto, fp32, fp16 or bf16")
