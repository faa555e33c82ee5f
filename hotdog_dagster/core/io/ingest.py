"""Turn one batch (a sketch or diffusion slice, or a list of files) into the ``images`` and ``rejected`` tables.

Every file of a batch ends up in exactly one of the two tables, so ``files in = images +
rejected`` always holds and nothing is lost silently. Ids are derived from the content hash and
the file's name within its source: stable across re-runs (re-materialising replaces the same
rows), and distinct for two byte-identical files at different paths, which cleaning then flags
as ``identical_bytes`` duplicates via the shared ``content_hash``.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from hotdog_dagster.core.clean.descriptor import DESCRIPTOR_BYTES, descriptor_column, descriptors
from hotdog_dagster.core.clean.pixels import THUMB, THUMB_BYTES, thumbnail, thumbs_to_column
from hotdog_dagster.core.io.batches import BatchSpec, sidecar_name
from hotdog_dagster.core.io.decode import (
    DEFAULT_MAX_PIXELS,
    ImageRejected,
    content_hash,
    decode,
    luminance_stats,
    pixel_hash,
)
from hotdog_dagster.core.io.store import Store, replace_dir
from hotdog_dagster.core.model import sketch

if TYPE_CHECKING:
    from hotdog_dagster.core.model.generation import GeneratedImage

Progress = Callable[[int, int], None]

IMAGES_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("partition", pa.string()),
        ("source", pa.string()),
        ("source_name", pa.string()),
        ("path", pa.string()),
        ("content_hash", pa.string()),
        ("pixel_hash", pa.string()),
        ("bytes", pa.int64()),
        ("format", pa.string()),
        ("mode", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("lum_mean", pa.float32()),
        ("lum_std", pa.float32()),
        ("caption", pa.string()),
        ("label", pa.string()),
        ("color", pa.string()),
        ("seed", pa.int64()),
        ("prompt", pa.string()),
        ("negative_prompt", pa.string()),
        ("model", pa.string()),
        ("scheduler", pa.string()),
        ("steps", pa.int32()),
        ("guidance", pa.float64()),
        ("safety_flagged", pa.bool_()),
    ]
)

REJECTED_SCHEMA = pa.schema(
    [
        ("partition", pa.string()),
        ("source", pa.string()),
        ("source_name", pa.string()),
        ("path", pa.string()),
        ("bytes", pa.int64()),
        ("reason", pa.string()),
        ("reason_code", pa.string()),
    ]
)


#: One row per ingested image: its 32x32 RGB thumbnail and the descriptor cleaning searches (core/clean).
THUMBNAILS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("partition", pa.string()),
        ("thumb", pa.binary(THUMB_BYTES)),
        ("descriptor", pa.binary(DESCRIPTOR_BYTES)),
    ]
)


@dataclass(frozen=True)
class IngestResult:
    images: pa.Table
    rejected: pa.Table
    thumbnails: pa.Table

    @property
    def files_in(self) -> int:
        return self.images.num_rows + self.rejected.num_rows


def image_id(content: str, source_name: str) -> str:
    return hashlib.blake2b(f"{content}\0{source_name}".encode(), digest_size=10).hexdigest()


def ingest_batch(
    store: Store,
    spec: BatchSpec,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 4,
    progress: Progress | None = None,
    generated: Iterable[GeneratedImage] | None = None,
) -> IngestResult:
    """Ingest one batch and write (replace) its partitions of ``images``, ``thumbnails`` and ``rejected``.

    A diffusion batch is generated here unless ``generated`` hands in its images (the fused
    embedding path and the benchmark watch them go by).
    """
    staging = store.images_dir / f".{spec.key}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    final_dir = store.partition_images_dir(spec.key)
    if spec.source == "diffusion":
        items = _diffusion_items(spec, generated)
    else:
        items = _sketch_items(spec) if spec.source == "sketch" else _folder_items(spec)
    total = spec.size_hint

    def one(item: _Item) -> dict:
        return _process(item, spec, staging, final_dir, max_pixels)

    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, row in enumerate(pool.map(one, items), start=1):
            rows.append(row)
            if progress and (done % 200 == 0 or done == total):
                progress(done, total)
    good = [r for r in rows if "reason" not in r]
    bad = [r for r in rows if "reason" in r]
    images = pa.Table.from_pylist(good, schema=IMAGES_SCHEMA)
    rejected = pa.Table.from_pylist(bad, schema=REJECTED_SCHEMA)
    replace_dir(staging, final_dir)
    store.write_table("images", images, spec.key)
    thumbnails = _thumbnails(good, spec.key)
    store.write_table("thumbnails", thumbnails, spec.key)
    store.write_table("rejected", rejected, spec.key)
    return IngestResult(images=images, rejected=rejected, thumbnails=thumbnails)


def _thumbnails(rows: list[dict], partition: str) -> pa.Table:
    """The batch's thumbnails and descriptors, computed together (vectorised) once decoding is done."""
    thumbs = np.frombuffer(b"".join(r["thumb"] for r in rows), dtype=np.uint8).reshape(-1, THUMB, THUMB, 3)
    return pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "partition": pa.array([partition] * len(rows), pa.string()),
            "thumb": thumbs_to_column(thumbs),
            "descriptor": descriptor_column(descriptors(thumbs)),
        },
        schema=THUMBNAILS_SCHEMA,
    )


