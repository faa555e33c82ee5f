"""The dbt project (``dbt/``) run through its Dagster assets on small, hand-computed tables.

The tables are written with ``Store.write_table`` as the upstream assets would, so the test covers
the same path production takes: catalog refresh, then ``dbt build`` with its data tests. Every
expected label below follows from the numbers in ``DEFAULT_PROBS`` / ``CUSTOM_PROBS`` by the rule
"top label if probability >= 0.5 and margin >= 0.0, else 'unlabelled'".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pytest

from hotdog_dagster.core.io.ingest import IMAGES_SCHEMA
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.labels.scoring import LabelSet, label_set_table, scores_table
from hotdog_dagster.defs.catalog.assets import catalog
from hotdog_dagster.defs.catalog.dbt import dbt_models, dbt_resource
from hotdog_dagster.resources import StoreResource

DEFAULT_LABELS = ("one hot dog", "two hot dogs", "a hamburger", "a face")

# id -> (partition, source, ground truth)
IMAGES: dict[str, tuple[str, str, str | None]] = {
    "a1": ("p1", "sketch", "one_hot_dog"),
    "a2": ("p1", "sketch", "face"),
    "a3": ("p1", "sketch", "hamburger"),
    "a4": ("p1", "folder", None),
    "b1": ("p2", "sketch", "two_hot_dogs"),
    "b2": ("p2", "sketch", "one_hot_dog"),
    "b3": ("p2", "sketch", "hamburger"),
    "b4": ("p2", "sketch", "two_hot_dogs"),  # a near-duplicate of b1: cleaning drops it, so it is never scored
}

# Probabilities over DEFAULT_LABELS, per clean image.
DEFAULT_PROBS: dict[str, list[float]] = {
    "a1": [0.70, 0.20, 0.05, 0.05],  # one_hot_dog, margin 0.5
    "a2": [0.10, 0.10, 0.20, 0.60],  # a_face, margin 0.4
    "a3": [0.40, 0.30, 0.20, 0.10],  # top one_hot_dog at 0.4 < 0.5: unlabelled
    "a4": [0.25, 0.25, 0.25, 0.25],  # a four-way tie: first listed wins the top slot, unlabelled
    "b1": [0.05, 0.55, 0.35, 0.05],  # two_hot_dogs, margin 0.2
    "b2": [0.50, 0.45, 0.05, 0.00],  # exactly 0.5 is not *under* 0.5: one_hot_dog, margin 0.05
    "b3": [0.10, 0.10, 0.70, 0.10],  # a_hamburger, margin 0.6
}

# id -> (label, top_label, runner_up, probability, margin)
DEFAULT_EXPECTED: dict[str, tuple[str, str, str, float, float]] = {
    "a1": ("one_hot_dog", "one_hot_dog", "two_hot_dogs", 0.70, 0.50),
    "a2": ("a_face", "a_face", "a_hamburger", 0.60, 0.40),
    "a3": ("unlabelled", "one_hot_dog", "two_hot_dogs", 0.40, 0.10),
    "a4": ("unlabelled", "one_hot_dog", "two_hot_dogs", 0.25, 0.00),
    "b1": ("two_hot_dogs", "two_hot_dogs", "a_hamburger", 0.55, 0.20),
    "b2": ("one_hot_dog", "one_hot_dog", "two_hot_dogs", 0.50, 0.05),
    "b3": ("a_hamburger", "a_hamburger", "one_hot_dog", 0.70, 0.60),
}

CUSTOM_LABELS = ("hot dog", "not hot dog")
# Run with label_min_probability=0.55 and label_min_margin=0.25 (dbt vars from the run config).
CUSTOM_PROBS: dict[str, list[float]] = {
    "a1": [0.90, 0.10],  # hot_dog
    "a2": [0.20, 0.80],  # not_hot_dog
    "a3": [0.42, 0.58],  # probable enough, but a margin of 0.16 < 0.25: unlabelled
    "a4": [0.30, 0.70],  # not_hot_dog
    "b1": [0.65, 0.35],  # hot_dog, margin 0.3
    "b2": [0.95, 0.05],  # hot_dog
    "b3": [0.10, 0.90],  # not_hot_dog
    "b4": [0.50, 0.50],  # 0.5 < 0.55: unlabelled (and scored though cleaning dropped it)
}


def images_table(ids: list[str]) -> pa.Table:
    """The images contract, with the columns dbt does not read filled with plausible constants."""
    rows = []
    for i in ids:
        partition, source, label = IMAGES[i]
        rows.append(
            {
                "id": i,
                "partition": partition,
                "source": source,
                "source_name": "sketch" if source == "sketch" else "photos",
                "path": f"images/{partition}/{i}.png",
                "content_hash": f"c-{i}",
                "pixel_hash": f"x-{i}",
                "bytes": 1000,
                "format": "PNG",
                "mode": "RGB",
                "width": 64,
                "height": 64,
                "lum_mean": 0.5,
                "lum_std": 0.1,
                "caption": label,
                "label": label,
                "color": None,
                "seed": 1,
                "safety_flagged": False,
            }
        )
    return pa.Table.from_pylist(rows, schema=IMAGES_SCHEMA)


def flags_table(partition: str) -> pa.Table:
    """No blank frames: the blank flags of one partition."""
    ids = [i for i, (p, _, _) in IMAGES.items() if p == partition]
    n = len(ids)
    return pa.table(
        {
            "id": ids,
            "partition": [partition] * n,
            "is_blank": [False] * n,
            "blank_reason": pa.nulls(n, pa.string()),
            "blank_code": pa.nulls(n, pa.string()),
            "blank_score": pa.array([-1.0] * n, pa.float32()),
        }
    )


def groups_table() -> pa.Table:
    """Every image kept except b4, an identical copy of b1."""
    dup = ("b1", "b4")
    return pa.Table.from_pylist(
        [
            {
                "id": i,
                "partition": IMAGES[i][0],
                "duplicate_group": 0 if i in dup else None,
                "group_size": 2 if i in dup else None,
                "duplicate_of": "b1" if i in dup else None,
                "similarity": 1.0 if i in dup else None,
                "pixel_distance": 0.0 if i == "b4" else None,
                "dup_reason": "identical_bytes" if i == "b4" else None,
                "dup_code": "identical_bytes" if i == "b4" else None,
                "keep": i != "b4",
            }
            for i in IMAGES
        ]
    )


def write_tables(
    store: Store,
    labels: tuple[str, ...],
    probs: dict[str, list[float]],
    duplicate_id: bool = False,
    unscored: tuple[str, ...] = (),
) -> None:
    """Write the tables dbt reads in their writers' schemas; the scores through core.labels' own builders."""
    for partition in ("p1", "p2"):
        ids = [i for i, (p, _, _) in IMAGES.items() if p == partition]
        if duplicate_id and partition == "p2":
            ids.append("a1")  # the same id in two partitions: the unique test must catch it
        store.write_table("images", images_table(ids), partition=partition)
        store.write_table("image_quality", flags_table(partition), partition=partition)
    store.write_table("duplicate_groups", groups_table())

    label_set = LabelSet.build(labels)
    for partition in ("p1", "p2"):
        ids = [i for i in probs if IMAGES[i][0] == partition and i not in unscored]
        prob = np.array([probs[i] for i in ids], dtype=np.float32)
        cos = 0.2 + 0.1 * prob  # any cosine will do; this one keeps the same order as the probabilities
        table = scores_table(ids, label_set, cos, prob)
        table = table.add_column(1, "partition", pa.array([partition] * len(ids), pa.string()))
        store.write_table("label_scores", table, partition=partition)
        store.write_table("label_set", label_set_table(label_set, partition, "test-model"), partition=partition)


def build(home: Path, **label_config: float) -> dg.ExecuteInProcessResult:
    """Materialise the catalog's views and every dbt model (``dbt build``), without raising on failure."""
    run_config = {"ops": {"dbt_models": {"config": label_config}}} if label_config else None
    return dg.materialize(
        [catalog, dbt_models],
        resources={"dbt": dbt_resource(), "store": StoreResource(home=str(home))},
        run_config=run_config,
        raise_on_error=False,
    )


