"""Dagster resources: each one *is* a stage's settings model from ``core/settings.py``.

A resource subclasses its settings model, so its fields, defaults and validation are declared once
(in core), the UI's launchpad shows the same fields, and a bad run-config value fails with the
settings model's own message. ``resources_for`` turns a profile into the resource set.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import dagster as dg

from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.settings import (
    CleanSettings,
    IndexSettings,
    IngestSettings,
    LabelSettings,
    ModelSettings,
    Profile,
    WatchSettings,
)

if TYPE_CHECKING:
    from hotdog_dagster.core.labels.scoring import LabelSet
    from hotdog_dagster.core.model.encoder import ClipEncoder


class StoreResource(dg.ConfigurableResource):
    """The data root; empty means ``$HOTDOG_HOME`` (default ``./.hotdog``)."""

    home: str = ""

    def store(self) -> Store:
        return Store(self.home or None)


class EncoderResource(dg.ConfigurableResource, ModelSettings):
    """The OpenCLIP model, loaded once per process (CUDA initialises inside the step, not at import)."""

    def encoder(self) -> ClipEncoder:
        return _cached_encoder(self.name, self.device, self.precision)


@lru_cache(maxsize=2)
def _cached_encoder(model: str, device: str, precision: str) -> ClipEncoder:
    from hotdog_dagster.core.model.encoder import ClipEncoder  # torch loads in the step, not at import

    return ClipEncoder(model, device=device, precision=precision)


class IngestResource(dg.ConfigurableResource, IngestSettings):
    """Limits and parallelism of decoding at ingest."""


class IndexResource(dg.ConfigurableResource, IndexSettings):
    """Which FAISS index to build."""


class CleanResource(dg.ConfigurableResource, CleanSettings):
    """Thresholds of blank and duplicate detection."""

    def settings(self) -> CleanSettings:
        return CleanSettings(**self.values())


class LabelsResource(dg.ConfigurableResource, LabelSettings):
    """The zero-shot label set."""

    def label_set(self) -> LabelSet:
        from hotdog_dagster.core.labels.scoring import LabelSet

        return LabelSet.build(self.labels, self.templates)


class WatchResource(dg.ConfigurableResource, WatchSettings):
    """The folder the new-files sensor watches."""


def resources_for(profile: Profile, home: str = "") -> dict[str, dg.ConfigurableResource]:
    """The resource set of a profile: the one place a profile becomes Dagster configuration."""
    return {
        "store": StoreResource(home=home),
        "encoder": EncoderResource(**profile.model.values()),
        "ingest": IngestResource(**profile.ingest.values()),
        "index_settings": IndexResource(**profile.index.values()),
        "watch": WatchResource(**profile.watch.values()),
        "clean_settings": CleanResource(**profile.clean.values()),
        "labels": LabelsResource(**profile.labels.values()),
    }
