"""Cleaning: blank frames, candidates, edges and groups, unit by unit and on a planted sketch set.

The planted set is ingested once per module (through the real ingest and embedding paths, in
several batches) and cleaned both as one batch (``assess``) and batch by batch in different orders,
with a batch deleted and re-done: the results must be the same.
"""

from __future__ import annotations

import io
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from hotdog_dagster.core import clean
from hotdog_dagster.core.clean import candidates as cand
from hotdog_dagster.core.clean.blank import blank_flags
from hotdog_dagster.core.clean.descriptor import GRID_DIMS, descriptor_column, descriptors
from hotdog_dagster.core.clean.groups import connected_groups, pick_representatives
from hotdog_dagster.core.clean.pixels import aligned_distance, thumbnail, thumbnail_of_file, thumbs_to_column
from hotdog_dagster.core.io.batches import list_source_files, plan_folder, plan_sketch
from hotdog_dagster.core.io.ingest import ingest_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.io.vectors import vector_column
from hotdog_dagster.core.model import sketch
from hotdog_dagster.core.model.embedding import embed_partition
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.names import SKETCH_MODEL
from hotdog_dagster.core.search import index as faiss_index
from hotdog_dagster.core.settings import CleanSettings

# -- the planted set --------------------------------------------------------------------------------

PLANT_SIZE = 96  # pixels a side; the model looks at 64, so resizes down to 0.5x still carry content


@dataclass(frozen=True)
class Planted:
    root: Path
    origin: dict[str, str]  # file name -> the original it derives from ("" for blanks)
    kind: dict[str, str]  # file name -> original, sibling, dim, night, bytes, pixels, jpeg, resize, crop, chain, black


def _jpeg(img: Image.Image, quality_: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality_)
    return Image.open(io.BytesIO(buf.getvalue()))


def _thumb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32).reshape(-1)


def _originals(seed: int, count: int, size: int) -> list[sketch.SketchImage]:
    """The first ``count`` non-black images of a seed's stream."""
    labels = sketch.class_sequence(seed, count * 2)
    picked = [i for i, label in enumerate(labels) if label != "black"][:count]
    return [sketch.draw(seed, i, size=size) for i in picked]


