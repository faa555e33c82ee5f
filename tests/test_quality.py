"""Image quality: blank frames and duplicate groups, unit by unit and on a planted sketch set."""

from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from hotdog_dagster.core.clean import quality
from hotdog_dagster.core.io.batches import list_source_files, plan_folder
from hotdog_dagster.core.io.ingest import ingest_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model import sketch
from hotdog_dagster.core.model.embedding import embed_partition
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.names import SKETCH_MODEL
from hotdog_dagster.core.search import index as faiss_index

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


def model_spec() -> str:
    """The shipped sketch model: the quality bar is measured with it."""
    return SKETCH_MODEL


@dataclass(frozen=True)
class Ingested:
    images: pa.Table
    vectors: np.ndarray
    loaded: faiss_index.LoadedIndex
    encoder: ClipEncoder
    names: np.ndarray  # source file name per images row


def ingest_planted(planted: Planted, store: Store, spec: str) -> Ingested:
    encoder = ClipEncoder(spec, device="cpu")
    specs = plan_folder(planted.root, list_source_files(planted.root), partition_size=100_000)
    for batch in specs:
        result = ingest_batch(store, batch, workers=2)
        assert result.rejected.num_rows == 0, result.rejected.to_pylist()[:3]
        embed_partition(store, batch.key, encoder, batch_size=128, num_workers=0)
    faiss_index.build_from_store(store)
    images = store.read_table("images")
    vectors = quality.vectors_for(images, store.read_table("embeddings"))
    names = np.asarray(images.column("source_name").to_pylist(), dtype=object)
    return Ingested(images=images, vectors=vectors, loaded=faiss_index.load(store), encoder=encoder, names=names)


# -- scoring ----------------------------------------------------------------------------------------


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


# -- units ------------------------------------------------------------------------------------------


def _table(**columns: list) -> pa.Table:
    n = len(next(iter(columns.values())))
    base = {
        "id": [f"id{i:03d}" for i in range(n)],
        "partition": ["p"] * n,
        "path": [f"/x/{i}.png" for i in range(n)],
        "content_hash": [f"c{i}" for i in range(n)],
        "pixel_hash": [f"p{i}" for i in range(n)],
        "phash": [i * 0x0101010101 for i in range(n)],
        "width": [64] * n,
        "height": [64] * n,
        "lum_mean": [128.0] * n,
        "lum_std": [40.0] * n,
        "safety_flagged": [None] * n,
    }
    base.update(columns)
    return pa.table(base)


def _orthogonal(n: int, dim: int = 32) -> np.ndarray:
    return np.eye(dim, dtype=np.float32)[:n]


def test_connected_groups_joins_chains() -> None:
    labels = quality.connected_groups(7, np.array([0, 1, 3, 6]), np.array([1, 2, 4, 5]))
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4] != labels[0]
    assert labels[5] == labels[6] and len({labels[0], labels[3], labels[5]}) == 3
    assert quality.connected_groups(3, np.array([], int), np.array([], int)).tolist() == [0, 1, 2]


def test_representative_is_largest_then_smallest_id_whatever_the_order() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    area = np.array([100, 400, 400, 50, 50])
    ids = np.array(["b", "z", "c", "y", "x"], dtype=object)
    assert quality.pick_representatives(labels, area, ids).tolist() == [2, 2, 2, 4, 4]
    perm = np.array([4, 2, 0, 3, 1])
    reps = quality.pick_representatives(labels[perm], area[perm], ids[perm])
    assert ids[perm][reps].tolist() == ["x", "c", "c", "x", "c"]


def test_representative_rows_are_rows_of_the_table() -> None:
    # a singleton first, then a group whose kept member is the larger, later row
    images = _table(
        content_hash=["X", "A", "B", "C"],
        pixel_hash=["x", "P", "q", "P"],
        width=[64, 64, 32, 128],
        height=[64, 64, 32, 128],
    )
    t = quality.assess(images, _orthogonal(4)).to_pylist()
    assert [r["duplicate_of"] for r in t] == [None, "id003", None, "id003"]
    assert [r["keep"] for r in t] == [True, False, True, True]


