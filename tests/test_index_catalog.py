"""Embedding a partition, the FAISS index over every partition, the DuckDB catalog, atomic writes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus import encode, photo

from hotdog_dagster.core.io import catalog
from hotdog_dagster.core.io.batches import BatchSpec, plan_sketch
from hotdog_dagster.core.io.decode import decode
from hotdog_dagster.core.io.ingest import ingest_batch
from hotdog_dagster.core.io.store import Store, atomic_path, replace_dir
from hotdog_dagster.core.io.vectors import column_matrix, vector_column
from hotdog_dagster.core.model.embedding import embed_partition, embed_paths
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.names import RANDOM_SKETCH_MODEL
from hotdog_dagster.core.search import index

SKETCH_IMAGES = 12


@pytest.fixture(scope="module")
def encoder() -> ClipEncoder:
    assert RANDOM_SKETCH_MODEL == "open_clip/hotdog-sketch/random"
    return ClipEncoder(RANDOM_SKETCH_MODEL, device="cpu")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, encoder: ClipEncoder) -> dict:
    """A store with a sketch partition (captioned) and a folder partition (no captions), both embedded."""
    tmp = tmp_path_factory.mktemp("embedded")
    store = Store(tmp / "home")
    sketch_spec = plan_sketch(seed=11, images=SKETCH_IMAGES, partition_size=SKETCH_IMAGES, size=64)[0]
    ingest_batch(store, sketch_spec, workers=2)
    src = tmp / "photos"
    src.mkdir()
    for i in range(3):
        (src / f"p{i}.png").write_bytes(encode(photo(80, 60, seed=100 + i), "PNG"))
    (src / "broken.jpg").write_bytes(b"not an image")
    folder_spec = BatchSpec(
        key="folder-photos-00000",
        source="folder",
        root=str(src),
        files=["broken.jpg", "p0.png", "p1.png", "p2.png"],
    )
    ingest_batch(store, folder_spec, workers=2)
    w0 = embed_partition(store, sketch_spec.key, encoder, batch_size=5, num_workers=0)
    w1 = embed_partition(store, sketch_spec.key, encoder, batch_size=5, num_workers=1)
    folder = embed_partition(store, folder_spec.key, encoder, batch_size=8, num_workers=0)
    return {"store": store, "sketch": sketch_spec, "folder": folder_spec, "w0": w0, "w1": w1, "folder_result": folder}


# -- embedding ------------------------------------------------------------------------------------


def test_workers_give_the_same_vectors_in_the_same_order(embedded):
    t0, t1 = embedded["w0"].table, embedded["w1"].table
    assert t0.column("id").to_pylist() == t1.column("id").to_pylist()
    v0, v1 = column_matrix(t0.column("vector")), column_matrix(t1.column("vector"))
    assert v0.shape == (SKETCH_IMAGES, 128)
    # a random model maps every image close to every other, so compare tightly: rows of different
    # images differ by far more than this tolerance, so a shuffled order would fail
    assert np.abs(v0 - v1).max() < 1e-6
    assert min(np.abs(v0[i] - v0[i + 1]).max() for i in range(len(v0) - 1)) > 1e-5


def test_embeddings_match_their_images_and_are_unit_norm(embedded, encoder: ClipEncoder):
    store: Store = embedded["store"]
    key = embedded["sketch"].key
    table = store.read_table("embeddings", key)
    images = store.read_table("images", key)
    assert table.column("id").to_pylist() == images.column("id").to_pylist()
    assert set(table.column("partition").to_pylist()) == {key}
    assert set(table.column("model").to_pylist()) == {RANDOM_SKETCH_MODEL}
    vectors = column_matrix(table.column("vector"))
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # row i is image i: re-encode two of them one at a time
    paths = images.column("path").to_pylist()
    for i in (0, SKETCH_IMAGES - 1):
        again = encoder.encode_pil([decode(Path(paths[i]).read_bytes()).image])[0]
        assert np.abs(again - vectors[i]).max() < 1e-5
        others = np.delete(vectors, i, axis=0)
        assert np.abs(others - again).max(axis=1).min() > 1e-5


def test_text_vectors_where_there_is_a_caption(embedded, encoder: ClipEncoder):
    store: Store = embedded["store"]
    sketch_table = store.read_table("embeddings", embedded["sketch"].key)
    captions = store.read_table("images", embedded["sketch"].key).column("caption").to_pylist()
    assert all(captions)
    text = sketch_table.column("text_vector")
    assert text.null_count == 0
    text_m = column_matrix(text)
    np.testing.assert_allclose(np.linalg.norm(text_m, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(text_m[:3], encoder.encode_texts(captions[:3]), atol=1e-5)

    folder_table = store.read_table("embeddings", embedded["folder"].key)
    assert folder_table.num_rows == 3  # the broken file never reached the images table
    assert folder_table.column("text_vector").null_count == 3
    assert folder_table.column("vector").null_count == 0


def test_a_file_that_fails_to_decode_at_embedding_time_is_recorded(tmp_path: Path, encoder: ClipEncoder):
    store = Store(tmp_path / "home")
    spec = plan_sketch(seed=12, images=4, partition_size=4, size=64)[0]
    images = ingest_batch(store, spec, workers=2).images
    gone_id, gone_path = images.column("id")[1].as_py(), images.column("path")[1].as_py()
    Path(gone_path).unlink()
    Path(images.column("path")[2].as_py()).write_bytes(b"scribbled over")
    result = embed_partition(store, spec.key, encoder, batch_size=2, num_workers=0)
    bad_id = images.column("id")[2].as_py()
    assert set(result.failures) == {gone_id, bad_id}
    assert result.failures[gone_id][0] == "unreadable" and "FileNotFoundError" in result.failures[gone_id][1]
    assert result.failures[bad_id] == (
        "not_an_image",
        "ImageRejected: not a recognised image (the bytes match no image format)",
    )
    kept = result.table.column("id").to_pylist()
    assert kept == [images.column("id")[i].as_py() for i in (0, 3)]
    assert column_matrix(result.table.column("vector")).shape == (2, 128)
    assert column_matrix(result.table.column("text_vector")).shape == (2, 128)
    failures = store.read_table("embedding_failures", spec.key)
    assert sorted(failures.column("id").to_pylist()) == sorted([gone_id, bad_id])
    assert sorted(failures.column("reason_code").to_pylist()) == ["not_an_image", "unreadable"]


def test_embed_paths_with_nothing_to_do(encoder: ClipEncoder):
    result = embed_paths(encoder, [], num_workers=0)
    assert result.vectors.shape == (0, 128) and len(result.ok_index) == 0 and result.failures == {}


def test_embedding_a_partition_without_images_says_so(tmp_path: Path, encoder: ClipEncoder):
    with pytest.raises(FileNotFoundError, match="materialise raw_images"):
        embed_partition(Store(tmp_path), "sketch-s1-0000000", encoder, num_workers=0)


# -- the index ------------------------------------------------------------------------------------


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_index_over_model_embeddings(embedded):
    store: Store = embedded["store"]
    info = index.build_from_store(store)
    table = store.read_table("embeddings")
    assert info.vectors == table.num_rows == SKETCH_IMAGES + 3
    assert info.partitions == 2 and info.dim == 128 and info.kind == "Flat,IP" and info.gpu is False
    loaded = index.load(store)
    assert loaded.index.ntotal == table.num_rows
    assert loaded.info == info
    assert list(loaded.ids) == table.column("id").to_pylist()
    vectors = column_matrix(table.column("vector"))
    scores, positions = loaded.search(vectors, k=table.num_rows)
    assert (scores[:, 0] >= 0.999).all()
    # a random model puts all images close together, so several may tie with the image itself
    for i in range(len(vectors)):
        ties = positions[i][scores[i] >= scores[i, 0] - 1e-5]
        assert i in ties
    assert not list(store.root.glob(".index*"))


def test_index_build_from_store_and_load_align_ids(tmp_path: Path):
    store = Store(tmp_path / "home")
    rng = np.random.default_rng(0)
    ids_by_part = {}
    for p, n in (("part-b", 40), ("part-a", 25), ("part-c", 1)):
        ids = [f"{p}-{i}" for i in range(n)]
        ids_by_part[p] = ids
        store.write_table(
            "embeddings",
            pa.table(
                {
                    "id": pa.array(ids),
                    "partition": pa.array([p] * n),
                    "model": pa.array(["test"] * n),
                    "vector": vector_column(_unit(rng, n, 16)),
                }
            ),
            p,
        )
    info = index.build_from_store(store)
    loaded = index.load(store)
    table = store.read_table("embeddings")
    assert info.vectors == loaded.index.ntotal == 66 and info.partitions == 3
    vectors = column_matrix(table.column("vector"))
    by_id = dict(zip(table.column("id").to_pylist(), vectors, strict=True))
    # position i of the index holds the vector of the image named at position i of the id map
    for pos, iid in enumerate(loaded.ids):
        np.testing.assert_array_equal(loaded.index.reconstruct(pos), by_id[iid])
    scores, positions = loaded.search(vectors, k=3)
    assert (scores[:, 0] >= 0.999).all()
    assert [loaded.ids[p] for p in positions[:, 0]] == table.column("id").to_pylist()
    assert set(index.id_table(store).column("partition").to_pylist()) == {"part-a", "part-b", "part-c"}
    # k larger than the index is clipped, and a single query vector is accepted
    s, p = loaded.search(vectors[0], k=1000)
    assert s.shape == p.shape == (1, 66)

    # rebuilding after a partition is dropped swaps the whole index
    store.drop_partition("embeddings", "part-b")
    assert index.build_from_store(store).vectors == 26
    reloaded = index.load(store)
    assert reloaded.index.ntotal == 26 and all(not i.startswith("part-b") for i in reloaded.ids)


def _write_part(store: Store, part: str, n: int, seed: int) -> None:
    ids = [f"{part}-{i}" for i in range(n)]
    rng = np.random.default_rng(seed)
    store.write_table(
        "embeddings",
        pa.table(
            {"id": ids, "partition": [part] * n, "model": ["test"] * n, "vector": vector_column(_unit(rng, n, 16))}
        ),
        part,
    )


def _same_as_full_rebuild(store: Store) -> None:
    """The incremental index holds exactly the vectors a rebuild would, each at its id's position."""
    loaded = index.load(store)
    table = store.read_table("embeddings")
    by_id = dict(zip(table.column("id").to_pylist(), column_matrix(table.column("vector")), strict=True))
    assert sorted(loaded.ids.tolist()) == sorted(by_id)
    for pos, iid in enumerate(loaded.ids):
        np.testing.assert_array_equal(loaded.index.reconstruct(pos), by_id[iid])


