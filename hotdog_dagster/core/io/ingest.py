"""Turn one batch (a sketch or diffusion slice, or a list of files) into the ``images`` and ``rejected`` tables.

Every file of a batch ends up in exactly one of the two tables, so ``files in = images +
rejected`` always holds and nothing is lost silently. Ids are derived from the content hash and
the file's name within its source: stable across re-runs (re-materialising replaces the same
rows), and distinct for two byte-identical files at different paths, which cleaning then flags
as ``identical_bytes`` duplicates via the shared ``content_hash``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
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
from hotdog_dagster.core.io.batches import MANIFEST_METADATA_KEY, BatchSpec, manifest_json, sidecar_name
from hotdog_dagster.core.io.decode import (
    DEFAULT_MAX_FILE_BYTES,
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
    """Stable id of a file: its content hash and its name within the source.

    The name is hashed as the bytes it has on disk (``os.fsencode``), so a name that is not UTF-8
    (undecodable bytes come in as surrogate escapes) gets an id instead of crashing the batch; for a
    UTF-8 name these are the bytes ``str.encode`` gives, so ids already stored do not change.
    """
    return hashlib.blake2b(f"{content}\0".encode() + os.fsencode(source_name), digest_size=10).hexdigest()


def display_name(name: str) -> str:
    """``name`` as text that every column, log and UTF-8 writer accepts.

    File names are bytes; Python hands undecodable ones over as lone surrogates (``'bad\\udcff.png'``),
    which Parquet, JSON-to-UTF-8 and DuckDB refuse, so one such name used to fail its whole batch.
    Undecodable bytes are written as ``\\xff``; valid names are unchanged.
    """
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def ingest_batch(
    store: Store,
    spec: BatchSpec,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 4,
    progress: Progress | None = None,
    generated: Iterable[GeneratedImage] | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> IngestResult:
    """Ingest one batch and write (replace) its partitions of ``images``, ``thumbnails`` and ``rejected``.

    A diffusion batch is generated here unless ``generated`` hands in its images (the fused
    embedding path and the benchmark watch them go by).
    """
    final_dir = store.partition_images_dir(spec.key)
    staging = store.staging_dir(final_dir)  # unique: two runs of one partition never share it
    if spec.source == "diffusion":
        items = _diffusion_items(spec, generated)
    else:
        items = _sketch_items(spec) if spec.source == "sketch" else _folder_items(spec, max_file_bytes)
    total = spec.size_hint

    def one(item: _Item) -> dict:
        return _process(item, spec, staging, final_dir, max_pixels)

    rows: list[dict] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for done, row in enumerate(pool.map(one, items), start=1):
                rows.append(row)
                if progress and (done % 200 == 0 or done == total):
                    progress(done, total)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    good = [r for r in rows if "reason" not in r]
    bad = [r for r in rows if "reason" in r]
    # The partition keeps its manifest: a manifest lost or corrupted later is restored from here.
    schema = IMAGES_SCHEMA.with_metadata({MANIFEST_METADATA_KEY: manifest_json(spec).encode()})
    images = pa.Table.from_pylist(good, schema=schema)
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
    read_code: str = "unreadable"  # the reason code when data is None


_AGAIN = "re-materialise the partition (`hotdog run --rerun`) to read it again"


class _ReadRefused(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def read_regular_file(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of one regular file, read so that a hostile folder cannot hang, exhaust or fool ingest.

    - opened non-blocking and checked with ``fstat`` before reading: a FIFO, socket or device put
      where a file was (after the folder was listed) is refused instead of blocking the batch for ever;
    - more than ``max_bytes`` is refused before reading (code ``too_large``);
    - a file that changed (size, mtime) or was replaced under its name while being read is refused
      with code ``changed``: the bytes read would match neither version's record;
    - symlink loops, permissions and vanished files are ``OSError`` and end up ``unreadable``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise _ReadRefused("not a regular file (a FIFO, socket or device is never read)", "unreadable")
        if before.st_size > max_bytes:
            raise _ReadRefused(f"{before.st_size:,} bytes exceeds the cap of {max_bytes:,} bytes", "too_large")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise _ReadRefused(f"grew past the cap of {max_bytes:,} bytes while being read", "too_large")
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or total != before.st_size:
        raise _ReadRefused(f"the file changed while it was being read; {_AGAIN}", "changed")
    try:
        now = os.stat(path)
    except OSError:
        raise _ReadRefused(f"the file was removed or replaced while it was being read; {_AGAIN}", "changed") from None
    if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
        raise _ReadRefused(f"the file was replaced while it was being read; {_AGAIN}", "changed")
    return b"".join(chunks)


def _os_reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{exc.strerror or exc}" + (f" ({name})" if name else "")


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


#: A caption sidecar is a line of text; more than this is not a caption (and is not read whole).
MAX_CAPTION_BYTES = 64 * 1024


def _zip_read(zf: zipfile.ZipFile, name: str, max_bytes: int) -> bytes:
    """One zip member, refusing one that declares or inflates to more than ``max_bytes`` (a zip bomb)."""
    info = zf.getinfo(name)
    if info.file_size > max_bytes:
        raise _ReadRefused(
            f"zip member inflates to {info.file_size:,} bytes, over the cap of {max_bytes:,}", "too_large"
        )
    with zf.open(info) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # the header under-declared its size
        raise _ReadRefused(f"zip member inflates past the cap of {max_bytes:,} bytes", "too_large")
    return data


def _folder_items(spec: BatchSpec, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Iterator[_Item]:
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
                    extra = {}
                    if side in members and side != name:
                        extra = {"caption": _caption(_zip_read(zf, side, MAX_CAPTION_BYTES))}
                    yield _Item(name, _zip_read(zf, name, max_file_bytes), None, None, extra)
                except _ReadRefused as exc:
                    yield _Item(name, None, f"zip member refused: {exc}", None, {}, exc.code)
                except (KeyError, OSError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as exc:
                    yield _Item(name, None, f"unreadable zip member: {exc}", None, {})
        return
    for name in spec.files:
        path = root / name
        side = root / sidecar_name(name)
        try:
            extra = {}
            if side != path and side.is_file():
                try:
                    extra = {"caption": _caption(read_regular_file(side, MAX_CAPTION_BYTES))}
                except (OSError, _ReadRefused):
                    extra = {}  # a caption that cannot be read is no caption; the image still counts
            yield _Item(name, read_regular_file(path, max_file_bytes), None, str(path), extra)
        except _ReadRefused as exc:
            what = "unreadable file" if exc.code == "unreadable" else "file refused"
            yield _Item(name, None, f"{what}: {exc}", str(path), {}, exc.code)
        except OSError as exc:
            yield _Item(name, None, f"unreadable file: {_os_reason(exc)}", str(path), {})


def _caption(data: bytes) -> str | None:
    """A sidecar's text as one line (captions are short; a multi-line file is joined)."""
    text = " ".join(data.decode("utf-8", errors="replace").split())
    return text or None


