"""Batch manifests (what a partition key means) and the folder sensor's planning of new files."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
from corpus import HIDDEN, make_bad_corpus, zip_corpus

from hotdog_dagster.core.io import batches
from hotdog_dagster.core.io.batches import (
    BatchSpec,
    check_sketch_overlap,
    folder_prefix,
    list_batches,
    list_source_files,
    load_batch,
    plan_folder,
    plan_sketch,
    save_batch,
)
from hotdog_dagster.core.io.store import Store, check_partition_key
from hotdog_dagster.core.io.watch import plan_new_files

T0 = 1_700_000_000.0  # a fixed "now" for the settle logic


def _write_files(root: Path, names: list[str], mtime: float = T0 - 3600) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        os.utime(path, (mtime, mtime))


# -- planning -------------------------------------------------------------------------------------


def test_plan_sketch_keys_and_sizes():
    specs = plan_sketch(seed=3, images=250, partition_size=100, size=64)
    assert [s.key for s in specs] == ["sketch-s3-0000000", "sketch-s3-0000100", "sketch-s3-0000200"]
    assert [(s.start, s.count) for s in specs] == [(0, 100), (100, 100), (200, 50)]
    assert [s.size_hint for s in specs] == [100, 100, 50]
    assert all(s.source == "sketch" and s.seed == 3 and s.size == 64 for s in specs)
    assert plan_sketch(seed=0, images=5, partition_size=100)[0].size == 128
    for key in (s.key for s in specs):
        assert check_partition_key(key) == key
    # keys sort in stream order (zero-padded), so the UI lists partitions in order
    many = plan_sketch(seed=1, images=2000, partition_size=100)
    assert [s.key for s in many] == sorted(s.key for s in many)


@pytest.mark.parametrize(("images", "size"), [(0, 10), (10, 0), (-1, 10)])
def test_plan_sketch_refuses_non_positive_sizes(images: int, size: int):
    with pytest.raises(ValueError, match="must be positive"):
        plan_sketch(seed=0, images=images, partition_size=size)


def test_plan_folder_keys_and_chunks(tmp_path: Path):
    root = tmp_path / "My Hot-Dog Photos!"
    root.mkdir()
    files = [f"img{i:03d}.jpg" for i in range(7)]
    specs = plan_folder(root, files, partition_size=3)
    assert [s.key for s in specs] == [
        "folder-my-hot-dog-photos-00000",
        "folder-my-hot-dog-photos-00001",
        "folder-my-hot-dog-photos-00002",
    ]
    assert [s.files for s in specs] == [files[0:3], files[3:6], files[6:7]]
    assert [s.size_hint for s in specs] == [3, 3, 1]
    assert all(s.root == str(root.resolve()) and s.source == "folder" for s in specs)
    assert [s.key[-5:] for s in plan_folder(root, files, 5, first_chunk=12)] == ["00012", "00013"]
    assert plan_folder(root, [], 5) == []
    assert folder_prefix(tmp_path / "!!!") == "folder-folder"
    assert folder_prefix(tmp_path / "pics.zip") == "folder-pics"
    assert len(folder_prefix(tmp_path / ("x" * 100))) == len("folder-") + 40
    with pytest.raises(ValueError, match="must be positive"):
        plan_folder(root, files, 0)


def test_list_source_files_over_folder_and_zip(tmp_path: Path):
    src = tmp_path / "corpus"
    expected = make_bad_corpus(src)
    names = list_source_files(src)
    assert names == sorted(expected)
    assert HIDDEN not in names and "nested/.hidden.png" not in names
    assert "nested/deeper/inner.png" in names
    archive = zip_corpus(src, tmp_path / "corpus.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("nested/emptydir/", b"")  # directory entries are not files
    assert list_source_files(archive) == names
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_source_files(tmp_path / "nope")
    with pytest.raises(ValueError, match="not a zip"):
        list_source_files(src / "good.png")


def test_folder_listing_skips_hidden_folders_follows_file_links_not_folder_links(tmp_path: Path, caplog, monkeypatch):
    src = tmp_path / "src"
    (src / ".git" / "objects").mkdir(parents=True)
    (src / ".git" / "objects" / "x.png").write_bytes(b"x")
    (src / "a").mkdir(parents=True)
    (src / "a" / "one.png").write_bytes(b"x")
    (src / "link.png").symlink_to(src / "a" / "one.png")
    (src / "loop").symlink_to(src)  # a folder link back to the root: must not recurse forever
    (src / "locked").mkdir()
    (src / "locked" / "secret.png").write_bytes(b"x")
    assert list_source_files(src) == ["a/one.png", "link.png", "locked/secret.png"]

    # a folder that cannot be listed is named in a warning, and the rest is still listed
    # (os.scandir is made to refuse it: permissions do not bind when the tests run as root)
    real_scandir = os.scandir

    def refusing(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(batches.os, "scandir", refusing)
    with caplog.at_level("WARNING"):
        assert list_source_files(src) == ["a/one.png", "link.png"]
    assert "cannot list" in caplog.text and "locked" in caplog.text


# -- manifests ------------------------------------------------------------------------------------


def test_manifests_round_trip(tmp_path: Path):
    store = Store(tmp_path / "home")
    assert list_batches(store) == []
    sketch_spec = plan_sketch(seed=4, images=30, partition_size=20, size=96)[1]
    folder_spec = plan_folder(tmp_path, ["a.jpg", "sub/b.png"], partition_size=10)[0]
    for spec in (sketch_spec, folder_spec):
        path = save_batch(store, spec)
        assert path == store.batches_dir / f"{spec.key}.json"
        assert load_batch(store, spec.key) == spec
    assert sorted(list_batches(store), key=lambda b: b.key) == sorted([sketch_spec, folder_spec], key=lambda b: b.key)
    # saving again replaces the manifest, leaving no temporary files behind
    changed = BatchSpec(key=folder_spec.key, source="folder", root=folder_spec.root, files=["c.jpg"])
    save_batch(store, changed)
    assert load_batch(store, folder_spec.key).files == ["c.jpg"]
    assert sorted(p.name for p in store.batches_dir.iterdir()) == sorted(
        [f"{sketch_spec.key}.json", f"{folder_spec.key}.json"]
    )


def test_load_batch_of_an_unknown_key_says_what_to_do(tmp_path: Path):
    store = Store(tmp_path / "home")
    with pytest.raises(FileNotFoundError) as info:
        load_batch(store, "sketch-s1-0000000")
    message = str(info.value)
    assert "sketch-s1-0000000" in message
    assert "hotdog plan" in message
    assert str(store.batches_dir) in message


@pytest.mark.parametrize("key", ["a,b", "sketch-s1,sketch-s2", "../escape", "with space", ".hidden", "", "a/b"])
def test_bad_partition_keys_are_refused(tmp_path: Path, key: str):
    store = Store(tmp_path / "home")
    with pytest.raises(ValueError, match="bad partition key"):
        check_partition_key(key)
    with pytest.raises(ValueError, match="bad partition key"):
        BatchSpec(key=key, source="sketch", count=1)
    with pytest.raises(ValueError, match="bad partition key"):
        load_batch(store, key)
    with pytest.raises(ValueError, match="bad partition key"):
        store.table_path("images", key)


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown source"):
        BatchSpec(key="x", source="camera")  # type: ignore[arg-type]


# -- sketch overlap -------------------------------------------------------------------------------


def test_check_sketch_overlap():
    existing = plan_sketch(seed=1, images=100, partition_size=50)
    check_sketch_overlap(existing, plan_sketch(seed=1, images=100, partition_size=50))  # identical re-plan
    check_sketch_overlap(existing, plan_sketch(seed=1, images=200, partition_size=50))  # same slicing, extended
    check_sketch_overlap(existing, plan_sketch(seed=2, images=100, partition_size=30))  # another seed
    check_sketch_overlap([], plan_sketch(seed=1, images=100, partition_size=30))
    with pytest.raises(ValueError, match=r"overlaps existing batch sketch-s1-00000[05]0"):
        check_sketch_overlap(existing, plan_sketch(seed=1, images=100, partition_size=30))  # re-sliced
    with pytest.raises(ValueError, match="--partition-size"):
        check_sketch_overlap(existing, plan_sketch(seed=1, images=150, partition_size=75))
    # a new batch that replaces an existing key is judged against the others only
    replacing = [BatchSpec(key="sketch-s1-0000000", source="sketch", seed=1, start=0, count=40)]
    check_sketch_overlap(existing, replacing)
    # folder batches never overlap sketch ones
    folder = BatchSpec(key="folder-x-00000", source="folder", root="/x", files=["a"])
    check_sketch_overlap([*existing, folder], [folder])


# -- the folder sensor ----------------------------------------------------------------------------


def test_plan_new_files_plans_only_what_no_manifest_lists(tmp_path: Path):
    store = Store(tmp_path / "home")
    root = tmp_path / "incoming"
    _write_files(root, [f"a{i}.jpg" for i in range(5)] + ["sub/b.png", HIDDEN])

    first = plan_new_files(store, root, chunk=4, now=T0)
    assert [s.key for s in first] == ["folder-incoming-00000", "folder-incoming-00001"]
    assert [f for s in first for f in s.files] == sorted([f"a{i}.jpg" for i in range(5)] + ["sub/b.png"])
    assert [len(s.files) for s in first] == [4, 2]
    # planning writes nothing: until the manifests are saved, the same files are planned again
    assert plan_new_files(store, root, chunk=4, now=T0) == first
    for spec in first:
        save_batch(store, spec)
    assert plan_new_files(store, root, chunk=4, now=T0) == []

    _write_files(root, ["c1.jpg", "sub/c2.jpg", "a9.jpg"])
    second = plan_new_files(store, root, chunk=4, now=T0)
    assert [s.key for s in second] == ["folder-incoming-00002"]
    assert second[0].files == ["a9.jpg", "c1.jpg", "sub/c2.jpg"]
    for spec in second:
        save_batch(store, spec)
    assert plan_new_files(store, root, chunk=4, now=T0) == []
    # str and relative spellings of the same root are the same root
    assert plan_new_files(store, str(root), chunk=4, now=T0) == []


def test_plan_new_files_defers_files_still_settling(tmp_path: Path):
    store = Store(tmp_path / "home")
    root = tmp_path / "incoming"
    _write_files(root, ["old.jpg"], mtime=T0 - 60)
    _write_files(root, ["fresh.jpg"], mtime=T0 - 2)
    planned = plan_new_files(store, root, chunk=10, settle_seconds=10, now=T0)
    assert [f for s in planned for f in s.files] == ["old.jpg"]
    for spec in planned:
        save_batch(store, spec)
    # nothing new has settled yet
    assert plan_new_files(store, root, chunk=10, settle_seconds=10, now=T0 + 5) == []
    # once it has, it is planned, in the next chunk
    later = plan_new_files(store, root, chunk=10, settle_seconds=10, now=T0 + 20)
    assert [(s.key, s.files) for s in later] == [("folder-incoming-00001", ["fresh.jpg"])]
    # settle_seconds=0 takes everything at once
    assert [f for s in plan_new_files(Store(tmp_path / "h2"), root, 10, settle_seconds=0, now=T0) for f in s.files] == [
        "fresh.jpg",
        "old.jpg",
    ]


def test_plan_new_files_over_a_zip(tmp_path: Path):
    store = Store(tmp_path / "home")
    src = tmp_path / "corpus"
    expected = make_bad_corpus(src)
    archive = zip_corpus(src, tmp_path / "drop.zip")
    planned = plan_new_files(store, archive, chunk=100, now=T0)
    assert len(planned) == 1 and planned[0].files == sorted(expected)
    assert planned[0].root == str(archive.resolve())
    save_batch(store, planned[0])
    assert plan_new_files(store, archive, chunk=100, now=T0) == []


def test_roots_sharing_a_key_prefix_do_not_overwrite_each_other(tmp_path: Path):
    """``photos/`` and ``photos.zip`` (or two folders called ``photos``) share a key prefix."""
    store = Store(tmp_path / "home")
    folder = tmp_path / "photos"
    _write_files(folder, ["a.jpg", "b.jpg"])
    other = tmp_path / "elsewhere" / "photos"
    _write_files(other, ["c.jpg"])
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("z.jpg", b"z")

    keys: list[str] = []
    for root in (folder, other, archive):
        specs = plan_new_files(store, root, chunk=10, now=T0)
        assert len(specs) == 1
        keys.append(specs[0].key)
        save_batch(store, specs[0])
    assert keys == ["folder-photos-00000", "folder-photos-00001", "folder-photos-00002"]
    # every root's files are still on record, so nothing is planned twice
    for root in (folder, other, archive):
        assert plan_new_files(store, root, chunk=10, now=T0) == []
    assert {load_batch(store, k).root for k in keys} == {str(p.resolve()) for p in (folder, other, archive)}