@dataclass(frozen=True)
class _Item:
    source_name: str
    data: bytes | None  # None when the file could not be read
    read_error: str | None
    origin_path: str | None  # where the file lives when it is not copied into images/
    extra: dict


def _sketch_items(spec: BatchSpec) -> Iterator[_Item]:
    for i in range(spec.start, spec.start + spec.count):
        drawn = sketch.draw(spec.seed, i, size=spec.size)
        buf = io.BytesIO()
        drawn.image.save(buf, format="PNG")
        yield _Item(
            source_name=f"sketch/{spec.seed}/{i}",
            data=buf.getvalue(),
            read_error=None,
            origin_path=None,
            extra={
                "caption": drawn.caption,
                "label": drawn.label,
                "color": drawn.color,
                "seed": spec.seed * 1_000_000_000 + i,
            },
        )


def _diffusion_items(spec: BatchSpec, generated: Iterable[GeneratedImage] | None) -> Iterator[_Item]:
    if generated is None:
        from hotdog_dagster.core.model.generation import generate_partition  # diffusers loads for this source only

        generated = generate_partition(spec)
    for image in generated:
        yield _Item(image.source_name, image.png, None, None, dict(image.columns))


def _folder_items(spec: BatchSpec) -> Iterator[_Item]:
    root = Path(spec.root)
    if root.is_file():  # a zip: members are extracted into images/<partition>/
        try:
            zf = zipfile.ZipFile(root)
        except (OSError, zipfile.BadZipFile) as exc:
            for name in spec.files:
                yield _Item(name, None, f"unreadable zip archive {root}: {exc}", None, {})
            return
        with zf:
            members = set(zf.namelist())
            for name in spec.files:
                try:
                    side = sidecar_name(name)
                    extra = {"caption": _caption(zf.read(side))} if side in members and side != name else {}
                    yield _Item(name, zf.read(name), None, None, extra)
                except (KeyError, OSError, zipfile.BadZipFile, RuntimeError) as exc:
                    yield _Item(name, None, f"unreadable zip member: {exc}", None, {})
        return
    for name in spec.files:
        path = root / name
        side = root / sidecar_name(name)
        try:
            extra = {"caption": _caption(side.read_bytes())} if side != path and side.is_file() else {}
            yield _Item(name, path.read_bytes(), None, str(path), extra)
        except OSError as exc:
            yield _Item(name, None, f"unreadable file: {exc.strerror or exc}", str(path), {})


def _caption(data: bytes) -> str | None:
    """A sidecar's text as one line (captions are short; a multi-line file is joined)."""
    text = " ".join(data.decode("utf-8", errors="replace").split())
    return text or None


def _process(item: _Item, spec: BatchSpec, staging: Path, final_dir: Path, max_pixels: int) -> dict:
    source_path = item.origin_path or ""
    if item.data is None:
        return {
            "partition": spec.key,
            "source": spec.source,
            "source_name": item.source_name,
            "path": source_path,
            "bytes": None,
            "reason": item.read_error,
            "reason_code": "unreadable",
        }
    try:
        decoded = decode(item.data, max_pixels=max_pixels)
    except ImageRejected as exc:
        return {
            "partition": spec.key,
            "source": spec.source,
            "source_name": item.source_name,
            "path": source_path,
            "bytes": len(item.data),
            "reason": str(exc),
            "reason_code": exc.code,
        }
    chash = content_hash(item.data)
    iid = image_id(chash, item.source_name)
    if item.origin_path is None:  # drawn or extracted: keep a copy under images/<partition>/
        suffix = Path(item.source_name).suffix.lower() or ".png"
        (staging / f"{iid}{suffix}").write_bytes(item.data)
        path = str(final_dir / f"{iid}{suffix}")
    else:
        path = item.origin_path
    mean, std = luminance_stats(decoded.image)
    return {
        "id": iid,
        "partition": spec.key,
        "source": spec.source,
        "source_name": item.source_name,
        "path": path,
        "content_hash": chash,
        "pixel_hash": pixel_hash(decoded.image),
        "thumb": thumbnail(decoded.image).tobytes(),  # goes to the thumbnails table, not images
        "bytes": len(item.data),
        "format": decoded.format,
        "mode": decoded.mode,
        "width": decoded.width,
        "height": decoded.height,
        "lum_mean": mean,
        "lum_std": std,
        "caption": item.extra.get("caption"),
        "label": item.extra.get("label"),
        "color": item.extra.get("color"),
        "seed": item.extra.get("seed"),
        "prompt": item.extra.get("prompt"),
        "negative_prompt": item.extra.get("negative_prompt"),
        "model": item.extra.get("model"),
        "scheduler": item.extra.get("scheduler"),
        "steps": item.extra.get("steps"),
        "guidance": item.extra.get("guidance"),
        "safety_flagged": item.extra.get("safety_flagged"),
    }