def test_blank_thresholds_and_safety_checker() -> None:
    images = _table(
        lum_mean=[0.0, 12.9, 20.0, 20.5, 14.0, 200.0, 230.0, None],
        lum_std=[0.0, 3.5, 8.0, 1.0, 30.0, 0.3, 45.0, None],
        safety_flagged=[None, None, None, None, None, None, True, False],
    )
    flags = quality.find_blank(images)
    assert flags.is_blank.tolist() == [True, True, True, False, False, False, True, False]
    assert flags.reason.tolist() == ["dark", "dark", "dark", None, None, None, "safety_checker", None]
    assert flags.score[0] == 1.0 and flags.score[2] == pytest.approx(0.0) and flags.score[4] < 0
    assert np.isnan(flags.score[7])  # no statistics: never blank by pixels
    strict = quality.find_blank(images, quality.QualityConfig(dark_mean_max=10, use_safety_checker=False))
    assert strict.is_blank.tolist() == [True, False, False, False, False, False, False, False]
    flat = quality.find_blank(images, quality.QualityConfig(flat_std_max=0.5))
    assert flat.reason[5] == "flat"


def test_exact_duplicates_by_hash_across_formats_and_not_for_blanks() -> None:
    # 0,1 same bytes; 2 same pixels as 0 (another format, bigger file); 3,4 same pixels; 5,6 blank twins
    images = _table(
        content_hash=["A", "A", "B", "C", "D", "K", "K", "E"],
        pixel_hash=["P", "P", "P", "Q", "Q", "Z", "Z", "R"],
        lum_mean=[128.0] * 5 + [0.0, 0.0, 128.0],
        lum_std=[40.0] * 5 + [0.0, 0.0, 40.0],
    )
    table = quality.assess(images, _orthogonal(8))
    rows = table.to_pylist()
    assert [r["duplicate_of"] for r in rows] == ["id000"] * 3 + ["id003", "id003", None, None, None]
    assert [r["dup_reason"] for r in rows] == [
        None,
        "identical_bytes",
        "identical_pixels",
        None,
        "identical_pixels",
    ] + [None] * 3
    assert [r["keep"] for r in rows] == [True, False, False, True, False, False, False, True]
    assert [r["is_blank"] for r in rows][5:7] == [True, True]
    assert rows[0]["duplicate_group"] == 0 and rows[0]["group_size"] == 3 and rows[3]["duplicate_group"] == 1
    summary = quality.summarize(table)
    assert summary["duplicates_by_reason"] == {"identical_bytes": 1, "identical_pixels": 2}
    assert summary["largest_groups"][0] == {"group": 0, "size": 3, "representative": "id000"}
    sheet = quality.sample_paths(images, table, groups=1, per_group=2, blanks=5)
    assert sheet == {"duplicates": ["/x/0.png", "/x/1.png"], "blanks": ["/x/5.png", "/x/6.png"]}


def test_near_duplicates_need_cosine_and_phash_and_chain() -> None:
    rng = np.random.default_rng(0)
    v = np.zeros((5, 16), np.float32)
    v[0, 0] = 1
    v[1, [0, 1]] = [0.99, np.sqrt(1 - 0.99**2)]  # cos 0.99 to 0
    v[2, [0, 1, 2]] = [0.99**2, 0.99 * np.sqrt(1 - 0.99**2), np.sqrt(1 - 0.99**2)]  # 0.99 to 1, 0.98 to 0
    v[3, [0, 3]] = [0.9, np.sqrt(1 - 0.81)]  # cos 0.9 to 0: below the threshold
    v[4] = rng.standard_normal(16)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cfg = quality.QualityConfig(near_threshold=0.985, phash_max_distance=4, verify_pixels=False)
    images = _table(phash=[0, 1, 3, 0, 0], width=[64, 64, 80, 64, 64], height=[64, 64, 80, 64, 64])
    t = quality.assess(images, v, config=cfg).to_pylist()
    assert [r["duplicate_of"] for r in t] == ["id002"] * 3 + [None, None]  # a chain; the largest kept
    assert [r["dup_reason"] for r in t][:3] == ["near_duplicate", "near_duplicate", None]
    assert t[0]["similarity"] == pytest.approx(0.99**2, abs=1e-5) and t[0]["phash_distance"] == 2
    vetoed = _table(phash=[0, -1, 0, 0, 0])  # -1: all 64 bits set, far from 0
    t = quality.assess(vetoed, v, config=cfg)
    assert t.column("duplicate_of").to_pylist() == [None, None, None, None, None]
    assert t.schema.metadata[b"near_vetoed_by_phash"] == b"2"
    unknown = _table(phash=[None] * 5)  # no pHash recorded: the cosine decides alone
    assert quality.assess(unknown, v, config=cfg).column("group_size").to_pylist()[:3] == [3, 3, 3]