def _process(item: _Item, spec: BatchSpec, staging: Path, final_dir: Path, max_pixels: int) -> dict:
    source_path = display_name(item.origin_path or "")
    if item.data is None:
        return {
            "partition": spec.key,
            "source": spec.source,
            "source_name": display_name(item.source_name),
            "path": source_path,
            "bytes": None,
            "reason": item.read_error,
            "reason_code": item.read_code,
        }
    try:
        decoded = decode(item.data, max_pixels=max_pixels)
    except ImageRejected as exc:
        return {
            "partition": spec.key,
            "source": spec.source,
            "source_name": display_name(item.source_name),
            "path": source_path,
            "bytes": len(item.data),
            "reason": str(exc),
            "reason_code": exc.code,
        }
    chash = content_hash(item.data)
    iid = image_id(chash, item.source_name)
    # Drawn or extracted: keep a copy under images/<partition>/. So too a file whose path is not
    # UTF-8: the path column cannot hold its name, and later steps must still find its bytes.
    if item.origin_path is None or display_name(item.origin_path) != item.origin_path:
        suffix = _safe_suffix(item.source_name)
        (staging / f"{iid}{suffix}").write_bytes(item.data)
        path = str(final_dir / f"{iid}{suffix}")
    else:
        path = item.origin_path
    mean, std = luminance_stats(decoded.image)
    return {
        "id": iid,
        "partition": spec.key,
        "source": spec.source,
        "source_name": display_name(item.source_name),
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


def _safe_suffix(name: str) -> str:
    """The suffix of an extracted copy: the member's own when it is a plain one, else ``.png``.

    A zip member's name is the archive author's text: its "suffix" may hold newlines, path
    separators or undecodable bytes, none of which belong in a file name under ``images/``.
    """
    suffix = Path(name).suffix.lower()
    return suffix if suffix and len(suffix) <= 6 and suffix[1:].isascii() and suffix[1:].isalnum() else ".png"
