"""What the fault suite and ``bench/faults.py`` share: runs of ``hotdog run`` that are killed, hostile
folders, and comparisons of every table of two homes.

A run is ``python -m hotdog_dagster.cli run`` of this checkout in its own session (process group),
so SIGKILL reaches it and its dbt child the way a container or machine going away would. The
kill point is chosen through the fault hook of ``hotdog_dagster/core/io/faults.py``: a clean run
traces every point where a write could be interrupted, per stage, and a later run is killed at
one of them (``HOTDOG_FAULT_KILL_AT``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

#: The tiny profile: the shipped model (real answers, so the walk has faces to walk), 64 px sketches.
TINY_PROFILE = """\
model:
  name: open_clip/hotdog-sketch/bundled
  batch_size: 32
  num_workers: 0
ingest:
  workers: 2
  sketch_size: 64
"""

#: Stages in the order a run reaches them, as the fault hook names them.
STAGES = ("ingest", "embed", "clean", "labels", "index", "catalog", "dbt", "walk")


def write_profile(path: Path) -> Path:
    path.write_text(TINY_PROFILE)
    return path


def sketch_folder(dest: Path, n: int = 60, seed: int = 7, size: int = 64) -> Path:
    """A folder of ``n`` drawn sketches as PNG files (with a caption sidecar for every third)."""
    from hotdog_dagster.core.model.sketch import draw

    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        drawn = draw(seed, i, size=size)
        drawn.image.save(dest / f"img{i:04d}.png", format="PNG")
        if i % 3 == 0:
            (dest / f"img{i:04d}.txt").write_text(drawn.caption)
    return dest


# -- running hotdog --------------------------------------------------------------------------------


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTDOG_FAULT")}
    env.update(HOTDOG_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), PYTHONPATH=str(REPO))
    env.pop("HOTDOG_CONFIG", None)
    env.update(extra)
    return env


def run_args(folder: Path, profile: Path, partition_size: int = 20) -> list[str]:
    return ["run", "--source", "folder", "--path", str(folder), "--partition-size", str(partition_size)] + [
        "--config",
        str(profile),
        "--json",
    ]


def start(args: list[str], home: Path, **extra: str) -> subprocess.Popen[str]:
    """``hotdog <args>`` of this checkout in a new session (its own process group)."""
    return subprocess.Popen(
        [sys.executable, "-m", "hotdog_dagster.cli", *args],
        cwd=REPO,
        env=env_for(home, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def tail(self, n: int = 3000) -> str:
        return f"rc={self.returncode}\n--- stdout\n{self.stdout[-n:]}\n--- stderr\n{self.stderr[-n:]}"


def finish(proc: subprocess.Popen[str], timeout: float = 900) -> Finished:
    t0 = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
    kill_group(proc)  # nothing of a killed run may live on (its dbt child)
    return Finished(proc.returncode, out, err, time.monotonic() - t0)


def kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def hotdog(args: list[str], home: Path, timeout: float = 900, **extra: str) -> Finished:
    return finish(start(args, home, **extra), timeout)


def read_trace(path: Path) -> list[tuple[int, str, str]]:
    """The fault points a traced run reached: (n, stage, label)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        n, stage, label = line.split("\t", 2)
        out.append((int(n), stage, label))
    return out


def kill_during(stage: str, trace: list[tuple[int, str, str]], rng: np.random.Generator) -> tuple[int, str] | None:
    """A random fault point (its number and label) of ``stage`` in a traced run, or None if it has none."""
    points = [(n, label) for n, s, label in trace if s == stage]
    if not points:
        return None
    n, label = points[int(rng.integers(len(points)))]
    return n, label


# -- what a reader sees ----------------------------------------------------------------------------


