"""ingest_batch: every file of a batch lands in exactly one of ``images`` and ``rejected``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pyarrow as pa
import pytest
from corpus import CORPUS_MAX_PIXELS, EXPECTED_SIZES, HIDDEN, make_bad_corpus, zip_corpus

from hotdog_dagster.core.io.batches import BatchSpec, list_source_files, plan_folder, plan_sketch
from hotdog_dagster.core.io.decode import decode, pixel_hash
from hotdog_dagster.core.io.ingest import IMAGES_SCHEMA, REJECTED_SCHEMA, ingest_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model import sketch


def _one_batch(root: Path) -> BatchSpec:
    specs = plan_folder(root, list_source_files(root), partition_size=1000)
    assert len(specs) == 1
    return specs[0]


def _rows(table: pa.Table, key: str = "source_name") -> dict[str, dict]:
    return {r[key]: r for r in table.to_pylist()}


def _check_corpus_ingest(store: Store, spec: BatchSpec, expected: dict[str, str | None]) -> None:
    result = ingest_batch(store, spec, max_pixels=CORPUS_MAX_PIXELS, workers=2)
    listed = set(spec.files)
    assert listed == set(expected)  # hidden files and __MACOSX are not listed, everything else is
    assert not any(HIDDEN in n or n.split("/")[-1].startswith(".") for n in listed)

    # files in = images + rejected, with nothing in both
    assert result.files_in == len(spec.files)
    good, bad = _rows(result.images), _rows(result.rejected)
    assert set(good) | set(bad) == listed
    assert not set(good) & set(bad)
    assert set(good) == {n for n, v in expected.items() if v is None}
    for name, reason in expected.items():
        if reason is not None:
            assert reason in bad[name]["reason"], (name, bad[name]["reason"])
            assert bad[name]["partition"] == spec.key
    assert bad["empty.jpg"]["bytes"] == 0

    # one row per image, unique ids, files that exist and decode to what the row says
    ids = result.images.column("id").to_pylist()
    assert len(ids) == len(set(ids))
    for name, row in good.items():
        path = Path(row["path"])
        assert path.is_file(), name
        assert (row["width"], row["height"]) == EXPECTED_SIZES[name], name
        assert row["bytes"] == path.stat().st_size
        assert pixel_hash(decode(path.read_bytes()).image) == row["pixel_hash"]
        assert row["partition"] == spec.key and row["source"] == "folder"
        assert row["caption"] is None and row["label"] is None
    assert good["cmyk.jpg"]["mode"] == "CMYK" and good["deep16.png"]["mode"].startswith("I")
    assert 100 < good["deep16.png"]["lum_mean"] < 155

    # byte-identical copies at two paths: two rows, two ids, one content hash
    a, b = good["good.png"], good["nested/copy_of_good.png"]
    assert a["id"] != b["id"]
    assert a["content_hash"] == b["content_hash"] and a["pixel_hash"] == b["pixel_hash"]

    # what was returned is what was written, with the declared schemas
    images = store.read_table("images", spec.key)
    rejected = store.read_table("rejected", spec.key)
    assert images.schema.equals(IMAGES_SCHEMA) and rejected.schema.equals(REJECTED_SCHEMA)
    assert images.num_rows == len(good) and rejected.num_rows == len(bad)
    assert sorted(images.column("id").to_pylist()) == sorted(ids)


def test_ingest_folder_corpus(tmp_path: Path):
    src = tmp_path / "My Photos"
    expected = make_bad_corpus(src)
    store = Store(tmp_path / "home")
    spec = _one_batch(src)
    _check_corpus_ingest(store, spec, expected)
    images = store.read_table("images", spec.key)
    # folder images are read in place, not copied
    for path in images.column("path").to_pylist():
        assert Path(path).is_relative_to(src.resolve())
    assert not any(store.partition_images_dir(spec.key).iterdir())


def test_ingest_zipped_corpus(tmp_path: Path):
    src = tmp_path / "corpus"
    expected = make_bad_corpus(src)
    archive = zip_corpus(src, tmp_path / "corpus.zip")
    with zipfile.ZipFile(archive) as zf:
        assert any(n.startswith("__MACOSX/") for n in zf.namelist()) and HIDDEN in zf.namelist()
    store = Store(tmp_path / "home")
    spec = _one_batch(archive)
    assert spec.root == str(archive.resolve())
    _check_corpus_ingest(store, spec, expected)
    # zip members are extracted into images/<partition>/, one file per accepted image
    images = store.read_table("images", spec.key)
    part_dir = store.partition_images_dir(spec.key)
    on_disk = sorted(p.name for p in part_dir.iterdir())
    assert on_disk == sorted(Path(p).name for p in images.column("path").to_pylist())
    for path in images.column("path").to_pylist():
        assert Path(path).parent == part_dir
    assert not list(store.images_dir.glob(".*staging*"))


def test_reingesting_a_partition_replaces_its_rows(tmp_path: Path):
    src = tmp_path / "corpus"
    make_bad_corpus(src)
    archive = zip_corpus(src, tmp_path / "archive.zip")
    store = Store(tmp_path / "home")
    for root in (src, archive):
        spec = _one_batch(root)
        first = ingest_batch(store, spec, max_pixels=CORPUS_MAX_PIXELS, workers=2)
        files_before = sorted(p.name for p in store.partition_images_dir(spec.key).iterdir())
        second = ingest_batch(store, spec, max_pixels=CORPUS_MAX_PIXELS, workers=1)
        assert spec.key in store.partitions("images") and spec.key in store.partitions("rejected")
        images = store.read_table("images", spec.key)
        rejected = store.read_table("rejected", spec.key)
        assert images.num_rows == first.images.num_rows == second.images.num_rows
        assert rejected.num_rows == first.rejected.num_rows
        assert sorted(images.column("id").to_pylist()) == sorted(first.images.column("id").to_pylist())
        assert sorted(p.name for p in store.partition_images_dir(spec.key).iterdir()) == files_before
    # the two partitions (folder and zip) are separate files; the whole table holds both, once each
    assert len(store.partitions("images")) == 2
    assert store.read_table("images").num_rows == 2 * first.images.num_rows


def test_a_file_that_vanishes_after_planning_is_recorded_and_the_run_goes_on(tmp_path: Path):
    src = tmp_path / "corpus"
    make_bad_corpus(src)
    spec = _one_batch(src)
    (src / "good.bmp").unlink()  # deleted between planning and ingest
    store = Store(tmp_path / "home")
    result = ingest_batch(store, spec, max_pixels=CORPUS_MAX_PIXELS, workers=2)
    bad = _rows(result.rejected)
    assert "unreadable file" in bad["good.bmp"]["reason"]
    assert bad["good.bmp"]["bytes"] is None
    assert bad["good.bmp"]["path"] == str(src.resolve() / "good.bmp")
    assert result.files_in == len(spec.files)
    assert "good.jpg" in _rows(result.images)


def test_a_directory_named_like_an_image_is_not_listed_a_broken_link_is_and_both_are_rejected(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.png").write_bytes((Path(__file__).parent / "corpus.py").read_bytes())  # not an image
    (src / "folder.jpg").mkdir()
    (src / "dangling.png").symlink_to(src / "missing.png")
    # a broken link is listed, so that ingest records it (files in = images + rejected)
    assert list_source_files(src) == ["dangling.png", "ok.png"]
    # a manifest written by hand (or before the tree changed) may still name them
    spec = BatchSpec(
        key="folder-src-00000", source="folder", root=str(src), files=["ok.png", "folder.jpg", "dangling.png"]
    )
    result = ingest_batch(Store(tmp_path / "home"), spec)
    bad = _rows(result.rejected)
    assert set(bad) == {"ok.png", "folder.jpg", "dangling.png"}
    assert "not a recognised image" in bad["ok.png"]["reason"]
    assert "unreadable file" in bad["folder.jpg"]["reason"]
    assert "unreadable file" in bad["dangling.png"]["reason"]
    assert result.images.num_rows == 0


def test_a_damaged_zip_member_is_recorded_and_the_run_goes_on(tmp_path: Path):
    src = tmp_path / "corpus"
    make_bad_corpus(src)
    archive = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.write(src / "good.png", "good.png")
        zf.write(src / "good.bmp", "good.bmp")
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("good.bmp")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + 100] ^= 0xFF  # flip a byte of the stored data: the CRC check fails on read
    archive.write_bytes(bytes(raw))
    spec = _one_batch(archive)
    spec = BatchSpec(key=spec.key, source="folder", root=spec.root, files=[*spec.files, "not-in-the-zip.png"])
    result = ingest_batch(Store(tmp_path / "home"), spec)
    bad = _rows(result.rejected)
    assert "unreadable zip member" in bad["good.bmp"]["reason"]
    assert "unreadable zip member" in bad["not-in-the-zip.png"]["reason"]
    assert list(_rows(result.images)) == ["good.png"]


def test_progress_reports_the_last_file(tmp_path: Path):
    calls: list[tuple[int, int]] = []
    spec = plan_sketch(seed=5, images=3, partition_size=3, size=32)[0]
    ingest_batch(Store(tmp_path), spec, workers=2, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (3, 3)


def _sketch_rows(store: Store, spec: BatchSpec) -> dict[str, dict]:
    return _rows(ingest_batch(store, spec, workers=2).images)


def test_sketch_batches_are_deterministic_with_captions_and_labels(tmp_path: Path):
    spec = plan_sketch(seed=7, images=10, partition_size=10, size=48)[0]
    a = _sketch_rows(Store(tmp_path / "a"), spec)
    b = _sketch_rows(Store(tmp_path / "b"), spec)
    assert len(a) == 10
    assert {n: (r["id"], r["pixel_hash"], r["content_hash"]) for n, r in a.items()} == {
        n: (r["id"], r["pixel_hash"], r["content_hash"]) for n, r in b.items()
    }
    for name, row in a.items():
        i = int(name.rsplit("/", 1)[1])
        drawn = sketch.draw(7, i, size=48)
        assert row["label"] == drawn.label and row["label"] in sketch.CLASS_WEIGHTS
        assert row["caption"] == drawn.caption and row["caption"]
        assert row["color"] == drawn.color
        assert row["seed"] == 7 * 1_000_000_000 + i
        assert (row["width"], row["height"]) == (48, 48)
        assert row["source"] == "sketch" and row["format"] == "PNG"
        assert Path(row["path"]).is_file()
        assert pixel_hash(decode(Path(row["path"]).read_bytes()).image) == row["pixel_hash"]

    other = _sketch_rows(Store(tmp_path / "c"), plan_sketch(seed=8, images=10, partition_size=10, size=48)[0])
    assert not {r["id"] for r in a.values()} & {r["id"] for r in other.values()}
    assert {r["pixel_hash"] for r in a.values()} != {r["pixel_hash"] for r in other.values()}


def test_sketch_images_do_not_depend_on_how_the_stream_was_partitioned(tmp_path: Path):
    whole = _sketch_rows(Store(tmp_path / "whole"), plan_sketch(seed=9, images=8, partition_size=8, size=32)[0])
    store = Store(tmp_path / "parts")
    parts = plan_sketch(seed=9, images=8, partition_size=3, size=32)
    assert [s.count for s in parts] == [3, 3, 2]
    split: dict[str, dict] = {}
    for spec in parts:
        split.update(_sketch_rows(store, spec))
    assert {n: r["id"] for n, r in whole.items()} == {n: r["id"] for n, r in split.items()}


def test_black_sketch_frames_have_zero_luminance_spread(tmp_path: Path):
    labels = sketch.class_sequence(seed=1, count=60)
    first_black = labels.index("black")
    spec = BatchSpec(key="sketch-black", source="sketch", seed=1, start=first_black, count=1, size=32)
    row = next(iter(_sketch_rows(Store(tmp_path), spec).values()))
    assert row["label"] == "black"
    assert row["lum_mean"] < 30


@pytest.mark.parametrize("key", ["bad,key", "-leading", "has space", ""])
def test_bad_partition_keys_cannot_name_a_batch(key: str):
    with pytest.raises(ValueError, match="bad partition key"):
        BatchSpec(key=key, source="sketch", count=1)
