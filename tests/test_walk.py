"""The ordered walk: the exact tour against a reference loop, improvement, rendering, and a real walk."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from hotdog_dagster.core.io import catalog
from hotdog_dagster.core.io.batches import plan_sketch
from hotdog_dagster.core.io.ingest import ingest_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.labels.scoring import LabelSet, score_partition
from hotdog_dagster.core.model.embedding import embed_partition
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.names import SKETCH_MODEL
from hotdog_dagster.core.search import index
from hotdog_dagster.core.search.engine import Searcher
from hotdog_dagster.core.settings import LabelSettings, WalkSettings
from hotdog_dagster.core.walk import tour as tour_module
from hotdog_dagster.core.walk.build import SCHEMA, TABLE, build_walk, render_walk
from hotdog_dagster.core.walk.definition import list_walks, load_walk, save_walk
from hotdog_dagster.core.walk.improve import improve, step_distances
from hotdog_dagster.core.walk.render import render
from hotdog_dagster.core.walk.select import StartNotFound, WalkError, select_walk
from hotdog_dagster.core.walk.tour import greedy_tour

# -- the reference: the naive loop, as plainly as it can be written -------------------------------


def reference_tour(v: np.ndarray, start: int, frames: int | None = None) -> np.ndarray:
    """Each next frame: the unvisited row of largest inner product (float64, rounded to float32), lowest row on a tie."""
    v64 = v.astype(np.float64)
    left = np.ones(len(v), dtype=bool)
    left[start] = False
    order = [start]
    while left.any() and (frames is None or len(order) < frames):
        rows = np.flatnonzero(left)
        s = (v64[rows] @ v64[order[-1]]).astype(np.float32)
        nxt = int(rows[s == s.max()][0])
        order.append(nxt)
        left[nxt] = False
    return np.asarray(order)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def uniform(n: int, d: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, d)))


def clustered(n: int, d: int, seed: int, clusters: int = 6) -> np.ndarray:
    """Tight clusters around a shared direction, like image embeddings of a few classes."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, d)))
    shared = unit(rng.standard_normal((1, d)))[0]
    label = rng.integers(0, clusters, n)
    return unit(2 * shared + centres[label] + 0.25 * rng.standard_normal((n, d)) / np.sqrt(d) * 4)


def copies(n: int, d: int, seed: int, distinct: int) -> np.ndarray:
    """Exact duplicates: ``n`` rows drawn from ``distinct`` vectors, so many scores tie exactly."""
    rng = np.random.default_rng(seed)
    base = uniform(distinct, d, seed)
    return base[rng.integers(0, distinct, n)]