def unreadable_files(home: Path) -> list[str]:
    """Every file a reader would pick up under ``home`` that it could not read: must stay empty.

    Readers glob ``tables/*/*.parquet``, ``tables/*.parquet``, ``batches/*.json``, ``walks/*.json``,
    open ``index/`` and ``catalog.duckdb``, and follow the ``path`` column to the image files.
    """
    from hotdog_dagster.core.io.store import Store
    from hotdog_dagster.core.search import index, keyword

    bad: list[str] = []
    store = Store(home)
    for path in sorted(home.glob("tables/*/*.parquet")) + sorted(home.glob("tables/*.parquet")):
        try:
            pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - any failure is what is being counted
            bad.append(f"{path}: {type(exc).__name__}: {exc}")
    for path in sorted(home.glob("batches/*.json")) + sorted(home.glob("walks/*.json")):
        try:
            json.loads(path.read_text())
        except Exception as exc:  # noqa: BLE001
            bad.append(f"{path}: {type(exc).__name__}: {exc}")
    if (home / "index").exists():
        try:
            index.load(store)
        except Exception as exc:  # noqa: BLE001
            bad.append(f"{home / 'index'}: {type(exc).__name__}: {exc}")
        if (home / "index" / "keyword.npz").exists():
            try:
                keyword.load(store)
            except Exception as exc:  # noqa: BLE001
                bad.append(f"{home / 'index' / 'keyword.npz'}: {type(exc).__name__}: {exc}")
    for path in sorted(home.glob("tables/images/*.parquet")):
        try:
            for p in pq.read_table(path, columns=["path"]).column("path").to_pylist():
                if p.startswith(str(home)) and not Path(p).is_file():
                    bad.append(f"{p}: listed in {path.name} but missing")
        except Exception:  # noqa: BLE001 - reported above
            pass
    if store.catalog_path.exists():
        try:
            with duckdb.connect(str(store.catalog_path), read_only=True) as con:
                con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
        except Exception as exc:  # noqa: BLE001
            bad.append(f"{store.catalog_path}: {type(exc).__name__}: {exc}")
    return bad


# -- comparing two homes ---------------------------------------------------------------------------


def _normalise(value: Any, home: str | tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for h in (home,) if isinstance(home, str) else home:
            value = value.replace(h, "$HOME")
        return value
    if isinstance(value, bytes):
        return hashlib.blake2b(value, digest_size=12).hexdigest()
    if isinstance(value, list):
        return [_normalise(v, home) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v, home) for k, v in value.items()}
    return value


def _rows(table: Any, home: str | tuple[str, ...]) -> list[str]:
    return sorted(json.dumps(_normalise(r, home), sort_keys=True, default=str) for r in table.to_pylist())