def test_index_grows_per_batch_and_follows_removed_and_redone_partitions(tmp_path: Path):
    store = Store(tmp_path / "home")
    _write_part(store, "p1", 30, 1)
    index.update_from_store(store)
    assert index.read_meta(store)["full_rebuild"]
    _write_part(store, "p2", 20, 2)
    info = index.update_from_store(store)
    meta = index.read_meta(store)
    assert info.vectors == 50 and meta["added"] == 20 and meta["removed"] == 0 and not meta["full_rebuild"]
    _same_as_full_rebuild(store)
    # nothing changed: nothing added or removed
    index.update_from_store(store)
    assert (index.read_meta(store)["added"], index.read_meta(store)["removed"]) == (0, 0)
    # a re-materialised partition is replaced, a deleted one removed
    time.sleep(0.01)
    _write_part(store, "p1", 12, 3)
    store.write_table("embeddings", store.read_table("embeddings", "p2"), "p2")  # rewritten, same rows
    store.drop_partition("embeddings", "p2")
    _write_part(store, "p3", 5, 4)
    info = index.update_from_store(store)
    meta = index.read_meta(store)
    assert info.vectors == 17 and meta["removed"] == 50 and meta["added"] == 17 and not meta["full_rebuild"]
    _same_as_full_rebuild(store)
    # a full rebuild on request gives the same index
    index.update_from_store(store, rebuild=True)
    assert index.read_meta(store)["full_rebuild"]
    _same_as_full_rebuild(store)


