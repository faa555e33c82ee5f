"""Generate and embed a diffusion partition in one step, from the pictures still in memory.

The two-step path writes every PNG, and the embedding step then reads each file back, decodes it
and resizes it for the encoder. Here each generated picture is resized for the encoder as it passes
on its way to the writer, and once the partition is written it is embedded from those pixels: the
same per-image preprocessing and the same batches as the file path, so the vectors are identical,
without the read and the decode, and with the generator's process already warm. ``images``,
``rejected``, ``embeddings`` and ``embedding_failures`` are written exactly as the two steps write them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from PIL import Image

from hotdog_dagster.core.io.batches import BatchSpec
from hotdog_dagster.core.io.decode import DEFAULT_MAX_PIXELS
from hotdog_dagster.core.io.ingest import IngestResult, Progress, ingest_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model.embedding import PartitionEmbedding, embed_partition, model_pixels
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.generation import GeneratedImage, StageTimes, generate_partition


@dataclass(frozen=True)
class FusedResult:
    ingest: IngestResult
    embedding: PartitionEmbedding


def generate_and_embed(
    store: Store,
    spec: BatchSpec,
    encoder: ClipEncoder,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 4,
    batch_size: int = 64,
    progress: Progress | None = None,
    times: StageTimes | None = None,
) -> FusedResult:
    """Generate one diffusion batch, write its images, and embed them without reading them back."""
    if spec.source != "diffusion":
        raise ValueError(f"batch {spec.key} is a {spec.source} batch; only diffusion batches embed in the same step")
    by_name: dict[str, torch.Tensor] = {}

    def watch(images: Iterable[GeneratedImage]) -> Iterator[GeneratedImage]:
        for image in images:
            t0 = time.perf_counter()
            by_name[image.source_name] = model_pixels(encoder, Image.fromarray(image.pixels, "RGB"))
            if times is not None:
                times.embedding += time.perf_counter() - t0
            yield image

    ingested = ingest_batch(
        store,
        spec,
        max_pixels=max_pixels,
        workers=workers,
        progress=progress,
        generated=watch(generate_partition(spec, times)),
    )
    names = ingested.images.column("source_name").to_pylist()
    ids = ingested.images.column("id").to_pylist()
    t0 = time.perf_counter()
    embedding = embed_partition(
        store, spec.key, encoder, batch_size=batch_size, pixels={i: by_name[n] for i, n in zip(ids, names, strict=True)}
    )
    if times is not None:
        times.embedding += time.perf_counter() - t0
    return FusedResult(ingest=ingested, embedding=embedding)
