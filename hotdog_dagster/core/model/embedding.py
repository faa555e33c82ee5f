"""Embed a partition of images: decoding in DataLoader workers, inference in batches.

Decoding and preprocessing run in worker processes while the model runs in the main one, so on a
GPU the accelerator never waits for JPEG decoding, and on a CPU the decode cost hides behind the
forward pass of the previous batch. Vectors leave as one float32 matrix and go to Parquet in bulk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from hotdog_dagster.core.io.decode import ImageRejected, decode
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.io.vectors import vector_column
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.preprocess import Preprocess

Progress = Callable[[int, int], None]


class ImageFileDataset(Dataset):
    """Paths to model-input pixels; a file that fails to decode yields a zero tensor and its reason.

    With a split preprocess the worker ships uint8 pixels and the main process normalises the batch
    (see preprocess.py); otherwise it ships the Compose's float tensor as is.
    """

    def __init__(
        self, paths: list[str], preprocess: Callable, input_size: tuple[int, int], split: Preprocess | None
    ) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.input_size = input_size
        self.split = split

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        try:
            img = decode(Path(self.paths[i]).read_bytes(), draft_size=min(self.input_size)).image
            if self.split is None:
                return self.preprocess(img), ""
            return self.split.pixels(img), ""
        except (OSError, ImageRejected) as exc:
            dtype = torch.uint8 if self.split is not None else torch.float32
            shape = (*self.input_size, 3) if self.split is not None else (3, *self.input_size)
            code = exc.code if isinstance(exc, ImageRejected) else "unreadable"
            return torch.zeros(shape, dtype=dtype), f"{code}\t{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class EmbedResult:
    vectors: np.ndarray  # (n_ok, D) float32, L2-normalised, in the order of ok_index
    ok_index: np.ndarray  # positions of the inputs that were embedded
    failures: dict[int, str]  # input position -> reason
    seconds: float

    @property
    def images_per_second(self) -> float:
        return len(self.ok_index) / self.seconds if self.seconds > 0 else float("nan")


def embed_paths(
    encoder: ClipEncoder, paths: list[str], batch_size: int = 64, num_workers: int = 1, progress: Progress | None = None
) -> EmbedResult:
    """Embed image files with decoding in ``num_workers`` processes (0 decodes in this process)."""
    split = encoder.split_preprocess
    ds = ImageFileDataset(paths, encoder.preprocess, encoder.input_size, split)
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=encoder.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    t0 = time.perf_counter()
    chunks: list[np.ndarray] = []
    failures: dict[int, str] = {}
    done = 0
    for batch, reasons in loader:
        if split is not None:  # uint8 pixels: to the model's device first, then normalise there
            batch = split.finish(batch.to(encoder.device, non_blocking=True))
        chunks.append(encoder.encode_image_tensor(batch))
        for j, reason in enumerate(reasons):
            if reason:
                failures[done + j] = reason
        done += len(reasons)
        if progress:
            progress(done, len(paths))
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)
    ok = np.array([i for i in range(len(paths)) if i not in failures], dtype=np.int64)
    return EmbedResult(
        vectors=vectors[ok] if failures else vectors, ok_index=ok, failures=failures, seconds=time.perf_counter() - t0
    )


def model_pixels(encoder: ClipEncoder, image: Image.Image) -> torch.Tensor:
    """One decoded RGB picture as the encoder's per-image input: what a worker ships for a file."""
    split = encoder.split_preprocess
    return encoder.preprocess(image) if split is None else split.pixels(image)


