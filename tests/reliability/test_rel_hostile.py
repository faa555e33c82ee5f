"""Folder ingest of hostile files: every file in is an image or a rejected row with a reason code.

Decompression bombs, 0x0 and 100000x1 images, truncated files, symlink loops, FIFOs, unreadable
permissions, names with newlines and bytes that are not UTF-8, files over the size cap, zip bombs,
and files that change or are replaced while being read.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from faultkit import CAP_FOR_HOSTILE, hostile_folder, hostile_zip, reason_counts

from hotdog_dagster.core.io import ingest as ingest_module
from hotdog_dagster.core.io.batches import list_source_files, plan_folder
from hotdog_dagster.core.io.decode import REJECT_CODES
from hotdog_dagster.core.io.ingest import display_name, ingest_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.settings import IngestSettings, ModelSettings, Profile

pytestmark = pytest.mark.reliability

CAP = CAP_FOR_HOSTILE  # the ingest's file cap in these tests (the default is 1 GiB)


def _ingest(store: Store, root: Path, **kw):
    files = list_source_files(root)
    (spec,) = plan_folder(root, files, partition_size=len(files) + 1)
    return spec, ingest_batch(store, spec, workers=2, max_file_bytes=CAP, **kw)


def test_every_hostile_file_is_an_image_or_rejected_with_its_reason(tmp_path: Path) -> None:
    folder = hostile_folder(tmp_path / "hostile", max_file_bytes=CAP)
    for note in folder.notes:
        print(note)
    listed = list_source_files(folder.root)
    assert sorted(listed) == sorted(folder.expected), "every entry that is not a folder is listed"
    spec, result = _ingest(Store(tmp_path / "home"), folder.root)

    assert result.files_in == len(listed) == result.images.num_rows + result.rejected.num_rows
    got = {r["source_name"]: r["reason_code"] for r in result.rejected.to_pylist()}
    got.update({r["source_name"]: "image" for r in result.images.to_pylist()})
    want = {display_name(name): code for name, code in folder.expected.items()}
    assert got == want
    assert set(reason_counts(result.rejected)) <= set(REJECT_CODES)
    for row in result.rejected.to_pylist():
        assert row["reason"], row  # a sentence, not only a code


def test_a_file_replaced_or_rewritten_while_being_read_is_rejected_as_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real rename over the file (and a real append to another) in the middle of its read."""
    from faultkit import encoded
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    for name in ("replaced.png", "growing.png", "steady.png"):
        (src / name).write_bytes(encoded(Image.new("RGB", (40, 40), (len(name) * 9, 90, 10))))
    (tmp_path / "other.png").write_bytes(encoded(Image.new("RGB", (40, 40), (0, 0, 255))))
    real_read = os.read
    done: set[str] = set()

    def racing_read(fd: int, n: int) -> bytes:
        target = os.readlink(f"/proc/self/fd/{fd}")
        chunk = real_read(fd, min(n, 64))  # read a little, then the world changes under the reader
        name = Path(target).name
        if name not in done:
            done.add(name)
            if name == "replaced.png":
                os.replace(tmp_path / "other.png", src / "replaced.png")
            elif name == "growing.png":
                with open(src / "growing.png", "ab") as fh:
                    fh.write(b"\0" * 100)
        return chunk

    monkeypatch.setattr(ingest_module.os, "read", racing_read)
    spec, result = _ingest(Store(tmp_path / "home"), src)
    codes = {r["source_name"]: r["reason_code"] for r in result.rejected.to_pylist()}
    assert codes == {"replaced.png": "changed", "growing.png": "changed"}
    assert result.images.column("source_name").to_pylist() == ["steady.png"]


def test_permission_denied_is_rejected_as_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000 where it bites; as root (where it does not) the open is made to fail with EACCES."""
    from faultkit import encoded
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    (src / "locked.png").write_bytes(encoded(Image.new("RGB", (30, 30), (5, 5, 5))))
    (src / "locked.png").chmod(0)
    if os.access(src / "locked.png", os.R_OK):
        real_open = os.open

        def denying_open(path, flags, *a, **k):  # noqa: ANN001, ANN202
            if str(path).endswith("locked.png"):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(ingest_module.os, "open", denying_open)
        print("running as root: chmod 000 does not stop reads; the open is made to fail with EACCES instead")
    spec, result = _ingest(Store(tmp_path / "home"), src)
    (row,) = result.rejected.to_pylist()
    assert row["reason_code"] == "unreadable" and "EACCES" in row["reason"]


def test_zip_bomb_member_is_refused_without_inflating_it(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    expected = hostile_zip(archive, CAP)
    assert archive.stat().st_size < CAP // 50  # the member compresses to almost nothing
    spec, result = _ingest(Store(tmp_path / "home"), archive)
    got = {r["source_name"]: r["reason_code"] for r in result.rejected.to_pylist()}
    got.update({r["source_name"]: "image" for r in result.images.to_pylist()})
    assert got == expected
    for path in result.images.column("path").to_pylist():  # copies under images/<partition>/, plain names
        assert Path(path).parent == Store(tmp_path / "home").partition_images_dir(spec.key)
        assert "\n" not in Path(path).name and Path(path).is_file()


@pytest.mark.slow
def test_the_whole_pipeline_takes_a_hostile_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ingest too: embedding, cleaning, labels, the index, the catalog, dbt and search take the odd names."""
    from hotdog_dagster.core.search.engine import Part, Query, Searcher
    from hotdog_dagster.pipeline import run_pipeline

    monkeypatch.setenv("HOTDOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    folder = hostile_folder(tmp_path / "hostile", max_file_bytes=CAP)
    profile = Profile(
        model=ModelSettings(batch_size=16, num_workers=0),
        ingest=IngestSettings(sketch_size=64, workers=2, max_file_bytes=CAP),
    )
    store = Store(tmp_path / "home")
    specs = plan_folder(folder.root, list_source_files(folder.root), partition_size=100)
    summary = run_pipeline(store, profile, specs, walk=False)
    assert summary.ok, summary.failed
    images = sum(code == "image" for code in folder.expected.values())
    assert summary.tables["images"] == images
    assert summary.tables["rejected"] == len(folder.expected) - images
    assert summary.tables["embeddings"] == images and summary.tables["embedding_failures"] == 0
    with Searcher.open(store, device="cpu") as searcher:
        hits = searcher.search(Query(parts=(Part("text", "a red square"),), limit=50, include_flagged=True))
        names = {h.columns["source_name"] for h in hits}
    assert display_name(next(n for n in folder.expected if n.startswith("caf"))) in names
    assert "new\nline.png" in names