@pytest.fixture(params=["bf16", "fp32"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["matrix", "lists"])
def plan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both plans of the tour, even for tiny inputs (which normally take the exact loop): every score
    in one matrix, or k-NN lists (what sets too large for the matrix get)."""
    monkeypatch.setattr(tour_module, "SMALL", 1)
    if request.param == "lists":
        monkeypatch.setattr(tour_module, "MATRIX_BYTES", 0)
    return request.param


# -- the tour ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 17, 150, 700])
@pytest.mark.parametrize("data", [uniform, clustered])
def test_tour_is_the_naive_loop(n: int, data, engine: str, plan: str) -> None:
    v = data(n, 48, seed=n)
    start = n // 3
    for k in (4, 40):  # small lists run out and exercise the fallback; large ones mostly suffice
        got = greedy_tour(v, start, k=k, engine=engine)
        np.testing.assert_array_equal(got.order, reference_tour(v, start))


@pytest.mark.parametrize("n,distinct", [(120, 9), (400, 100), (300, 300)])
def test_exact_ties_go_to_the_lowest_id(n: int, distinct: int, engine: str, plan: str) -> None:
    """Duplicated vectors tie exactly (more copies than k included): the lowest row wins, as in the loop."""
    v = copies(n, 32, seed=distinct, distinct=distinct)
    for k in (3, 16):
        np.testing.assert_array_equal(greedy_tour(v, 5, k=k, engine=engine).order, reference_tour(v, 5))


def test_orthogonal_vectors_tie_everywhere(engine: str, plan: str) -> None:
    """Every pair scores exactly 0: the tour is the rows in order, skipping the start."""
    v = np.eye(90, dtype=np.float32)
    got = greedy_tour(v, 7, k=5, engine=engine).order
    np.testing.assert_array_equal(got, reference_tour(v, 7))
    assert got.tolist() == [7, *[i for i in range(90) if i != 7]]


def test_default_path_without_forcing_lists() -> None:
    """Small sets and few frames from many vectors take the exact loop; the answer is the same."""
    v = uniform(3000, 32, seed=4)
    np.testing.assert_array_equal(greedy_tour(v[:40], 0).order, reference_tour(v[:40], 0))
    np.testing.assert_array_equal(greedy_tour(v, 9, max_frames=50).order, reference_tour(v, 9, frames=50))
    full = greedy_tour(v, 9)
    np.testing.assert_array_equal(full.order, reference_tour(v, 9))
    assert full.stats.engine in ("bf16-matrix", "fp32-matrix") and full.neighbours is None
    listed = greedy_tour(v, 9, matrix_bytes=0)
    np.testing.assert_array_equal(listed.order, full.order)
    assert listed.stats.engine in ("bf16", "fp32")
    assert listed.neighbours is not None and listed.neighbours.shape == (3000, tour_module.DEFAULT_K)


def test_max_frames_is_a_prefix(plan: str) -> None:
    v = clustered(500, 32, seed=8)
    whole = greedy_tour(v, 3, k=6).order
    part = greedy_tour(v, 3, k=6, max_frames=200).order
    np.testing.assert_array_equal(part, whole[:200])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=70),
    levels=st.integers(min_value=1, max_value=3),
    k=st.integers(min_value=1, max_value=12),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_tour_matches_on_coarse_vectors(n: int, levels: int, k: int, seed: int) -> None:
    """Vectors with coordinates in {-levels..levels}: ties everywhere, many at the ends of the lists.

    Both plans (a third of the examples use the matrix) and both engines."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-levels, levels + 1, size=(n, 6)).astype(np.float32)
    x[np.abs(x).sum(axis=1) == 0, 0] = 1
    v = unit(x)
    start = int(rng.integers(0, n))
    old = tour_module.SMALL
    tour_module.SMALL = 1
    try:
        engine = "bf16" if seed % 2 else "fp32"
        got = greedy_tour(v, start, k=k, engine=engine, matrix_bytes=0 if seed % 3 else 2**30).order
    finally:
        tour_module.SMALL = old
    np.testing.assert_array_equal(got, reference_tour(v, start))


def test_tour_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        greedy_tour(uniform(5, 4, 0), 5)
    with pytest.raises(ValueError, match="NaN"):
        greedy_tour(np.full((3, 4), np.nan, dtype=np.float32), 0)
    assert len(greedy_tour(np.zeros((0, 4), dtype=np.float32)).order) == 0
    assert greedy_tour(uniform(1, 4, 0)).order.tolist() == [0]


# -- improvement --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "v",
    [uniform(400, 24, 1), clustered(600, 24, 2), copies(300, 16, 3, 40), clustered(2500, 64, 5, clusters=20)],
    ids=["uniform", "clustered", "copies", "clustered-2500"],
)
def test_improve_never_lengthens_and_keeps_every_frame(v: np.ndarray) -> None:
    t = greedy_tour(v, 0)
    for neighbours in (t.neighbours, None):
        better = improve(v, t.order, neighbours)
        assert sorted(better.order.tolist()) == sorted(t.order.tolist())  # a permutation of the same frames
        assert better.order[0] == t.order[0]  # the start stays the start
        assert better.after.length <= better.before.length + 1e-9
        assert better.after.longest_jump <= better.before.longest_jump + 1e-9
        assert better.after.length == pytest.approx(step_distances(v, better.order).sum())


def test_improve_shortens_a_greedy_tour_with_stragglers() -> None:
    v = clustered(2500, 64, 5, clusters=20)
    t = greedy_tour(v, 0)
    better = improve(v, t.order, t.neighbours)
    assert better.after.length < better.before.length
    assert better.two_opt_moves + better.or_opt_moves > 0


def test_improve_a_subset_path() -> None:
    """A truncated walk improves over its own frames only."""
    v = uniform(800, 16, 6)
    t = greedy_tour(v, 2, max_frames=300)
    better = improve(v, t.order, t.neighbours)
    assert set(better.order.tolist()) == set(t.order.tolist())
    assert better.after.length <= better.before.length + 1e-9