def test_index_without_embeddings_says_so(tmp_path: Path):
    store = Store(tmp_path)
    with pytest.raises(FileNotFoundError, match="image_embeddings"):
        index.build_from_store(store)
    with pytest.raises(FileNotFoundError, match="image_index"):
        index.load(store)
    with pytest.raises(ValueError, match="unknown index kind"):
        index.build(np.zeros((2, 4), np.float32), kind="annoy")


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_the_true_nearest_neighbour(kind: str):
    rng = np.random.default_rng(1)
    data = _unit(rng, 3000, 32)
    queries = data[:200] + rng.normal(scale=0.05, size=(200, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat, desc = index.build(data, kind="flat")
    assert desc == "Flat,IP"
    _, truth = flat.search(queries, 1)
    approx, desc = index.build(data, kind=kind)
    assert desc.startswith("IVF" if kind == "ivf" else "HNSW")
    assert approx.ntotal == 3000
    _, got = approx.search(queries, 1)
    assert (got[:, 0] == truth[:, 0]).mean() >= 0.9


def test_auto_index_is_flat_up_to_flat_max_then_ivf():
    data = _unit(np.random.default_rng(2), 500, 8)
    assert index.build(data)[1] == "Flat,IP"
    assert index.build(data, flat_max=100)[1].startswith("IVF")


# -- the catalog ----------------------------------------------------------------------------------


def test_catalog_views_and_read_only_connection(embedded):
    store: Store = embedded["store"]
    with pytest.raises(FileNotFoundError, match="no catalog"):
        catalog.connect(Store(store.root / "elsewhere"))
    counts = catalog.refresh(store)
    images = store.read_table("images")
    rejected = store.read_table("rejected")
    embeddings = store.read_table("embeddings")
    assert counts["images"] == images.num_rows == SKETCH_IMAGES + 3
    assert counts["rejected"] == rejected.num_rows == 1
    assert counts["embeddings"] == embeddings.num_rows
    assert counts["embedding_failures"] == 0
    assert catalog.refresh(store) == counts  # refreshing again changes nothing

    with catalog.connect(store, read_only=True) as con:
        views = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"images", "rejected", "embeddings"} <= views
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == images.num_rows
        per_partition = dict(con.execute("SELECT partition, count(*) FROM images GROUP BY ALL").fetchall())
        assert per_partition == {embedded["sketch"].key: SKETCH_IMAGES, embedded["folder"].key: 3}
        reason = con.execute("SELECT reason FROM rejected WHERE source_name = 'broken.jpg'").fetchone()[0]
        assert "not a recognised image" in reason
        joined = con.execute("SELECT count(*) FROM images JOIN embeddings USING (id)").fetchone()[0]
        assert joined == embeddings.num_rows
        with pytest.raises(Exception, match="read-only"):
            con.execute("CREATE TABLE t AS SELECT 1")

    # a new partition shows up in the existing view without a refresh (views read the files)
    ingest_batch(store, plan_sketch(seed=99, images=2, partition_size=2, size=32)[0], workers=1)
    with catalog.connect(store) as con:
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == images.num_rows + 2


def test_catalog_includes_unpartitioned_tables(tmp_path: Path):
    store = Store(tmp_path)
    store.write_table("label_scores", pa.table({"id": ["a", "b"], "score": [0.1, 0.9]}))
    assert catalog.refresh(store) == {"label_scores": 2}


# -- atomic writes --------------------------------------------------------------------------------


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path: Path):
    """Workers on shared storage may run as another user: a data file must be as readable as any other."""
    import os

    path = Store(tmp_path).write_table("t", pa.table({"x": [1]}), "p1")
    old = os.umask(0)
    os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~old


