"""Deleted or corrupted state: a clear error naming the file and the asset to re-materialise, and
re-materialising heals it; a disk that fills up mid-write leaves the last good version."""

from __future__ import annotations

import errno
import io
import shutil
from contextlib import redirect_stderr
from pathlib import Path

import pytest
from faultkit import differences, snapshot

from hotdog_dagster import cli
from hotdog_dagster.core.io import catalog
from hotdog_dagster.core.io import store as store_module
from hotdog_dagster.core.io.batches import list_batches, load_batch, plan_sketch, save_batch
from hotdog_dagster.core.io.store import CorruptFile, Store
from hotdog_dagster.core.search import index
from hotdog_dagster.core.search.engine import Searcher
from hotdog_dagster.core.settings import IngestSettings, ModelSettings, Profile
from hotdog_dagster.definitions import build_definitions
from hotdog_dagster.pipeline import dagster_instance, execute, failure_message, run_pipeline

pytestmark = pytest.mark.reliability

PROFILE = Profile(model=ModelSettings(batch_size=32, num_workers=0), ingest=IngestSettings(sketch_size=64, workers=2))
SPECS = plan_sketch(seed=5, images=40, partition_size=20, size=64)
P0, P1 = SPECS[0].key, SPECS[1].key


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clean home (two sketch batches and the whole set), built once; tests work on copies."""
    root = tmp_path_factory.mktemp("reference") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)
        mp.setenv("HOTDOG_HOME", str(root))
        summary = run_pipeline(Store(root), PROFILE, SPECS, walk=False)
    assert summary.ok, summary.failed
    return root


@pytest.fixture
def copy(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A private copy of the clean home (its Dagster instance included)."""
    root = tmp_path / "home"
    shutil.copytree(built, root, symlinks=True)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("HOTDOG_HOME", str(root))
    return Store(root)


def _run(store: Store, job: str, partition: str | None = None) -> tuple[bool, str]:
    instance = dagster_instance(store)
    ok, run_id = execute(build_definitions(PROFILE, home=str(store.root)), job, instance, partition)
    return ok, "" if ok else failure_message(instance, run_id)


def _same_as(store: Store, built: Path) -> list[str]:
    return differences(snapshot(store.root, aliases=(built,)), snapshot(built))


def _cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err):
        code = cli.main(list(args))
    return code, err.getvalue()