def test_improve_rejects_repeated_frames() -> None:
    with pytest.raises(ValueError, match="twice"):
        improve(uniform(10, 4, 0), np.array([0, 1, 1, 2]))


# -- rendering ------------------------------------------------------------------------------------------


def _pictures(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = Image.new("RGB", (40 + 3 * i, 30 + 2 * i), (20 * i % 256, 255 - 15 * i % 256, 90))
        path = folder / f"p{i}.png"
        img.save(path)
        paths.append(str(path))
    return paths


def test_animation_files_decode_with_one_frame_per_step(tmp_path: Path) -> None:
    paths = _pictures(tmp_path / "pics", 9)
    paths[4] = str(tmp_path / "gone.png")  # a file deleted since ingest still gets its frame
    captions = [f"label {i} 0.{i}" for i in range(9)]
    v = uniform(20, 8, 0)
    out = render(paths, tmp_path / "out", captions=captions, vectors=v, walk_rows=np.arange(9), size=96, fps=5)
    gif = iio.imread(out.gif, index=None)
    assert gif.shape == (9, 96, 96, 3)
    reader = imageio_v2.get_reader(out.mp4)
    assert reader.count_frames() == 9
    assert reader.get_meta_data()["fps"] == pytest.approx(5)
    first = reader.get_data(0)
    assert first.shape == (96, 96, 3)
    reader.close()
    for png in (out.sheet, out.map):
        with Image.open(png) as im:
            assert im.format == "PNG"
    assert "data:image/png;base64," in out.map_markdown and "data:image/png;base64," in out.sheet_markdown
    plain = render(paths, tmp_path / "plain", size=96, fps=5)
    assert not np.array_equal(iio.imread(plain.gif, index=0), gif[0])  # the caption is drawn
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_render_refuses_no_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to render"):
        render([], tmp_path)


# -- a real walk: the shipped model over a drawn sketch set ------------------------------------------


@pytest.fixture(scope="module")
def encoder() -> ClipEncoder:
    return ClipEncoder(SKETCH_MODEL)


@pytest.fixture(scope="module")
def sketch_home(tmp_path_factory: pytest.TempPathFactory, encoder: ClipEncoder) -> Store:
    """300 drawn sketches, embedded and labelled by the shipped model, indexed and catalogued."""
    store = Store(tmp_path_factory.mktemp("walk_home") / "home")
    labels = LabelSettings()
    label_set = LabelSet.build(labels.labels, labels.templates)
    for spec in plan_sketch(seed=21, images=300, partition_size=150, size=64):
        ingest_batch(store, spec, workers=2)
        embed_partition(store, spec.key, encoder, batch_size=64, num_workers=0)
        scored = score_partition(
            store, spec.key, encoder.encode_texts, encoder.logit_scale, label_set, str(encoder.spec)
        )
        store.write_table("label_scores", scored.table, spec.key)
        store.write_table("label_set", scored.label_set, spec.key)
    ids = store.read_table("images", columns=["id"]).column("id")
    store.write_table("duplicate_groups", pa.table({"id": ids, "group_id": ids, "keep": pa.array([True] * len(ids))}))
    index.update_from_store(store)
    catalog.refresh(store)
    return store


def _labels(store: Store, ids: list[str]) -> list[str]:
    images = store.read_table("images", columns=["id", "label"]).to_pydict()
    label_of = dict(zip(images["id"], images["label"], strict=True))
    return [label_of[i] for i in ids]


def test_default_walk_stays_among_faces(sketch_home: Store) -> None:
    settings = WalkSettings()
    result = build_walk(sketch_home, settings)  # loads the recorded model itself
    table = sketch_home.read_table(TABLE, settings.name)
    assert table.schema.remove_metadata() == SCHEMA
    ids = table.column("id").to_pylist()
    faces = _labels(sketch_home, sketch_home.read_table("images", columns=["id"]).column("id").to_pylist())
    assert len(ids) == faces.count("face") >= 10  # every face, nothing else
    assert set(_labels(sketch_home, ids)) == {"face"}
    assert len(set(ids)) == len(ids)
    assert table.column("position").to_pylist() == list(range(len(ids)))
    assert table.column("distance")[0].as_py() is None and table.column("distance")[1].as_py() > 0
    meta = result.metadata()
    assert meta["frames"] == len(ids) and meta["start_id"] == ids[0]
    assert meta["improved_length"] <= meta["greedy_length"] + 1e-6
    assert meta["improved_longest_jump"] <= meta["greedy_longest_jump"] + 1e-6
    rendered = render_walk(sketch_home, settings)
    assert iio.imread(rendered.gif, index=None).shape[0] == len(ids)
    assert imageio_v2.get_reader(rendered.mp4).count_frames() == len(ids)


def test_walk_without_improvement_is_the_greedy_tour(sketch_home: Store, encoder: ClipEncoder) -> None:
    settings = WalkSettings(name="greedy", improve=False, max_length=12)
    table = build_walk(sketch_home, settings, encoder).table
    assert table.num_rows == 12
    assert table.column("greedy_position").to_pylist() == list(range(12))


def test_walk_in_the_description_and_both_spaces(sketch_home: Store, encoder: ClipEncoder) -> None:
    for space in ("description", "both"):
        result = build_walk(sketch_home, WalkSettings(name=f"w-{space}", space=space), encoder)
        assert set(_labels(sketch_home, result.table.column("id").to_pylist())) == {"face"}


def test_filters_keeping_fewer_than_two_images_give_an_empty_walk(sketch_home: Store, encoder: ClipEncoder) -> None:
    none = build_walk(sketch_home, WalkSettings(name="none", filter="a_face:>2"), encoder)
    assert none.empty and "keeps no images" in none.message
    assert sketch_home.read_table(TABLE, "none").num_rows == 0
    one_id = sketch_home.read_table("images", columns=["id"]).column("id")[0].as_py()
    one = build_walk(sketch_home, WalkSettings(name="one", filter=f"id:{one_id}"), encoder)
    assert one.empty and "only one image" in one.message
    with pytest.raises(WalkError, match="empty"):
        render_walk(sketch_home, WalkSettings(name="one", filter=f"id:{one_id}"))


def test_start_errors(sketch_home: Store, encoder: ClipEncoder) -> None:
    ids = sketch_home.read_table("images", columns=["id", "label"]).to_pydict()
    not_a_face = next(i for i, lb in zip(ids["id"], ids["label"], strict=True) if lb != "face")
    a_face = next(i for i, lb in zip(ids["id"], ids["label"], strict=True) if lb == "face")
    with pytest.raises(StartNotFound, match="not among"):
        build_walk(sketch_home, WalkSettings(name="x", start=not_a_face, start_kind="id"), encoder)
    with pytest.raises(StartNotFound, match="below min_start_score"):
        build_walk(sketch_home, WalkSettings(name="x", start="two hot dogs", min_start_score=0.99), encoder)
    with pytest.raises(WalkError, match="filter"):
        build_walk(sketch_home, WalkSettings(name="x", filter="no_such_column:1"), encoder)
    by_id = build_walk(sketch_home, WalkSettings(name="by-id", start=a_face, start_kind="id"), encoder)
    assert by_id.table.column("id")[0].as_py() == a_face


def test_select_walk_by_image_file_starts_at_that_image(sketch_home: Store) -> None:
    with Searcher.open(sketch_home) as searcher:
        rows = searcher.items.to_pydict()
        face = next(i for i, lb in enumerate(rows["label"]) if lb == "face")
        chosen = select_walk(searcher, rows["path"][face], "image", "a_face:[0.58 TO 0.99]")
    assert chosen.ids[chosen.start] == rows["id"][face] and chosen.start_score > 0.999
    assert list(chosen.ids) == sorted(chosen.ids)


def test_walk_definitions_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    settings = WalkSettings(name="smiles", start="a smiling face", max_length=40, fps=8)
    save_walk(store, settings)
    assert list_walks(store) == ["smiles"]
    assert load_walk(store, "smiles") == settings
    with pytest.raises(FileNotFoundError, match="smiles"):
        load_walk(store, "frowns")


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"name": "a,b"}, "partition key"),
        ({"filter": "a_face:[0.5 TO"}, "position"),
        ({"size": 100}, "multiple of 16"),
        ({"start": "  "}, "start is empty"),
        ({"max_length": 1}, "greater than or equal to 2"),
        ({"space": "colour"}, "image"),
        ({"speed": 2}, "Extra inputs"),
    ],
)
def test_walk_settings_validation(bad: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        WalkSettings(**bad)
