"""The store's write path: temp file + fsync + os.replace, a full disk mid-write, the directory swap
under concurrent readers, leftovers of killed writers, and the locks."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hotdog_dagster.core.io import store as store_module
from hotdog_dagster.core.io.batches import load_batch, plan_sketch, save_batch
from hotdog_dagster.core.io.locks import Busy, file_lock, holder_of, lock_path
from hotdog_dagster.core.io.store import Store, atomic_path, replace_dir, sweep_temporaries
from hotdog_dagster.core.io.vectors import vector_column
from hotdog_dagster.core.search import index, keyword

pytestmark = pytest.mark.reliability


def _disk_full(after_bytes: int = 100):
    """A writer that gets part of the way, then the disk is full (what ENOSPC looks like mid-write)."""

    def write(data, where, **kw):  # noqa: ANN001, ANN202
        with open(where, "wb") as fh:
            fh.write(b"PAR1" + b"\0" * after_bytes)
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    return write


def test_writes_go_to_a_temp_file_that_is_synced_then_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """While a partition is being written the old file is what readers see; the new one appears whole."""
    store = Store(tmp_path)
    old = pa.table({"x": [1, 2, 3]})
    target = store.write_table("t", old, "p")
    seen_during_write = []
    synced, renamed = [], []
    real_write, real_fsync, real_replace = pq.write_table, os.fsync, os.replace

    def watching_write(data, where, **kw):  # noqa: ANN001, ANN202
        assert Path(where) != target and Path(where).parent == target.parent
        real_write(data, where, **kw)
        seen_during_write.append(pq.read_table(target))  # a reader at this moment

    monkeypatch.setattr(store_module.pq, "write_table", watching_write)
    monkeypatch.setattr(store_module.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    monkeypatch.setattr(
        store_module.os, "replace", lambda a, b: renamed.append((Path(a), Path(b))) or real_replace(a, b)
    )
    new = pa.table({"x": [7]})
    store.write_table("t", new, "p")
    assert seen_during_write[0].equals(old)
    assert pq.read_table(target).equals(new)
    assert len(renamed) == 1 and renamed[0][1] == target and renamed[0][0].name.endswith(".tmp")
    assert len(synced) >= 2  # the file before the rename, its folder after
    assert [p.name for p in target.parent.iterdir()] == ["p.parquet"]
    # readable like any file the user writes (a temp file is 0600; renamed in as is, other users of
    # a shared home, or the UI running as another user, could not read it)
    assert target.stat().st_mode & 0o777 == 0o666 & ~store_module._UMASK
    assert store.staging_dir(tmp_path / "index").stat().st_mode & 0o777 == 0o777 & ~store_module._UMASK


def test_a_full_disk_mid_write_leaves_the_last_good_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = Store(tmp_path)
    good = pa.table({"x": [1, 2, 3]})
    store.write_table("t", good, "p")
    store.write_table("whole", good)
    monkeypatch.setattr(store_module.pq, "write_table", _disk_full())
    for args in (("t", pa.table({"x": [9]}), "p"), ("whole", pa.table({"x": [9]}))):
        with pytest.raises(OSError) as err:
            store.write_table(*args)
        assert err.value.errno == errno.ENOSPC
    assert store.read_table("t", "p").equals(good) and store.read_table("whole").equals(good)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".tmp"]
    assert leftovers == []


def test_a_full_disk_while_saving_a_manifest_or_the_index_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store = Store(tmp_path)
    spec = plan_sketch(seed=1, images=10, partition_size=10)[0]
    save_batch(store, spec)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"i{k}" for k in range(20)]
    store.write_table(
        "embeddings", pa.table({"id": ids[:10], "partition": ["a"] * 10, "vector": vector_column(vectors[:10])}), "a"
    )
    index.update_from_store(store)
    before = index.load(store)

    real_write_text = Path.write_text

    def full(self: Path, *a, **k):  # noqa: ANN202
        real_write_text(self, "{", *a[1:], **k)  # a torn start
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        save_batch(store, plan_sketch(seed=1, images=5, partition_size=5)[0])
    monkeypatch.undo()
    assert load_batch(store, spec.key) == spec

    store.write_table(
        "embeddings", pa.table({"id": ids[10:], "partition": ["b"] * 10, "vector": vector_column(vectors[10:])}), "b"
    )
    monkeypatch.setattr(index.faiss, "write_index", lambda idx, path: _disk_full()(None, path))
    with pytest.raises(OSError):
        index.update_from_store(store)
    monkeypatch.undo()
    after = index.load(store)
    assert after.ids.tolist() == before.ids.tolist() and after.index.ntotal == 10
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".index")] == []  # the staging is gone
    index.update_from_store(store)  # re-materialising now adds the second partition
    assert index.load(store).index.ntotal == 20


def test_readers_never_see_a_half_swapped_index(tmp_path: Path):
    """A reader loops over index.load while a writer rebuilds and swaps index/ over and over."""
    store = Store(tmp_path)
    rng = np.random.default_rng(1)
    tables = {}
    for part, n in (("a", 30), ("b", 45)):
        v = rng.normal(size=(n, 16)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        tables[part] = pa.table(
            {"id": [f"{part}{i}" for i in range(n)], "partition": [part] * n, "vector": vector_column(v)}
        )
        store.write_table("embeddings", tables[part], part)
    index.update_from_store(store)
    truth = {}
    for table in tables.values():
        for i, vec in zip(table.column("id").to_pylist(), table.column("vector").to_pylist(), strict=True):
            truth[i] = np.asarray(vec, np.float32)
    stop = threading.Event()
    errors: list[str] = []
    loads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                loaded = index.load(store)
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            got = loaded.index.reconstruct_n(0, loaded.index.ntotal)
            for pos in (0, loaded.index.ntotal - 1):
                if not np.allclose(got[pos], truth[loaded.ids[pos]]):
                    errors.append(f"position {pos} holds another image's vector")
            loads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for k in range(30):
            if k % 2:
                store.write_table("embeddings", tables["b"], "b")
            else:
                store.drop_partition("embeddings", "b")
            index.update_from_store(store, rebuild=True)
    finally:
        stop.set()
        thread.join()
    assert errors == [], errors[:5]
    assert loads[0] > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2(RENAME_EXCHANGE) is Linux's")
def test_replace_dir_is_one_exchange_on_linux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The swap never leaves a moment without the target (the old code renamed it away first)."""
    target = tmp_path / "index"
    target.mkdir()
    (target / "f").write_text("old")
    staging = tmp_path / ".staging"
    staging.mkdir()
    (staging / "f").write_text("new")
    renames = []
    monkeypatch.setattr(store_module.os, "replace", lambda a, b: renames.append((a, b)))
    replace_dir(staging, target)
    assert renames == [] and (target / "f").read_text() == "new" and not staging.exists()