def snapshot(home: Path, aliases: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Everything a run leaves that must not depend on crashes: every table, the index, the catalog.

    Tables are compared row by row (sorted; vectors and flags exact; paths relative to the home),
    the FAISS index as id -> stored vector, the catalog as its dbt tables and per-view row counts,
    and the image files as their hashes. ``aliases``: other roots that paths may name (a copied
    home's rows still name the home it was copied from).
    """
    from hotdog_dagster.core.io.store import Store
    from hotdog_dagster.core.search import index

    h = (str(home), *map(str, aliases))
    out: dict[str, Any] = {}
    for table_dir in sorted(p for p in (home / "tables").iterdir() if p.is_dir()):
        files = sorted(table_dir.glob("*.parquet"))
        out[f"table {table_dir.name}"] = {f.stem: _rows(pq.read_table(f), h) for f in files}
    for f in sorted((home / "tables").glob("*.parquet")):
        out[f"table {f.stem}"] = _rows(pq.read_table(f), h)
    store = Store(home)
    if (home / "index" / "images.faiss").exists():
        loaded = index.load(store)
        vectors = loaded.index.reconstruct_n(0, loaded.index.ntotal)
        out["index"] = sorted(
            (str(i), hashlib.blake2b(v.tobytes(), digest_size=12).hexdigest())
            for i, v in zip(loaded.ids.tolist(), vectors, strict=True)
        )
    if store.catalog_path.exists():
        with duckdb.connect(str(store.catalog_path), read_only=True) as con:
            names = [
                r[0] for r in con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall()
            ]
            out["catalog counts"] = {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in sorted(names)}
            for n in ("image_labels", "label_summary"):
                if n in names:
                    rel = con.execute(f'SELECT * FROM "{n}"')
                    cols = [d[0] for d in rel.description]
                    out[f"dbt {n}"] = sorted(
                        json.dumps(_normalise(dict(zip(cols, r, strict=True)), h), default=str, sort_keys=True)
                        for r in rel.fetchall()
                    )
    images = {}
    for f in sorted((home / "images").rglob("*")) if (home / "images").exists() else []:
        rel = f.relative_to(home / "images")
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            images[str(rel)] = hashlib.blake2b(f.read_bytes(), digest_size=12).hexdigest()
    out["image files"] = images
    return out


def differences(a: dict[str, Any], b: dict[str, Any], limit: int = 12) -> list[str]:
    """What differs between two snapshots, a line per thing (empty when they are equal)."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            out.append(f"{key}: only in {'the first' if key in a else 'the second'}")
        elif a[key] != b[key]:
            va, vb = a[key], b[key]
            if isinstance(va, dict) and isinstance(vb, dict):
                parts = sorted(set(va) | set(vb))
                diff = [p for p in parts if va.get(p) != vb.get(p)]
                out.append(f"{key}: differs in {diff[:6]}")
            else:
                out.append(
                    f"{key}: differs ({len(va) if hasattr(va, '__len__') else va} vs {len(vb) if hasattr(vb, '__len__') else vb})"
                )
        if len(out) >= limit:
            break
    return out


def row_count(snap: dict[str, Any], table: str) -> int:
    value = snap.get(f"table {table}", {})
    return sum(len(v) for v in value.values()) if isinstance(value, dict) else len(value)


# -- hostile files ---------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, pixels: bytes = b"\0" * 64) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` over a tiny body (a bomb, or 0x0)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(pixels))
        + _png_chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def non_utf8_name(stem: bytes, suffix: str) -> str:
    """A file name with bytes that are not UTF-8, as Python's ``os`` functions spell it (surrogate escapes)."""
    return os.fsdecode(stem + suffix.encode())


#: The ingest file cap the hostile folder is made for (the default is 1 GiB; a sparse file just over this).
CAP_FOR_HOSTILE = 4 * 1024 * 1024


@dataclass
class HostileFolder:
    root: Path
    #: file name -> the reason code ingest must record ("image" for files that must be ingested)
    expected: dict[str, str]
    notes: list[str]


def hostile_folder(dest: Path, max_file_bytes: int) -> HostileFolder:
    """A folder of files chosen to break an ingest: what each must become is in ``expected``.

    ``max_file_bytes`` is the cap the ingest under test uses (one file is made just over it).
    """
    dest.mkdir(parents=True, exist_ok=True)
    good = Image.new("RGB", (48, 40), (200, 30, 30))
    for x in range(0, 48, 4):
        for y in range(40):
            good.putpixel((x, y), (x * 5, y * 6, 90))
    expected: dict[str, str] = {}
    notes: list[str] = []

    def put(name: str, data: bytes, code: str) -> None:
        (dest / name).write_bytes(data)
        expected[name] = code

    put("fine.png", encoded(good), "image")
    put("bomb.png", png_declaring(100_000, 100_000), "too_many_pixels")
    gif = bytearray(encoded(Image.new("P", (8, 8)), "GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)  # the logical screen of a GIF bomb
    put("bomb.gif", bytes(gif), "too_many_pixels")
    put("zero.png", png_declaring(0, 0), "not_an_image")  # Pillow refuses a 0x0 header outright
    put("strip.png", encoded(Image.new("RGB", (100_000, 1), (1, 2, 3))), "extreme_aspect")
    put("column.png", encoded(Image.new("RGB", (1, 100_000), (1, 2, 3))), "extreme_aspect")
    jpeg = encoded(good, "JPEG")
    put("truncated.jpg", jpeg[: len(jpeg) // 2], "corrupt")
    png = encoded(good)
    put("truncated.png", png[: len(png) // 2], "corrupt")
    put("empty.png", b"", "empty")
    put("text.jpg", b"this is not an image\n" * 10, "not_an_image")
    with open(dest / "huge.png", "wb") as fh:  # sparse: costs no disk
        fh.truncate(max_file_bytes + 1)
    expected["huge.png"] = "too_large"
    os.symlink("loop-b.png", dest / "loop-a.png")
    os.symlink("loop-a.png", dest / "loop-b.png")
    expected["loop-a.png"] = expected["loop-b.png"] = "unreadable"
    os.symlink("nowhere.png", dest / "dangling.png")
    expected["dangling.png"] = "unreadable"
    os.mkfifo(dest / "fifo.png")
    expected["fifo.png"] = "unreadable"
    locked = dest / "locked.png"
    locked.write_bytes(encoded(good.rotate(90, expand=True)))
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root (or CAP_DAC_OVERRIDE) reads it anyway: then it is an image
        expected["locked.png"] = "image"
        notes.append("running as root: chmod 000 does not stop reads, so locked.png is ingested as an image")
    else:
        expected["locked.png"] = "unreadable"
    put("new\nline.png", encoded(good.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), "image")
    put(non_utf8_name(b"caf\xe9-latin1", ".png"), encoded(good.transpose(Image.Transpose.FLIP_TOP_BOTTOM)), "image")
    put("tab\tand space .png", encoded(good.rotate(180)), "image")
    # a zip of a bomb member next to the folder's files is a source of its own (see hostile_zip)
    return HostileFolder(dest, expected, notes)


def hostile_zip(path: Path, max_file_bytes: int) -> dict[str, str]:
    """A zip with a member that inflates past the cap (a zip bomb at test scale), a good member and a bad one."""
    good = encoded(Image.new("RGB", (32, 32), (10, 200, 10)))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", good)
        zf.writestr("bomb.png", b"\0" * (max_file_bytes + 1024))  # compresses to almost nothing
        zf.writestr("notes.jpg", b"plain text")
        zf.writestr("odd\nname.weird/suffix\n", good)  # its copy under images/ gets a plain suffix
    return {
        "ok.png": "image",
        "bomb.png": "too_large",
        "notes.jpg": "not_an_image",
        "odd\nname.weird/suffix\n": "image",
    }


def reason_counts(rejected: Any) -> Counter[str]:
    return Counter(rejected.column("reason_code").to_pylist())


# -- the clean reference ---------------------------------------------------------------------------

#: Images and partition size of the reference run: three batches.
IMAGES, PARTITION = 60, 20


@dataclass
class Reference:
    """A clean, traced ``hotdog run`` of a folder of sketches: what every crashed home must equal."""

    folder: Path
    profile: Path
    home: Path
    trace: list[tuple[int, str, str]]
    snap: dict[str, Any]
    seconds: float

    def args(self) -> list[str]:
        return run_args(self.folder, self.profile, PARTITION)


def build_reference(root: Path) -> Reference:
    folder = sketch_folder(root / "sketches", n=IMAGES)
    profile = write_profile(root / "tiny.yaml")
    home = root / "reference"
    trace_file = root / "reference.trace"
    ref = Reference(folder, profile, home, [], {}, 0.0)
    done = hotdog(ref.args(), home, HOTDOG_FAULT_TRACE=str(trace_file))
    if done.returncode != 0:
        raise RuntimeError(f"the clean reference run failed\n{done.tail()}")
    broken = unreadable_files(home)
    if broken:
        raise RuntimeError(f"the clean reference run left unreadable files: {broken}")
    ref.trace = read_trace(trace_file)
    ref.snap = snapshot(home)
    ref.seconds = done.seconds
    return ref