def test_knn_widens_k_until_every_neighbour_above_threshold_is_found() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal(8).astype(np.float32)
    v = base + 0.01 * rng.standard_normal((60, 8)).astype(np.float32)
    v = np.vstack([v, rng.standard_normal((40, 8)).astype(np.float32)])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    flat = faiss_index.build(v, kind="flat")[0]
    sims = v @ v.T
    qi, pos, _ = quality.knn_above(flat.search, v, flat.ntotal, 0.99, k=4, max_k=1024, batch=7)
    found = set(zip(qi.tolist(), pos.tolist(), strict=True))
    assert found == set(zip(*np.nonzero(sims >= 0.99), strict=True))
    qi, pos, _ = quality.knn_above(flat.search, v, flat.ntotal, 0.99, k=4, max_k=8, batch=7)
    assert np.bincount(qi).max() <= 8  # capped, with a warning


def test_loaded_index_maps_positions_through_ids_and_skips_excluded(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    v = rng.standard_normal((6, 16)).astype(np.float32)
    v[1] = v[0] + 0.01 * rng.standard_normal(16)
    v[5] = v[4] + 0.01 * rng.standard_normal(16)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    images = _table(phash=[7] * 6, lum_mean=[128.0] * 5 + [3.0], lum_std=[40.0] * 5 + [1.0])
    order = np.array([3, 5, 1, 0, 4, 2])  # the index holds the rows in another order
    flat = faiss_index.build(v[order], kind="flat")[0]
    info = faiss_index.IndexInfo(6, 16, "Flat,IP", 0.0, 1, False)
    ids = np.asarray(images.column("id").to_pylist(), dtype=object)
    loaded = faiss_index.LoadedIndex(index=flat, ids=ids[order], info=info)
    cfg = quality.QualityConfig(verify_pixels=False)
    with_index = quality.assess(images, v, index=loaded, config=cfg)
    assert with_index.equals(quality.assess(images, v, config=cfg))
    assert with_index.column("duplicate_of").to_pylist() == ["id000", "id000", None, None, None, None]  # 5 is blank
    with pytest.raises(ValueError, match="one vector per images row"):
        quality.assess(images, v, index=faiss_index.build(v[:3], kind="flat")[0], config=cfg)


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
    thumbs = quality.thumbnails([str(tmp_path / name) for name in files] + [str(tmp_path / "missing.png")])
    dist = quality.aligned_distance(thumbs[[0, 0, 0, 3, 0, 0]], thumbs[[1, 2, 3, 0, 4, 5]])
    limit = quality.QualityConfig().pixel_max_distance
    assert (dist[:4] <= limit).all(), dist  # either image may be the cropped one
    assert dist[4] > 2 * limit, dist
    assert np.isnan(dist[5])  # an unreadable file confirms nothing


def test_near_duplicates_confirmed_by_pixels_end_to_end(tmp_path: Path) -> None:
    original = sketch.draw(6, 0, size=96, label="hamburger").image
    other = sketch.draw(6, 1, size=96, label="hamburger").image
    paths = []
    for name, img in {"a.png": original, "b.png": original.crop((3, 3, 93, 93)), "c.png": other}.items():
        img.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    v = np.ones((3, 4), np.float32) / 2  # the embedding cannot tell them apart: the pixels decide
    images = _table(path=paths, width=[96, 90, 96], height=[96, 90, 96])
    t = quality.assess(images, v).to_pylist()
    assert [r["duplicate_of"] for r in t] == ["id000", "id000", None]
    assert t[1]["dup_reason"] == "near_duplicate" and 0 < t[1]["pixel_distance"] <= 3.5
    assert quality.summarize(quality.assess(images, v))["near_vetoed_by_pixels"] == 2


def test_missing_vectors_join_hash_groups_only() -> None:
    v = _orthogonal(3)
    v[1] = np.nan
    images = _table(content_hash=["A", "A", "B"])
    t = quality.assess(images, v).to_pylist()
    assert t[1]["duplicate_of"] == "id000" and t[1]["similarity"] is None


def test_vectors_for_aligns_embeddings_to_images() -> None:
    images = _table(content_hash=["a", "b", "c"])
    emb = pa.table({"id": ["id002", "id000"], "vector": pa.FixedSizeListArray.from_arrays(pa.array([1.0, 0, 0, 1]), 2)})
    out = quality.vectors_for(images, emb)
    assert out[0].tolist() == [0, 1] and np.isnan(out[1]).all() and out[2].tolist() == [1, 0]


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        quality.QualityConfig(near_threshold=1.5)
    with pytest.raises(ValueError):
        quality.QualityConfig(phash_max_distance=65)
    with pytest.raises(ValueError):
        quality.QualityConfig(k=1)


# -- the planted set --------------------------------------------------------------------------------


def test_planted_set_blank_and_duplicate_precision_recall(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    planted = build_planted(tmp_path / "planted")
    spec = model_spec()
    config = quality.QualityConfig()
    ing = ingest_planted(planted, Store(tmp_path / "home"), spec)
    table = quality.assess(ing.images, ing.vectors, index=ing.loaded, config=config)
    kinds = np.array([planted.kind[n] for n in ing.names])
    origin = np.array([planted.origin[n] or None for n in ing.names], dtype=object)

    # blanks: per image
    truth_blank = kinds == "black"
    got_blank = np.asarray(table.column("is_blank").to_pylist())
    tp = int((truth_blank & got_blank).sum())
    blank_p, blank_r = tp / max(1, got_blank.sum()), tp / truth_blank.sum()

    # duplicates: pairs of non-blank images in one group (truth: derived from the same original)
    group = np.array(table.column("duplicate_group").to_pylist(), dtype=object)
    dup_p, dup_r, true_pairs, pred_pairs = pair_scores(origin, group)
    near = np.isin(kinds, ["jpeg", "resize", "crop", "chain"])
    near_p, near_r, *_ = pair_scores(
        np.where(near | (kinds == "original"), origin, None), np.where(near | (kinds == "original"), group, None)
    )

    seed_deleted = seed_black_frames(ing.encoder, ing.loaded)
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    seed_missed = int(truth_blank.sum() - np.isin(ids[truth_blank], list(seed_deleted)).sum())
    seed_wrong = int(np.isin(ids[~truth_blank], list(seed_deleted)).sum())
    seconds = time.perf_counter() - t0
    print(
        f"\n[{spec}] {len(ids)} images, {truth_blank.sum()} black: blank P {blank_p:.3f} R {blank_r:.3f}; "
        f"duplicate pairs P {dup_p:.3f} R {dup_r:.3f} ({true_pairs} true, {pred_pairs} predicted; "
        f"near copies only P {near_p:.3f} R {near_r:.3f}); seed's method deletes {len(seed_deleted)} "
        f"({seed_wrong} not black) "
        f"and misses {seed_missed} black frames, we miss {int((truth_blank & ~got_blank).sum())}; "
        f"summary {quality.summarize(table)}; {seconds:.1f} s"
    )
    assert blank_p == 1.0 and blank_r == 1.0
    assert seed_missed > 0 and not (truth_blank & ~got_blank).any()
    # the exact kinds hold whatever the model: hashes decide them
    exact = np.isin(kinds, ["original", "bytes", "pixels"])
    exact_p, exact_r, *_ = pair_scores(np.where(exact, origin, None), np.where(exact, group, None))
    assert exact_p == 1.0 and exact_r == 1.0
    assert dup_p == 1.0 and dup_r == 1.0
    # what is kept: one image per original; reasons relative to the representative follow the truth
    kept = np.asarray(table.column("keep").to_pylist())
    assert sorted(origin[kept].tolist()) == sorted(set(origin[~truth_blank].tolist()))
    rep_of = dict(zip(ids.tolist(), ing.names.tolist(), strict=True))
    for name, kind, reason, rep in zip(
        ing.names, kinds, table.column("dup_reason").to_pylist(), table.column("duplicate_of").to_pylist(), strict=True
    ):
        if rep is None or rep_of[rep] == name:
            assert reason is None
            continue
        pair = {kind, planted.kind[rep_of[rep]]}
        expected = (
            "identical_bytes"
            if pair <= {"original", "bytes"}
            else "identical_pixels"
            if pair <= {"original", "bytes", "pixels"}
            else "near_duplicate"
        )
        assert reason == expected, (name, rep_of[rep])