def test_a_killed_writers_temporaries_are_swept_and_a_live_ones_are_not(tmp_path: Path):
    store = Store(tmp_path)
    with atomic_path(tmp_path / "tables" / "t" / "p.parquet") as live_tmp:
        live_tmp.write_bytes(b"half")
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
        )
        pid = int(dead.stdout)
        host = store_module._host_tag()
        dead_tmp = tmp_path / "tables" / "t" / f".p.parquet.{host}-{pid}.abcd1234.tmp"
        dead_tmp.write_bytes(b"half")
        dead_dir = tmp_path / f".index.{host}-{pid}.abcd1234.staging"
        dead_dir.mkdir()
        (dead_dir / "images.faiss").write_bytes(b"x")
        other_host = tmp_path / "tables" / "t" / f".p.parquet.00000000-{pid}.abcd1234.tmp"
        other_host.write_bytes(b"half")
        removed = sweep_temporaries(store.root, min_age_s=0)
        assert sorted(removed) == sorted([dead_tmp, dead_dir])
        assert live_tmp.exists() and other_host.exists()


def test_a_lock_names_its_holder_and_is_released_when_the_holder_is_killed(tmp_path: Path):
    path = lock_path(tmp_path, "run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from hotdog_dagster.core.io.locks import file_lock\n"
            f"with file_lock({str(path)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=rf"pid {holder.pid}\b.*holds {path}"), file_lock(path, wait=0):
            pass
        assert holder_of(path)["pid"] == holder.pid
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
        t0 = time.monotonic()
        with file_lock(path, wait=5):
            assert json.loads(path.read_text())["pid"] == os.getpid()
        assert time.monotonic() - t0 < 5
    finally:
        holder.kill()


def test_shared_holders_coexist_and_keep_a_writer_waiting(tmp_path: Path):
    path = lock_path(tmp_path, "catalog")
    with file_lock(path, shared=True, wait=0), file_lock(path, shared=True, wait=0), pytest.raises(Busy):  # noqa: SIM117
        with file_lock(path, wait=0.3):  # the writer is what must fail, inside both readers
            pass
    with file_lock(path, wait=0):
        pass


def test_keyword_index_that_cannot_be_read_is_rebuilt(tmp_path: Path):
    store = Store(tmp_path)
    store.write_table(
        "images",
        pa.table({"id": ["a", "b"], "partition": ["p", "p"], "caption": ["a red circle", "two hot dogs"]}),
        "p",
    )
    keyword.update_from_store(store)
    path = keyword.path_of(store)
    path.write_bytes(path.read_bytes()[:100])  # torn
    with pytest.raises(Exception, match=r"keyword\.npz is unreadable.*keyword_index"):
        keyword.load(store)
    info = keyword.update_from_store(store)
    assert info.rebuilt and keyword.load(store).ids.tolist() == ["a", "b"]