def query(store: Store, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(store.catalog_path), read_only=True) as con:
        return con.execute(sql).fetchall()


def image_labels(store: Store) -> dict[str, tuple[Any, ...]]:
    rows = query(
        store, "select id, label, top_label, runner_up, probability, margin, partition, true_label from image_labels"
    )
    return {r[0]: r[1:] for r in rows}


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_dbt_models_hang_off_the_upstream_assets() -> None:
    """Sources resolve to the assets that write them, so Dagster runs dbt after label_scores and image_quality."""
    upstream = [
        dg.AssetSpec(key) for key in ("images", "image_quality", "duplicate_groups", "label_scores", "label_set")
    ]
    resources = {"dbt": dbt_resource(), "store": StoreResource()}
    graph = dg.Definitions(assets=[*upstream, catalog, dbt_models], resources=resources).resolve_asset_graph()

    def downstream(key: str) -> set[str]:
        keys = dg.AssetSelection.assets(key).downstream(include_self=False).resolve(graph)
        return {k.to_user_string() for k in keys}

    models = {"stg_images", "stg_image_quality", "stg_label_scores", "stg_label_set", "image_labels", "label_summary"}
    assert {k.to_user_string() for k in dbt_models.keys} == models
    assert {"stg_label_scores", "stg_label_set", "image_labels", "label_summary"} <= downstream("label_scores")
    assert "stg_image_quality" in downstream("duplicate_groups")
    assert {"stg_images", "image_labels", "label_summary"} <= downstream("images")
    # every model reads the catalog's views, so any selection downstream of a table builds all it reads
    assert models <= downstream("search_items") and models <= downstream("label_scores")
    assert set(dbt_models.group_names_by_key.values()) == {"dbt"}
    assert dbt_models.op.pool == "duckdb"
    assert all(spec.automation_condition is not None for spec in dbt_models.specs)


