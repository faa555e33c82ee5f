"""Dagster resources: thin, configurable builders of the core objects the assets use."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import dagster as dg

from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.labels.scoring import LabelSet
from hotdog_dagster.core.profile import Profile

if TYPE_CHECKING:
    from hotdog_dagster.core.clean.quality import QualityConfig
    from hotdog_dagster.core.model.encoder import ClipEncoder


class StoreResource(dg.ConfigurableResource):
    """The data root; empty means ``$HOTDOG_HOME`` (default ``./.hotdog``)."""

    home: str = ""

    def store(self) -> Store:
        return Store(self.home or None)


class EncoderResource(dg.ConfigurableResource):
    """The OpenCLIP model and how to run it."""

    model: str
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64
    num_workers: int = 1

    def encoder(self) -> ClipEncoder:
        return _cached_encoder(self.model, self.device, self.precision)


@lru_cache(maxsize=2)
def _cached_encoder(model: str, device: str, precision: str) -> ClipEncoder:
    """Load a model once per process, not once per partition (CUDA is initialised here, inside the step)."""
    from hotdog_dagster.core.model.encoder import ClipEncoder  # torch loads in the step, not at definitions import

    return ClipEncoder(model, device=device, precision=precision)


class IngestResource(dg.ConfigurableResource):
    """Limits and parallelism of decoding at ingest."""

    max_pixels: int
    workers: int = 4


class IndexResource(dg.ConfigurableResource):
    """Which FAISS index to build."""

    kind: str = "auto"


class QualityResource(dg.ConfigurableResource):
    """Thresholds of blank and duplicate detection; their defaults live in the profile (core/profile.py)."""

    dark_mean_max: float
    dark_std_max: float
    flat_std_max: float
    near_threshold: float
    pixel_max_distance: float  # -1: no pixel confirmation
    phash_max_distance: int  # -1: no perceptual-hash confirmation

    def config(self) -> QualityConfig:
        from hotdog_dagster.core.clean.quality import QualityConfig

        return QualityConfig(
            dark_mean_max=self.dark_mean_max,
            dark_std_max=self.dark_std_max,
            flat_std_max=self.flat_std_max,
            near_threshold=self.near_threshold,
            verify_pixels=self.pixel_max_distance >= 0,
            pixel_max_distance=max(self.pixel_max_distance, 0.0),
            phash_max_distance=None if self.phash_max_distance < 0 else self.phash_max_distance,
        )


class LabelsResource(dg.ConfigurableResource):
    """The zero-shot label set; changing it re-scores from stored vectors, without re-embedding."""

    labels: list[str]
    templates: list[str] = ["{}"]

    def label_set(self) -> LabelSet:
        return LabelSet.build(self.labels, self.templates)


class WatchResource(dg.ConfigurableResource):
    """The folder the sensor watches (empty: the sensor skips) and how many files per partition."""

    folder: str = ""
    chunk: int = 1000


def resources_for(profile: Profile, home: str = "") -> dict[str, dg.ConfigurableResource]:
    """The resource set of a profile: the one place a profile becomes Dagster configuration."""
    return {
        "store": StoreResource(home=home),
        "encoder": EncoderResource(
            model=profile.model,
            device=profile.device,
            precision=profile.precision,
            batch_size=profile.batch_size,
            num_workers=profile.num_workers,
        ),
        "ingest": IngestResource(max_pixels=profile.max_pixels, workers=profile.ingest_workers),
        "index_settings": IndexResource(kind=profile.index_kind),
        "watch": WatchResource(folder=profile.watch_dir, chunk=profile.watch_chunk),
        "quality_settings": QualityResource(
            dark_mean_max=profile.dark_mean_max,
            dark_std_max=profile.dark_std_max,
            flat_std_max=profile.flat_std_max,
            near_threshold=profile.near_threshold,
            pixel_max_distance=profile.pixel_max_distance,
            phash_max_distance=profile.phash_max_distance,
        ),
        "labels": LabelsResource(labels=list(profile.labels), templates=list(profile.label_templates)),
    }