def embed_model_pixels(
    encoder: ClipEncoder, pixels: Sequence[torch.Tensor], batch_size: int = 64, progress: Progress | None = None
) -> EmbedResult:
    """Embed per-image inputs already in memory (from :func:`model_pixels`).

    Batched exactly as :func:`embed_paths` batches files, so the same pictures give the same vectors
    bit for bit: this is the fused generation path, which skips writing, reading and decoding.
    """
    split = encoder.split_preprocess
    t0 = time.perf_counter()
    chunks: list[np.ndarray] = []
    for start in range(0, len(pixels), batch_size):
        batch = torch.stack(list(pixels[start : start + batch_size]))
        if split is not None:
            batch = split.finish(batch.to(encoder.device, non_blocking=True))
        chunks.append(encoder.encode_image_tensor(batch))
        if progress:
            progress(min(start + batch_size, len(pixels)), len(pixels))
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)
    return EmbedResult(
        vectors=vectors, ok_index=np.arange(len(pixels), dtype=np.int64), failures={}, seconds=time.perf_counter() - t0
    )


@dataclass(frozen=True)
class PartitionEmbedding:
    table: pa.Table
    failures: dict[str, tuple[str, str]]  # image id -> (reason code, message)
    seconds: float
    images_per_second: float


def embed_partition(
    store: Store,
    partition: str,
    encoder: ClipEncoder,
    batch_size: int = 64,
    num_workers: int = 1,
    progress: Progress | None = None,
    pixels: Mapping[str, torch.Tensor] | None = None,
) -> PartitionEmbedding:
    """Embed one partition's images (and captions) and write its ``embeddings`` partition.

    ``pixels`` (image id -> :func:`model_pixels`) embeds pictures still in memory instead of the files.
    """
    images = store.read_table("images", partition, columns=["id", "path", "caption"])
    if images is None:
        raise FileNotFoundError(f"partition {partition!r} has no images table yet; materialise raw_images for it first")
    ids = images.column("id").to_pylist()
    paths = images.column("path").to_pylist()
    captions = images.column("caption").to_pylist()
    if pixels is None:
        result = embed_paths(encoder, paths, batch_size=batch_size, num_workers=num_workers, progress=progress)
    else:
        missing = [i for i in ids if i not in pixels]
        if missing:
            raise KeyError(
                f"no in-memory pixels for {len(missing)} images of partition {partition!r}, e.g. {missing[0]}"
            )
        result = embed_model_pixels(encoder, [pixels[i] for i in ids], batch_size=batch_size, progress=progress)
    ok = result.ok_index.tolist()
    dim = result.vectors.shape[1] if len(ok) else encoder.dim
    has_text = np.array([bool(captions[i]) for i in ok], dtype=bool)
    text_matrix = np.zeros((len(ok), dim), dtype=np.float32)
    if has_text.any():
        text_matrix[has_text] = encoder.encode_texts([captions[i] for i, t in zip(ok, has_text, strict=True) if t])
    text_col = pa.FixedSizeListArray.from_arrays(pa.array(text_matrix.reshape(-1)), dim, mask=pa.array(~has_text))
    table = pa.table(
        {
            "id": pa.array([ids[i] for i in ok], pa.string()),
            "partition": pa.array([partition] * len(ok), pa.string()),
            "model": pa.array([str(encoder.spec)] * len(ok), pa.string()),
            "vector": vector_column(result.vectors.reshape(-1, dim)),
            "text_vector": text_col,
        }
    )
    failures = {ids[i]: _split_reason(reason) for i, reason in result.failures.items()}
    store.write_table("embeddings", table, partition)
    store.write_table(
        "embedding_failures",
        pa.table(
            {
                "id": pa.array(list(failures), pa.string()),
                "partition": pa.array([partition] * len(failures), pa.string()),
                "reason": pa.array([message for _, message in failures.values()], pa.string()),
                "reason_code": pa.array([code for code, _ in failures.values()], pa.string()),
            }
        ),
        partition,
    )
    return PartitionEmbedding(
        table=table, failures=failures, seconds=result.seconds, images_per_second=result.images_per_second
    )


def _split_reason(reason: str) -> tuple[str, str]:
    """A worker's ``code<TAB>message`` (one string crosses the DataLoader's process boundary) as a pair."""
    code, _, message = reason.partition("\t")
    return (code, message) if message else ("unreadable", reason)