def build_planted(
    root: Path,
    originals: int = 240,
    byte_copies: int = 200,
    resaves: int = 40,
    near_each: int = 70,
    chains: int = 20,
    siblings: int = 60,
    dims: int = 20,
    nights: int = 20,
    blacks: int = 320,
    size: int = PLANT_SIZE,
    seed: int = 11,
) -> Planted:
    """A folder of sketch images with known blanks, copies and distinct look-alikes.

    Originals are distinct draws; every copy is derived from exactly one of them. Siblings are the
    hardest distinct originals the world offers: for each of the first originals, the draw of
    another seed whose 16x16 thumbnail is closest to it (mostly the same class and colour on a
    similar background, moved or resized a little). Dims (darkened to a mean luminance of 28-60) and
    nights (bright objects on a near-black background) are distinct originals that are dark but not
    blank.
    """
    rng = np.random.default_rng(seed)
    origin: dict[str, str] = {}
    kind: dict[str, str] = {}

    def add(name: str, img: Image.Image | None, of: str, what: str, src: str | None = None, **save: object) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if src is not None:
            shutil.copy(root / src, path)
        else:
            assert img is not None
            img.save(path, **save)
        origin[name] = of
        kind[name] = what

    drawn = _originals(seed, originals, size)
    orig_names = [f"orig/o{i:04d}.png" for i in range(originals)]
    for name, d in zip(orig_names, drawn, strict=True):
        add(name, d.image, name, "original", format="PNG")
    # identical bytes: one copy each of the first originals, two of some
    for c in range(byte_copies):
        i = c % (byte_copies * 9 // 10)  # the last tenth are second copies
        add(f"bytes/o{i:04d}_copy{c}.png", None, orig_names[i], "bytes", src=orig_names[i])
    # identical pixels in other files and formats
    formats = [
        ("png", {"format": "PNG", "compress_level": 1}),
        ("bmp", {"format": "BMP"}),
        ("tiff", {"format": "TIFF"}),
        ("webp", {"format": "WEBP", "lossless": True}),
    ]
    for r in range(resaves):
        ext, save = formats[r % len(formats)]
        add(f"pixels/o{r:04d}.{ext}", drawn[r].image, orig_names[r], "pixels", **save)
    # near copies, each of a different original
    base = resaves
    for j in range(near_each):
        i = base + j
        q = int(rng.integers(60, 96))
        add(f"jpeg/o{i:04d}_q{q}.jpg", drawn[i].image, orig_names[i], "jpeg", format="JPEG", quality=q)
    base += near_each
    for j in range(near_each):
        i = base + j
        f = float(rng.uniform(0.5, 0.9))
        img = drawn[i].image.resize((round(size * f), round(size * f)), Image.Resampling.LANCZOS)
        add(f"resize/o{i:04d}_r{round(f * 100)}.png", img, orig_names[i], "resize", format="PNG")
    base += near_each
    for j in range(near_each):
        i = (base + j) % originals
        m = rng.uniform(0.02, 0.06, size=4) * size
        box = (round(m[0]), round(m[1]), size - round(m[2]), size - round(m[3]))
        add(f"crop/o{i:04d}_c.png", drawn[i].image.crop(box), orig_names[i], "crop", format="PNG")
    # chains: original -> resize -> JPEG of the resize -> crop of that JPEG
    for j in range(chains):
        i = (base + near_each + j) % originals
        f = float(rng.uniform(0.6, 0.9))
        a = drawn[i].image.resize((round(size * f), round(size * f)), Image.Resampling.LANCZOS)
        b = _jpeg(a, int(rng.integers(60, 90)))
        w = b.width
        m = round(0.04 * w)
        c = b.crop((m, m, w - m, w - m))
        add(f"chain/o{i:04d}_a.png", a, orig_names[i], "chain", format="PNG")
        add(f"chain/o{i:04d}_b.jpg", b, orig_names[i], "chain", format="JPEG", quality=90)
        add(f"chain/o{i:04d}_c.png", c, orig_names[i], "chain", format="PNG")
    # siblings: for each of the first originals, the closest distinct draw of another seed
    pool_seed = seed + 1000
    pool_labels = sketch.class_sequence(pool_seed, 2000)
    pool_idx = np.array([i for i, label in enumerate(pool_labels) if label != "black"])
    pool_thumbs = np.stack([_thumb(sketch.draw(pool_seed, int(i), size=16).image) for i in pool_idx])
    targets = np.stack([_thumb(d.image) for d in drawn[:siblings]])
    dist = ((targets[:, None, :] - pool_thumbs[None, :, :]) ** 2).sum(-1)
    used: set[int] = set()
    for t in range(siblings):
        p = next(p for p in np.argsort(dist[t]).tolist() if p not in used)
        used.add(p)
        name = f"sibling/s{t:04d}.png"
        add(name, sketch.draw(pool_seed, int(pool_idx[p]), size=size).image, name, "sibling", format="PNG")
    # dark but not blank: distinct draws dimmed to a mean luminance of 28-60 ...
    for j in range(dims):
        label = ("face", "hamburger", "one_hot_dog", "framed_circle")[j % 4]
        arr = np.asarray(sketch.draw(seed + 2000, j, size=size, label=label).image, dtype=np.float32)
        target = float(rng.uniform(28, 60))
        img = Image.fromarray(np.clip(arr * (target / arr.mean()), 0, 255).astype(np.uint8), "RGB")
        name = f"dim/d{j:04d}.png"
        add(name, img, name, "dim", format="PNG")
    # ... and bright things on a near-black background (a night shot): a low mean, a large spread
    for j in range(nights):
        label = ("face", "hamburger", "two_hot_dogs", "circle", "square")[j % 5]
        arr = np.asarray(sketch.draw(seed + 2500, j, size=size, label=label).image, dtype=np.float32)
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
        background = np.abs(arr - np.median(border, axis=0)).max(axis=2) < 30
        arr[background] = float(rng.uniform(0, 8))
        name = f"night/n{j:04d}.png"
        add(name, Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB"), name, "night", format="PNG")
    # blanks: the world's black frames (pure black, near black with noise), a third as JPEG
    for j in range(blacks):
        img = sketch.draw(seed + 3000, j, size=size, label="black").image
        if j % 3 == 2:
            add(f"black/b{j:04d}.jpg", img, "", "black", format="JPEG", quality=int(rng.integers(50, 96)))
        else:
            add(f"black/b{j:04d}.png", img, "", "black", format="PNG")
    return Planted(root=root, origin=origin, kind=kind)


def pair_scores(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float, int, int]:
    """Pairwise precision and recall of a grouping: pairs in one predicted group vs one true group.

    ``truth`` and ``predicted`` are group labels per image (None: in no group). Counted from the
    contingency table, so no pair list is built. Returns precision, recall, true pairs, predicted pairs.
    """

    def pairs(counts: np.ndarray) -> int:
        return int((counts * (counts - 1) // 2).sum())

    t_codes, p_codes = _codes(truth), _codes(predicted)
    both = (t_codes >= 0) & (p_codes >= 0)
    joint = np.unique(np.stack([t_codes[both], p_codes[both]]), axis=1, return_counts=True)[1]
    true_pairs = pairs(np.unique(t_codes[t_codes >= 0], return_counts=True)[1])
    pred_pairs = pairs(np.unique(p_codes[p_codes >= 0], return_counts=True)[1])
    hit = pairs(joint)
    return (hit / pred_pairs if pred_pairs else 1.0), (hit / true_pairs if true_pairs else 1.0), true_pairs, pred_pairs


def _codes(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, dtype=object)
    present = np.array([v is not None for v in labels], dtype=bool)
    out = np.full(len(labels), -1, dtype=np.int64)
    if present.any():
        out[present] = np.unique(labels[present].astype(str), return_inverse=True)[1]
    return out


def seed_black_frames(encoder: ClipEncoder, loaded: faiss_index.LoadedIndex) -> set[str]:
    """The seed's method: the top hit for "a black image", then its top 100 neighbours above 0.99999."""
    text = encoder.encode_texts(["a black image"])
    _, top = loaded.search(text, 1)
    hit = loaded.index.reconstruct(int(top[0, 0]))
    scores, pos = loaded.search(hit[None, :], 100)
    return set(loaded.ids[pos[0][scores[0] > 0.99999]].tolist())


@dataclass(frozen=True)
class PlantedStore:
    planted: Planted
    store: Store
    encoder: ClipEncoder
    partitions: list[str]


#: Tables a batch owns: deleting a batch removes its file from each.
BATCH_TABLES = ("images", "thumbnails", "embeddings", "image_quality", "duplicate_edges")


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory: pytest.TempPathFactory) -> PlantedStore:
    """The planted set ingested and embedded in batches of 400 files (kinds spread over batches)."""
    root = tmp_path_factory.mktemp("planted")
    planted = build_planted(root / "files")
    store = Store(root / "home")
    encoder = ClipEncoder(SKETCH_MODEL, device="cpu")
    specs = plan_folder(planted.root, list_source_files(planted.root), partition_size=400)
    for spec in specs:
        result = ingest_batch(store, spec, workers=2)
        assert result.rejected.num_rows == 0, result.rejected.to_pylist()[:3]
        embed_partition(store, spec.key, encoder, batch_size=128, num_workers=0)
    return PlantedStore(planted, store, encoder, [s.key for s in specs])


def clean_in_order(source: Store, target: Store, order: list[str], settings: CleanSettings) -> None:
    """Batches arrive in ``order``: each is copied in, then flagged and searched against what is there."""
    for key in order:
        for table in ("images", "thumbnails", "embeddings"):
            path = target.table_path(table, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source.table_path(table, key), path)
        target.write_table("image_quality", clean.blank_table(target.read_table("images", key), settings), key)
        target.write_table("duplicate_edges", clean.batch_edges(target, key, settings).table, key)


def delete_batch(store: Store, key: str) -> None:
    for table in BATCH_TABLES:
        store.drop_partition(table, key)


GROUP_FIELDS = ["id", "is_blank", "blank_code", "duplicate_group", "group_size", "duplicate_of", "dup_code", "keep"]


def same_groups(a: pa.Table, b: pa.Table) -> None:
    """Identical flags, groups and representatives, row for row by id."""
    a = a.select(GROUP_FIELDS).sort_by("id")
    b = b.select(GROUP_FIELDS).sort_by("id")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    for name in GROUP_FIELDS[1:]:
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name


# -- synthetic stores -------------------------------------------------------------------------------


def write_batch(
    store: Store,
    key: str,
    thumbs: np.ndarray,
    vectors: np.ndarray | None = None,
    **columns: list,
) -> list[str]:
    """An images + thumbnails (+ embeddings) partition from thumbnails; returns the ids."""
    n = len(thumbs)
    ids = columns.pop("id", [f"{key}-{i:03d}" for i in range(n)])
    base = {
        "id": ids,
        "partition": [key] * n,
        "path": [f"/x/{i}.png" for i in ids],
        "content_hash": [f"c-{i}" for i in ids],
        "pixel_hash": [f"p-{i}" for i in ids],
        "width": [64] * n,
        "height": [64] * n,
        "lum_mean": [128.0] * n,
        "lum_std": [40.0] * n,
        "safety_flagged": [None] * n,
    }
    base.update(columns)
    store.write_table("images", pa.table(base), key)
    store.write_table(
        "thumbnails",
        pa.table(
            {
                "id": ids,
                "partition": [key] * n,
                "thumb": thumbs_to_column(thumbs),
                "descriptor": descriptor_column(descriptors(thumbs)),
            }
        ),
        key,
    )
    if vectors is not None:
        store.write_table(
            "embeddings", pa.table({"id": ids, "partition": [key] * n, "vector": vector_column(vectors)}), key
        )
    return ids


def flat(n: int, level: int = 128) -> np.ndarray:
    return np.full((n, 32, 32, 3), level, dtype=np.uint8)


def unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# -- units ------------------------------------------------------------------------------------------


def test_connected_groups_joins_chains() -> None:
    labels = connected_groups(7, np.array([0, 1, 3, 6]), np.array([1, 2, 4, 5]))
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4] != labels[0]
    assert labels[5] == labels[6] and len({labels[0], labels[3], labels[5]}) == 3
    assert connected_groups(3, np.array([], int), np.array([], int)).tolist() == [0, 1, 2]


def test_representative_is_largest_then_smallest_id_whatever_the_order() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    area = np.array([100, 400, 400, 50, 50])
    ids = np.array(["b", "z", "c", "y", "x"], dtype=object)
    assert pick_representatives(labels, area, ids).tolist() == [2, 2, 2, 4, 4]
    perm = np.array([4, 2, 0, 3, 1])
    reps = pick_representatives(labels[perm], area[perm], ids[perm])
    assert ids[perm][reps].tolist() == ["x", "c", "c", "x", "c"]


def test_blank_flags_codes_and_sentences() -> None:
    images = pa.table(
        {
            "id": [f"i{k}" for k in range(8)],
            "partition": ["p"] * 8,
            "lum_mean": [0.0, 12.9, 20.0, 20.5, 14.0, 200.0, 230.0, None],
            "lum_std": [0.0, 3.5, 8.0, 1.0, 30.0, 0.3, 45.0, None],
            "safety_flagged": [None, None, None, None, None, None, True, False],
        }
    )
    flags = blank_flags(images, CleanSettings())
    assert flags.is_blank.tolist() == [True, True, True, False, False, False, True, False]
    assert flags.code.tolist() == ["dark", "dark", "dark", None, None, None, "safety_checker", None]
    assert flags.score[0] == 1.0 and flags.score[2] == pytest.approx(0.0) and flags.score[4] < 0
    assert np.isnan(flags.score[7])  # no statistics: never blank by pixels
    assert flags.reason[1] == "dark frame: luminance mean 12.9 <= 20 and spread 3.5 <= 8"
    strict = blank_flags(images, CleanSettings(dark_mean_max=10, use_safety_checker=False))
    assert strict.is_blank.tolist() == [True, False, False, False, False, False, False, False]
    flat_on = blank_flags(images, CleanSettings(flat_std_max=0.5))
    assert flat_on.code[5] == "flat" and flat_on.reason[5].startswith("flat frame: luminance spread 0.30")
    table = clean.blank_table(images, CleanSettings())
    assert table.schema.equals(clean.QUALITY_SCHEMA)
    assert table.column("blank_code").to_pylist()[6] == "safety_checker"
    assert table.column("blank_score").to_pylist()[7] is None


def test_exact_duplicates_by_hash_across_formats_and_not_for_blanks(store: Store) -> None:
    # 0,1 same bytes; 2 same pixels as 0 (another format); 3,4 same pixels, 4 larger; 5,6 blank twins
    write_batch(
        store,
        "b0",
        flat(8),
        unit(8),
        id=[f"id{k}" for k in range(8)],
        content_hash=["A", "A", "B", "C", "D", "K", "K", "E"],
        pixel_hash=["P", "P", "P", "Q", "Q", "Z", "Z", "R"],
        width=[64, 64, 64, 32, 128, 64, 64, 64],
        height=[64, 64, 64, 32, 128, 64, 64, 64],
        lum_mean=[128.0] * 5 + [0.0, 0.0, 128.0],
        lum_std=[40.0] * 5 + [0.0, 0.0, 40.0],
    )
    settings = CleanSettings(near_duplicates=False)
    rows = clean.resolve_groups(store, settings).to_pylist()
    assert [r["duplicate_of"] for r in rows] == ["id0"] * 3 + ["id4", "id4", None, None, None]
    assert [r["dup_code"] for r in rows] == [None, "identical_bytes", "identical_pixels", "identical_pixels"] + [
        None
    ] * 4
    assert rows[1]["dup_reason"] == "identical bytes to id0" and rows[1]["pixel_distance"] == 0.0
    assert [r["keep"] for r in rows] == [True, False, False, False, True, False, False, True]
    assert [r["is_blank"] for r in rows][5:7] == [True, True] and rows[5]["blank_code"] == "dark"
    assert rows[0]["duplicate_group"] == 0 and rows[0]["group_size"] == 3 and rows[4]["duplicate_group"] == 1
    assert rows[1]["similarity"] == pytest.approx(float(unit(8)[1] @ unit(8)[0]), abs=1e-6)
    summary = clean.summarize(clean.resolve_groups(store, settings))
    assert summary["duplicates_by_reason"] == {"identical_bytes": 1, "identical_pixels": 2}
    assert summary["blank_by_reason"] == {"dark": 2} and summary["kept"] == 3
    assert summary["largest_groups"][0] == {"group": 0, "size": 3, "representative": "id0"}
    sheet = clean.sample_paths(store, clean.resolve_groups(store, settings), n_groups=1, per_group=2, blanks=5)
    assert sheet == {"duplicates": ["/x/id0.png", "/x/id1.png"], "blanks": ["/x/id5.png", "/x/id6.png"]}
    no_exact = clean.resolve_groups(store, CleanSettings(exact_duplicates=False, near_duplicates=False))
    assert no_exact.column("duplicate_group").null_count == 8


def test_range_candidates_are_exact_symmetric_and_streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    desc = rng.integers(0, 256, (600, 57)).astype(np.uint8)
    near = rng.integers(0, 600, 80)
    desc[near[:40] + 0] = np.clip(desc[near[40:]].astype(int) + rng.integers(-2, 3, (40, 57)), 0, 255)
    signature_only = rng.integers(0, 600, 10)
    copy = desc[signature_only].copy()
    copy[:, :GRID_DIMS] = rng.integers(0, 256, (10, GRID_DIMS))
    desc = np.vstack([desc, copy])
    g, s = desc[:, :GRID_DIMS].astype(np.int64), desc[:, GRID_DIMS:].astype(np.int64)
    truth = (((g[:, None] - g[None]) ** 2).sum(-1) <= np.floor(3.0**2 * GRID_DIMS)) | (
        ((s[:, None] - s[None]) ** 2).sum(-1) <= np.floor(3.5**2 * (57 - GRID_DIMS))
    )
    found = cand.range_candidates(desc[:300], desc, 3.0, 3.5, max_candidates=1000)
    assert set(zip(found.query.tolist(), found.target.tolist(), strict=True)) == set(
        zip(*np.nonzero(truth[:300]), strict=True)
    )
    everything = cand.range_candidates(desc, desc, 3.0, 3.5, max_candidates=1000)
    pairs = set(zip(everything.query.tolist(), everything.target.tolist(), strict=True))
    assert pairs == {(b, a) for a, b in pairs}  # symmetric: found from either end
    assert len(pairs) > len(desc) + 40  # the planted pairs are there, not only each row with itself
    monkeypatch.setattr(cand, "BLOCK_RESULTS", 3)  # blocks of a query or two: the same answer
    monkeypatch.setattr(cand, "FIRST_BLOCK", 2)
    small = cand.range_candidates(desc, desc, 3.0, 3.5, max_candidates=1000)
    assert set(zip(small.query.tolist(), small.target.tolist(), strict=True)) == pairs
    once = cand.range_candidates(desc, desc, 3.0, 3.5, max_candidates=1000, same_set=True)
    assert {(min(a, b), max(a, b)) for a, b in zip(once.query.tolist(), once.target.tolist(), strict=True)} == {
        (min(a, b), max(a, b)) for a, b in pairs
    }  # each pair searched from one end only: the same pairs
    assert len(once.query) < len(everything.query)
    grid_only = cand.range_candidates(desc, desc, 3.0, None, 1000)  # the signature-only copies are lost
    grid_truth = ((g[:, None] - g[None]) ** 2).sum(-1) <= np.floor(3.0**2 * GRID_DIMS)
    assert set(zip(grid_only.query.tolist(), grid_only.target.tolist(), strict=True)) == set(
        zip(*np.nonzero(grid_truth), strict=True)
    )
    assert len(grid_only.query) < len(everything.query)


def test_candidates_are_capped_with_a_warning_in_a_dense_region(caplog: pytest.LogCaptureFixture) -> None:
    desc = np.full((500, 57), 100, dtype=np.uint8)  # 500 images that all look the same
    with caplog.at_level(logging.WARNING):
        found = cand.range_candidates(desc, desc, 3.0, 3.5, max_candidates=7)
    assert found.capped == 500 and np.bincount(found.query).max() == 8  # itself and 7 partners
    assert "500 images had more than 7 near-duplicate candidates" in caplog.text


def test_descriptor_keeps_copies_close_and_another_drawing_apart(tmp_path: Path) -> None:
    original = sketch.draw(4, 0, size=128, label="face").image
    other = sketch.draw(4, 1, size=128, label="face").image
    thumbs = np.stack(
        [
            thumbnail(original),
            thumbnail(_jpeg(original, 70)),
            thumbnail(original.resize((77, 77), Image.Resampling.LANCZOS)),
            thumbnail(original.crop((9, 4, 121, 118))),  # 7%, 3%, 5%, 8% off the sides
            thumbnail(other),
        ]
    )
    desc = descriptors(thumbs).astype(np.float64)
    rms = lambda a, b: float(np.sqrt(((a - b) ** 2).mean()))  # noqa: E731
    grid = [rms(desc[0, :GRID_DIMS], desc[k, :GRID_DIMS]) for k in range(5)]
    sig = [rms(desc[0, GRID_DIMS:], desc[k, GRID_DIMS:]) for k in range(5)]
    settings = CleanSettings()
    assert grid[1] <= settings.grid_radius and grid[2] <= settings.grid_radius  # re-encode, resize: aligned
    assert grid[3] > 3 * settings.grid_radius  # a crop moves the aligned grid a lot ...
    assert sig[3] <= settings.signature_radius  # ... but not the signature
    assert grid[4] > settings.grid_radius and sig[4] > settings.signature_radius


def test_pixel_check_accepts_copies_and_rejects_look_alikes(tmp_path: Path) -> None:
    """Re-encodes, resizes and crops of one drawing sit within the threshold; another drawing does not."""
    size = 96
    original = sketch.draw(5, 0, size=size, label="one_hot_dog").image
    other = sketch.draw(5, 1, size=size, label="one_hot_dog").image
    files = {
        "original.png": original,
        "jpeg.jpg": _jpeg(original, 60),
        "resize.png": original.resize((53, 53), Image.Resampling.LANCZOS),
        "crop.png": original.crop((5, 2, size - 3, size - 6)),
        "other.png": other,
    }
    for name, img in files.items():
        img.save(tmp_path / name)
    thumbs = [thumbnail_of_file(tmp_path / name) for name in files]
    assert thumbnail_of_file(tmp_path / "missing.png") is None  # unreadable: no thumbnail, no crash
    t = np.stack(thumbs)
    dist = aligned_distance(t[[0, 0, 0, 3, 0]], t[[1, 2, 3, 0, 4]])
    limit = CleanSettings().pixel_max_distance
    assert (dist[:4] <= limit).all(), dist  # either image may be the cropped one
    assert dist[4] > 2 * limit, dist
    assert aligned_distance(t[[1, 2, 3]], t[[0, 0, 0]]).tolist() == dist[:3].tolist()  # order never matters


def test_edges_need_cosine_and_pixels_and_record_what_they_cannot_check(store: Store) -> None:
    original = sketch.draw(6, 0, size=96, label="hamburger").image
    other = sketch.draw(6, 1, size=96, label="hamburger").image
    crop = original.crop((3, 3, 93, 93))
    thumbs = np.stack([thumbnail(original), thumbnail(crop), thumbnail(other), thumbnail(original)])
    same = np.ones((4, 4), np.float32) / 2  # the vectors cannot tell them apart: the pixels decide
    ids = write_batch(store, "b0", thumbs[:3], same[:3], width=[96, 90, 96], height=[96, 90, 96])
    result = clean.batch_edges(store, "b0", CleanSettings(grid_radius=50.0, signature_radius=50.0))
    assert result.table.schema.equals(clean.EDGES_SCHEMA)
    assert result.table.select(["a", "b"]).to_pylist() == [{"a": ids[0], "b": ids[1]}]
    assert 0 < result.table.column("pixel_distance")[0].as_py() <= 3.5
    assert result.stats["candidates"] == 3 and result.stats["vetoed_by_pixels"] == 2
    assert set(result.stats) >= {"queries", "candidates", "verified", "vetoed_by_cosine", "capped_queries", "seconds"}
    no_pixels = clean.batch_edges(
        store, "b0", CleanSettings(grid_radius=50.0, signature_radius=50.0, pixel_max_distance=None)
    )
    assert no_pixels.table.num_rows == 3 and no_pixels.table.column("pixel_distance").null_count == 3
    apart = unit(3, dim=4, seed=1)  # vectors of three unrelated pictures: the cosine vetoes first
    store.write_table(
        "embeddings", pa.table({"id": ids, "partition": ["b0"] * 3, "vector": vector_column(apart)}), "b0"
    )
    vetoed = clean.batch_edges(store, "b0", CleanSettings(grid_radius=50.0, signature_radius=50.0, near_threshold=0.99))
    assert vetoed.table.num_rows == 0 and vetoed.stats["vetoed_by_cosine"] == 3
    assert vetoed.stats["vetoed_by_pixels"] == 0  # never measured
    store.write_table(
        "embeddings", pa.table({"id": ids, "partition": ["b0"] * 3, "vector": vector_column(same[:3])}), "b0"
    )
    # a second batch: one image without a vector, one whose stored thumbnail is unreadable
    write_batch(store, "b1", thumbs[3:], None, id=["b1-000"])
    write_batch(store, "b2", thumbs[:1], same[:1], id=["b1-bad"])
    store.write_table(
        "thumbnails", pa.table({"id": ["b1-bad"], "partition": ["b2"], "thumb": [b"x"], "descriptor": [b"y"]}), "b2"
    )
    late = clean.batch_edges(store, "b1", CleanSettings())
    assert late.table.num_rows == 0 and late.stats["unverifiable"] >= 1  # the exact copy has no vector
    bad = clean.batch_edges(store, "b2", CleanSettings())
    assert bad.stats["missing_descriptors"] == 1 and bad.stats["queries"] == 0


def test_ingest_writes_a_thumbnail_and_descriptor_per_image(store: Store) -> None:
    spec = plan_sketch(seed=3, images=12, partition_size=12, size=64)[0]
    result = ingest_batch(store, spec, workers=2)
    thumbs = result.thumbnails
    assert thumbs.column("id").to_pylist() == result.images.column("id").to_pylist()
    assert thumbs.equals(store.read_table("thumbnails", spec.key))
    assert "phash" not in result.images.column_names
    first = np.frombuffer(thumbs.column("thumb")[0].as_py(), np.uint8).reshape(32, 32, 3)
    assert np.array_equal(first, thumbnail_of_file(result.images.column("path")[0].as_py()))
    assert thumbs.column("descriptor")[0].as_py() == descriptors(first[None])[0].tobytes()


def test_settings_reject_nonsense() -> None:
    for bad in ({"signature_radius": -1.0}, {"max_candidates": 0}, {"near_threshold": 1.5}, {"max_crop": 0.5}):
        with pytest.raises(ValueError):
            CleanSettings(**bad)
    assert CleanSettings(grid_radius=None).grid_radius is None


# -- the planted set --------------------------------------------------------------------------------


@pytest.mark.slow
def test_planted_set_blank_and_duplicate_precision_recall(planted_store: PlantedStore) -> None:
    t0 = time.perf_counter()
    planted, store = planted_store.planted, planted_store.store
    result = clean.assess(store, CleanSettings())
    table = result.groups
    names = dict(zip(*store.read_table("images", columns=["id", "source_name"]).to_pydict().values(), strict=True))
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    source = np.array([names[i] for i in ids], dtype=object)
    kinds = np.array([planted.kind[n] for n in source])
    origin = np.array([planted.origin[n] or None for n in source], dtype=object)

    truth_blank = kinds == "black"
    got_blank = np.asarray(result.quality.sort_by("id").column("is_blank").to_pylist())[np.argsort(np.argsort(ids))]
    assert np.array_equal(got_blank, np.asarray(table.column("is_blank").to_pylist()))
    tp = int((truth_blank & got_blank).sum())
    blank_p, blank_r = tp / max(1, got_blank.sum()), tp / truth_blank.sum()

    group = np.array(table.column("duplicate_group").to_pylist(), dtype=object)
    dup_p, dup_r, true_pairs, pred_pairs = pair_scores(origin, group)
    near = np.isin(kinds, ["jpeg", "resize", "crop", "chain"])
    near_p, near_r, *_ = pair_scores(
        np.where(near | (kinds == "original"), origin, None), np.where(near | (kinds == "original"), group, None)
    )
    faiss_index.build_from_store(store)
    seed_deleted = seed_black_frames(planted_store.encoder, faiss_index.load(store))
    seed_missed = int(truth_blank.sum() - np.isin(ids[truth_blank], list(seed_deleted)).sum())
    seed_wrong = int(np.isin(ids[~truth_blank], list(seed_deleted)).sum())
    stats = result.edges.stats
    print(
        f"\n[{SKETCH_MODEL}] {len(ids)} images, {truth_blank.sum()} black: blank P {blank_p:.3f} R {blank_r:.3f}; "
        f"duplicate pairs P {dup_p:.3f} R {dup_r:.3f} ({true_pairs} true, {pred_pairs} predicted; "
        f"near copies only P {near_p:.3f} R {near_r:.3f}); seed's method deletes {len(seed_deleted)} "
        f"({seed_wrong} not black) and misses {seed_missed} black frames, we miss "
        f"{int((truth_blank & ~got_blank).sum())}; edges {stats}; {time.perf_counter() - t0:.1f} s"
    )
    assert blank_p == 1.0 and blank_r == 1.0
    assert seed_missed > 0 and not (truth_blank & ~got_blank).any()
    exact = np.isin(kinds, ["original", "bytes", "pixels"])
    exact_p, exact_r, *_ = pair_scores(np.where(exact, origin, None), np.where(exact, group, None))
    assert exact_p == 1.0 and exact_r == 1.0
    assert dup_p == 1.0 and dup_r == 1.0
    kept = np.asarray(table.column("keep").to_pylist())
    assert sorted(origin[kept].tolist()) == sorted(set(origin[~truth_blank].tolist()))
    for name, kind, code, rep in zip(
        source, kinds, table.column("dup_code").to_pylist(), table.column("duplicate_of").to_pylist(), strict=True
    ):
        if rep is None or names[rep] == name:
            assert code is None
            continue
        pair = {kind, planted.kind[names[rep]]}
        expected = (
            "identical_bytes"
            if pair <= {"original", "bytes"}
            else "identical_pixels"
            if pair <= {"original", "bytes", "pixels"}
            else "near_duplicate"
        )
        assert code == expected, (name, names[rep])


@pytest.mark.slow
def test_candidate_counts_stay_small_on_the_planted_set(planted_store: PlantedStore) -> None:
    """Every image has few candidates besides its copies (the old cosine path had 27k pairs here)."""
    stats = clean.assess(planted_store.store, CleanSettings()).edges.stats
    copies = 200 + 40 + 70 * 3 + 20 * 3  # planted pairs at most (byte copies never need a search)
    assert stats["capped_queries"] == 0
    assert stats["candidates"] <= copies + stats["queries"], stats
    assert (
        stats["verified"] + stats["vetoed_by_cosine"] + stats["vetoed_by_pixels"] + stats["unverifiable"]
        == (stats["candidates"])
    )


@pytest.mark.slow
def test_batch_by_batch_in_any_order_equals_the_full_rebuild(planted_store: PlantedStore, tmp_path: Path) -> None:
    source, keys = planted_store.store, planted_store.partitions
    assert len(keys) >= 3
    settings = CleanSettings()
    full = clean.assess(source, settings)
    assert full.groups.column("duplicate_group").null_count < full.groups.num_rows  # there is something to group
    for name, order in (
        ("forward", keys),
        ("reverse", keys[::-1]),
        ("shuffled", [keys[1], *keys[3:], keys[0], keys[2]]),
    ):
        target = Store(tmp_path / name)
        clean_in_order(source, target, order, settings)
        same_groups(clean.resolve_groups(target, settings), full.groups)
        edges = target.read_table("duplicate_edges").select(["a", "b"]).to_pylist()
        assert {(e["a"], e["b"]) for e in edges} == {
            (e["a"], e["b"]) for e in full.edges.table.select(["a", "b"]).to_pylist()
        }, name

    # delete a batch (its files): the groups follow the images that are left ...
    target = Store(tmp_path / "forward")
    gone = keys[len(keys) // 2]
    delete_batch(target, gone)
    same_groups(clean.resolve_groups(target, settings), clean.assess(target, settings).groups)
    assert gone not in set(clean.resolve_groups(target, settings).column("partition").to_pylist())
    # ... and re-doing it (last, against everything) gives the full result again
    clean_in_order(source, target, [gone], settings)
    same_groups(clean.resolve_groups(target, settings), full.groups)
    # re-materialising a batch that is already there changes nothing
    clean_in_order(source, target, [keys[0]], settings)
    same_groups(clean.resolve_groups(target, settings), full.groups)


def test_batch_contact_sheets_show_its_blanks_and_its_pairs_across_batches(tmp_path: Path) -> None:
    """image_quality's own metadata: the batch's blank frames, and each edge's two images side by side,
    the earlier one found in another batch's partition."""
    from hotdog_dagster.core.io.media import contact_sheet_file

    store = Store(tmp_path / "home")
    paths = {}
    for i, name in enumerate(["old", "new-copy", "new-black", "new-other"]):
        paths[name] = tmp_path / f"{name}.png"
        Image.new("RGB", (16, 16), (0, 0, 0) if "black" in name else (40 * i, 90, 200)).save(paths[name])
    store.write_table("images", pa.table({"id": ["old"], "path": [str(paths["old"])]}), "b1")
    new = ["new-copy", "new-black", "new-other"]
    store.write_table("images", pa.table({"id": new, "path": [str(paths[n]) for n in new]}), "b2")
    flags = pa.table({"id": new, "is_blank": [False, True, False]})
    edges = pa.table({"a": ["new-copy"], "b": ["old"]})

    samples = clean.batch_sample_paths(store, flags, edges)
    assert samples == {"blanks": [str(paths["new-black"])], "pairs": [str(paths["new-copy"]), str(paths["old"])]}
    markdown = contact_sheet_file(samples["pairs"], store.media_dir / "pairs.png")
    assert "data:image/png;base64," in markdown
    assert Image.open(store.media_dir / "pairs.png").size[0] > 0

    none = clean.batch_sample_paths(store, pa.table({"id": ["x"], "is_blank": [False]}), edges.slice(0, 0))
    assert none == {"blanks": [], "pairs": []}