def test_write_table_is_atomic(tmp_path: Path):
    store = Store(tmp_path)
    good = pa.table({"x": [1, 2, 3]})
    path = store.write_table("t", good, "p1")
    assert path == store.table_path("t", "p1")

    with pytest.raises(RuntimeError, match="crash"), atomic_path(path) as tmp:
        pq.write_table(pa.table({"x": [9]}), tmp)
        raise RuntimeError("crash while writing")
    assert store.read_table("t", "p1").equals(good)

    with pytest.raises((TypeError, AttributeError)):
        store.write_table("t", {"x": "not a table"}, "p1")  # type: ignore[arg-type]
    assert store.read_table("t", "p1").equals(good)
    assert [p.name for p in path.parent.iterdir()] == ["p1.parquet"]  # no temporary files left behind

    replacement = pa.table({"x": [4]})
    store.write_table("t", replacement, "p1")
    assert store.read_table("t", "p1").equals(replacement)
    assert store.partitions("t") == ["p1"]


def test_read_table_forms(tmp_path: Path):
    store = Store(tmp_path)
    assert store.read_table("t") is None and store.read_table("t", "p") is None
    store.write_table("t", pa.table({"x": [1]}), "a")
    store.write_table("t", pa.table({"x": [2, 3], "y": ["u", "v"]}), "b")
    whole = store.read_table("t")
    assert whole.num_rows == 3 and whole.column("y").to_pylist() == [None, "u", "v"]
    assert store.read_table("t", "b", columns=["y"]).column_names == ["y"]
    store.drop_partition("t", "a")
    store.drop_partition("t", "never-there")
    assert store.partitions("t") == ["b"]


def test_replace_dir_swaps_a_directory(tmp_path: Path):
    target = tmp_path / "index"
    for content in ("first", "second"):
        staging = tmp_path / ".index.staging"
        staging.mkdir()
        (staging / "file").write_text(content)
        replace_dir(staging, target)
        assert (target / "file").read_text() == content
        assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
