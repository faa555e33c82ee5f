"""Run profiles: one YAML file names the model, the device and the knobs of every stage.

The embedded default (the sketch model on the CPU) and the real profile (ViT-B-32 on a GPU) differ
only in this file, so the same assets and the same commands serve a laptop and a cluster.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from hotdog_dagster.core.io.decode import DEFAULT_MAX_PIXELS
from hotdog_dagster.core.labels.scoring import DEFAULT_LABELS
from hotdog_dagster.core.model.names import SKETCH_MODEL


@dataclass(frozen=True)
class Profile:
    model: str = SKETCH_MODEL
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (fp32 on CPU, bf16/fp16 autocast on GPU) | fp32 | fp16 | bf16
    batch_size: int = 64
    num_workers: int = 1  # DataLoader decode workers
    index_kind: str = "auto"  # auto | flat | ivf | hnsw
    max_pixels: int = DEFAULT_MAX_PIXELS
    ingest_workers: int = 4
    sketch_size: int = 128
    watch_dir: str = ""  # folder (or zip) the sensor watches; empty disables it
    watch_chunk: int = 1000  # files per partition added by the sensor
    dark_mean_max: float = 20.0  # blank: luminance mean at most this ...
    dark_std_max: float = 8.0  # ... and luminance spread at most this
    flat_std_max: float = 0.0  # blank at any brightness: luminance spread at most this (0: off)
    near_threshold: float = 0.8  # near-duplicate candidates: cosine at least this ...
    pixel_max_distance: float = 3.5  # ... confirmed by aligned 32x32 thumbnail RMSE at most this (-1: off)
    phash_max_distance: int = -1  # ... and perceptual-hash distance at most this (-1: off)
    labels: tuple[str, ...] = DEFAULT_LABELS  # zero-shot label set (columns named by slug)
    label_templates: tuple[str, ...] = ("{}",)  # prompt templates averaged per label, e.g. "a photo of {}"

    def with_overrides(self, **overrides: Any) -> Profile:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_profile(path: str | os.PathLike[str] | None = None) -> Profile:
    """The profile in ``path`` (YAML), or ``$HOTDOG_CONFIG``, or the embedded default."""
    path = path or os.environ.get("HOTDOG_CONFIG") or None
    if not path:
        return Profile()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} does not exist")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must be a mapping of settings, got {type(data).__name__}")
    known = {f.name: f.type for f in fields(Profile)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)} in {p}; known settings: {', '.join(known)}")
    defaults = Profile()
    for key, value in list(data.items()):
        expected = type(getattr(defaults, key))
        is_bool = isinstance(value, bool)  # YAML reads `yes`/`true` as bool, and bool is an int subclass
        if expected is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"setting {key!r} in {p} must be a list of strings, got {value!r}")
            data[key] = tuple(value)
        elif expected is float and isinstance(value, int) and not is_bool:
            data[key] = float(value)
        elif not isinstance(value, expected) or (is_bool and expected is not bool):
            raise ValueError(f"setting {key!r} in {p} must be {expected.__name__}, got {value!r}")
    return Profile(**data)