def test_corrupt_and_deleted_partitions_name_file_and_asset_and_rematerialising_heals(copy: Store, built: Path):
    images_p0 = copy.table_path("images", P0)
    images_p0.write_bytes(images_p0.read_bytes()[: images_p0.stat().st_size // 2])  # torn
    embeddings_p1 = copy.table_path("embeddings", P1)
    embeddings_p1.write_bytes(b"not parquet at all" * 50)  # overwritten
    copy.table_path("label_scores", P1).unlink()  # deleted

    with pytest.raises(CorruptFile) as err:
        copy.read_table("images", P0)
    assert str(images_p0) in str(err.value) and "'images'" in str(err.value) and P0 in str(err.value)
    with pytest.raises(
        CorruptFile, match=rf"{embeddings_p1}.*re-materialise the asset 'embeddings' for partition {P1}"
    ):
        copy.read_table("embeddings")
    code, stderr = _cli("search", "a face", "--home", str(copy.root))
    assert code == 2 and str(embeddings_p1) in stderr and "re-materialise" in stderr and stderr.count("\n") == 1

    ok, message = _run(copy, "whole_set")
    assert not ok and "is unreadable" in message and "re-materialise the asset" in message, message

    # What the messages say to do: re-materialise each damaged partition, in any order. While the
    # other is still damaged, a check over the whole table reports it as a failed check (naming
    # the file) rather than failing the batch's run.
    for key in (P0, P1):
        ok, message = _run(copy, "ingest_batch", key)
        assert ok, message
    ok, message = _run(copy, "whole_set")
    assert ok, message
    assert _same_as(copy, built) == []


@pytest.mark.parametrize("name", ["images.faiss", "ids.parquet", "meta.json"])
def test_a_corrupt_index_file_is_named_and_rebuilt(copy: Store, built: Path, name: str):
    path = copy.index_dir / name
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptFile, match=rf"{path}.*image_index"):
        index.load(copy)
    with pytest.raises(CorruptFile, match="image_index"):
        Searcher.open(copy, device="cpu")
    code, stderr = _cli("search", "a face", "--home", str(copy.root))
    assert code == 2 and "image_index" in stderr
    index.update_from_store(copy)  # what image_index runs
    assert _same_as(copy, built) == []


def test_the_index_update_names_a_damaged_embeddings_partition(copy: Store, built: Path):
    """The incremental update reads a changed partition's row count first; that read named nothing."""
    path = copy.table_path("embeddings", P1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptFile, match=rf"{path}.*re-materialise the asset 'embeddings' for partition {P1}"):
        index.update_from_store(copy)
    assert index.load(copy).ids.tolist() == index.load(Store(built)).ids.tolist()  # the last good index stays


def test_a_deleted_index_is_rebuilt(copy: Store, built: Path):
    shutil.rmtree(copy.index_dir)
    with pytest.raises(FileNotFoundError, match="materialise image_index"):
        index.load(copy)
    index.update_from_store(copy)
    assert snapshot(copy.root)["index"] == snapshot(built)["index"]


def test_a_corrupt_manifest_is_restored_from_its_partition_or_named(copy: Store):
    path = copy.batches_dir / f"{P0}.json"
    path.write_text('{"key": "sketch-s5-00')  # torn
    assert load_batch(copy, P0) == SPECS[0]  # restored from the images partition's copy
    assert load_batch(copy, P0) == SPECS[0] and path.read_text().startswith("{")

    later = plan_sketch(seed=5, images=60, partition_size=20, size=64)[2]  # planned, never run
    save_batch(copy, later)
    (copy.batches_dir / f"{later.key}.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(CorruptFile, match=rf"{later.key}\.json is unreadable.*plan partition {later.key} again"):
        load_batch(copy, later.key)
    keys = [b.key for b in list_batches(copy)]  # one bad manifest must not stop every plan
    assert keys == [P0, P1]
    assert (copy.batches_dir / f"{later.key}.json.corrupt").exists()
    code, _ = _cli("plan", "--source", "sketch", "--seed", "5", "--images", "60", "--partition-size", "20",
                   "--home", str(copy.root), "--config", str(_profile_file(copy)))  # fmt: skip
    assert code == 0 and load_batch(copy, later.key) == later


def _profile_file(store: Store) -> Path:
    path = store.root.parent / "profile.yaml"
    path.write_text("ingest:\n  sketch_size: 64\n")
    return path


def test_a_corrupt_catalog_is_named_and_rebuilt_by_the_whole_set(copy: Store, built: Path):
    with open(copy.catalog_path, "r+b") as fh:  # the header: DuckDB refuses the file
        fh.write(b"\xde\xad\xbe\xef" * 64)
    wanted = rf"{copy.catalog_path}.*re-materialise clean_images/search_items"
    with pytest.raises(CorruptFile, match=wanted), catalog.reading(copy):
        pass
    code, stderr = _cli("search", "a face", "--home", str(copy.root))
    assert code == 2 and "catalog.duckdb" in stderr and "re-materialise" in stderr
    ok, message = _run(copy, "whole_set")
    assert ok, message
    assert list(copy.root.glob("catalog.duckdb.corrupt-*")), "the damaged file is kept aside for inspection"
    assert _same_as(copy, built) == []


def test_a_full_disk_mid_materialisation_keeps_the_last_good_partition(
    copy: Store, built: Path, monkeypatch: pytest.MonkeyPatch
):
    before = copy.table_path("embeddings", P0).read_bytes()
    real = store_module.pq.write_table

    def full_for_embeddings(data, where, **kw):  # noqa: ANN001, ANN202
        if "embeddings" in Path(where).parts:
            with open(where, "wb") as fh:
                fh.write(b"PAR1 partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real(data, where, **kw)

    monkeypatch.setattr(store_module.pq, "write_table", full_for_embeddings)
    ok, message = _run(copy, "ingest_batch", P0)
    assert not ok and "No space left on device" in message, message
    assert copy.table_path("embeddings", P0).read_bytes() == before
    assert not [p for p in copy.root.rglob("*.tmp")], "no temporary file is left behind"
    monkeypatch.undo()
    assert _run(copy, "ingest_batch", P0)[0]
    assert _same_as(copy, built) == []


def test_a_torn_dbt_manifest_is_not_trusted(tmp_path: Path) -> None:
    """prepare_dbt parses again when the manifest is not whole JSON, even if it is newer than the models."""
    from hotdog_dagster.dbt_project import _usable, dbt_project, prepare_dbt

    real = prepare_dbt()
    assert _usable(real)
    torn = tmp_path / "manifest.json"
    torn.write_bytes(real.read_bytes()[:1000])
    assert not _usable(torn)
    torn.write_text("[]")
    assert not _usable(torn)
    assert dbt_project.manifest_path == real