def test_default_labels_thresholds_and_summary(home: Path, store: Store) -> None:
    write_tables(store, DEFAULT_LABELS, DEFAULT_PROBS)
    result = build(home)
    assert result.success

    # Every dbt data test ran as an asset check, and passed.
    checks = check_results(result)
    assert set(checks) == {spec.name for spec in dbt_models.check_specs}
    assert all(e.passed for e in checks.values()), [n for n, e in checks.items() if not e.passed]

    got = image_labels(store)
    assert set(got) == set(DEFAULT_PROBS)  # b4 was not scored, so it has no label row
    for image_id, (label, top, runner_up, probability, margin) in DEFAULT_EXPECTED.items():
        row = got[image_id]
        assert row[:3] == (label, top, runner_up), image_id
        assert row[3] == pytest.approx(probability, abs=1e-6), image_id
        assert row[4] == pytest.approx(margin, abs=1e-6), image_id
        assert row[5:] == IMAGES[image_id][::2], image_id  # partition and ground truth come from images

    summary = {
        (r[0], r[1]): r[2:]
        for r in query(
            store,
            "select label, partition, n_images, mean_probability, min_probability, p50_probability, max_probability from label_summary",
        )
    }
    assert {key: row[0] for key, row in summary.items()} == {
        ("one_hot_dog", "p1"): 1,
        ("a_face", "p1"): 1,
        ("unlabelled", "p1"): 2,
        ("two_hot_dogs", "p2"): 1,
        ("one_hot_dog", "p2"): 1,
        ("a_hamburger", "p2"): 1,
        ("one_hot_dog", "all"): 2,
        ("two_hot_dogs", "all"): 1,
        ("a_hamburger", "all"): 1,
        ("a_face", "all"): 1,
        ("unlabelled", "all"): 2,
    }
    # unlabelled in p1: a3 (0.40) and a4 (0.25); one_hot_dog overall: a1 (0.70) and b2 (0.50).
    assert summary[("unlabelled", "p1")][1:] == pytest.approx([0.325, 0.25, 0.325, 0.40], abs=1e-6)
    assert summary[("one_hot_dog", "all")][1:] == pytest.approx([0.60, 0.50, 0.60, 0.70], abs=1e-6)


def test_custom_label_set_and_thresholds(home: Path, store: Store) -> None:
    """Two labels with other names, stricter thresholds: the models follow label_set, not hard-coded columns."""
    write_tables(store, CUSTOM_LABELS, CUSTOM_PROBS)
    result = build(home, label_min_probability=0.55, label_min_margin=0.25)
    assert result.success

    got = image_labels(store)
    assert {i: row[0] for i, row in got.items()} == {
        "a1": "hot_dog",
        "a2": "not_hot_dog",
        "a3": "unlabelled",
        "a4": "not_hot_dog",
        "b1": "hot_dog",
        "b2": "hot_dog",
        "b3": "not_hot_dog",
    }  # b4 is scored (batches are scored before cleaning resolves) but not clean: no label row
    assert got["a3"][1:5] == ("not_hot_dog", "hot_dog", pytest.approx(0.58, abs=1e-6), pytest.approx(0.16, abs=1e-6))
    assert query(store, "select count(*) from stg_label_scores") == [(16,)]  # 8 images x 2 labels

    counts = dict(query(store, "select label, n_images from label_summary where partition = 'all'"))
    assert counts == {"hot_dog": 3, "not_hot_dog": 3, "unlabelled": 1}
    checks = check_results(result)
    assert all(e.passed for e in checks.values()), [n for n, e in checks.items() if not e.passed]


def test_a_clean_image_without_scores_is_a_warning(home: Path, store: Store) -> None:
    """A partition whose scores are missing an image warns (fixed by re-scoring it), the run succeeds."""
    write_tables(store, DEFAULT_LABELS, DEFAULT_PROBS, unscored=("a2",))
    result = build(home)
    assert result.success
    failed = {n: e.severity for n, e in check_results(result).items() if not e.passed}
    assert failed == {"clean_images_are_scored": dg.AssetCheckSeverity.WARN}


def test_a_failing_dbt_test_fails_the_materialisation(home: Path, store: Store) -> None:
    write_tables(store, DEFAULT_LABELS, DEFAULT_PROBS, duplicate_id=True)
    result = build(home)
    assert not result.success
    checks = check_results(result)
    assert not checks["unique_stg_images_id"].passed
    assert checks["unique_stg_images_id"].severity == dg.AssetCheckSeverity.ERROR
