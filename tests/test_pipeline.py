"""The asset graph materialised in process into a temporary HOTDOG_HOME, on a real Dagster instance."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from hotdog_dagster.core.io.batches import plan_folder, plan_sketch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model.encoder import ModelSpecError
from hotdog_dagster.core.model.sketch import draw
from hotdog_dagster.core.search import index
from hotdog_dagster.core.settings import LabelSettings, ModelSettings, Profile
from hotdog_dagster.definitions import build_definitions, defs
from hotdog_dagster.defs.catalog.assets import TABLES
from hotdog_dagster.pipeline import dagster_instance, execute, failure_message, run_pipeline


def _counts(store: Store) -> dict[str, int]:
    with duckdb.connect(str(store.catalog_path), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("images", "rejected", "embeddings")}


TABLE_ASSETS = set(TABLES)


def test_definitions_load_with_every_stage() -> None:
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert TABLE_ASSETS | {"image_index", "clean_images", "search_items", "image_labels"} <= keys
    assert repo.get_sensor_def("new_files_sensor") is not None
    assert {j.name for j in repo.get_all_jobs()} >= {"ingest_batch", "whole_set"}


def test_asset_keys_equal_the_catalog_tables(store: Store, plumbing_profile: Profile) -> None:
    """Every table and view in catalog.duckdb is an asset of that name, and every table asset is there."""
    specs = plan_sketch(seed=2, images=20, partition_size=10, size=64)
    assert run_pipeline(store, plumbing_profile, specs).ok
    with duckdb.connect(str(store.catalog_path), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert tables <= keys, tables - keys
    graph = defs.resolve_asset_graph()
    written = {k.to_user_string() for k in keys_of_kind(graph, {"parquet", "duckdb"})}
    assert written == tables - dbt_models(graph), written ^ (tables - dbt_models(graph))


def keys_of_kind(graph, kinds: set[str]):
    return [
        k for k in graph.get_all_asset_keys() if set(graph.get(k).kinds) & kinds and "dbt" not in graph.get(k).kinds
    ]


def dbt_models(graph) -> set[str]:
    return {k.to_user_string() for k in graph.get_all_asset_keys() if "dbt" in graph.get(k).kinds}


def test_sketch_graph_end_to_end_and_rematerialise(store: Store, plumbing_profile: Profile) -> None:
    specs = plan_sketch(seed=3, images=60, partition_size=25, size=plumbing_profile.ingest.sketch_size)
    summary = run_pipeline(store, plumbing_profile, specs)
    assert summary.ok, summary.failed
    assert summary.partitions == ["sketch-s3-0000000", "sketch-s3-0000025", "sketch-s3-0000050"]
    assert _counts(store) == {"images": 60, "rejected": 0, "embeddings": 60}
    loaded = index.load(store)
    assert loaded.index.ntotal == 60 and loaded.info.partitions == 3
    ids = set(store.read_table("images", columns=["id"]).column("id").to_pylist())
    assert set(loaded.ids.tolist()) == ids

    # the runs are on the persistent instance the UI reads, with the partitions registered
    instance = dagster_instance(store)
    assert set(instance.get_dynamic_partitions("batches")) == {s.key for s in specs}
    mats = instance.fetch_materializations(dg.AssetKey("embeddings"), limit=10).records
    assert {m.partition_key for m in mats} == {s.key for s in specs}
    latest = instance.get_latest_materialization_event(dg.AssetKey("image_index"))
    assert latest.asset_materialization.metadata["vectors"].value == 60

    # re-materialising replaces partitions: no duplicate rows, same ids
    again = run_pipeline(store, plumbing_profile, specs[:2])
    assert again.ok
    assert _counts(store) == {"images": 60, "rejected": 0, "embeddings": 60}
    assert set(index.load(store).ids.tolist()) == ids


def test_folder_graph_records_rejects_and_goes_on(store: Store, plumbing_profile: Profile, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):
        draw(1, i, size=64).image.save(folder / ("sub" if i % 2 else ".") / f"img{i}.jpg", quality=85)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    shutil.copy(folder / "img0.jpg", folder / "img0_copy.jpg")
    from hotdog_dagster.core.io.batches import list_source_files

    files = list_source_files(folder)
    specs = plan_folder(folder, files, partition_size=4)
    summary = run_pipeline(store, plumbing_profile, specs)
    assert summary.ok, summary.failed
    counts = _counts(store)
    assert counts["images"] + counts["rejected"] == len(files) == 9
    assert counts == {"images": 7, "rejected": 2, "embeddings": 7}
    with duckdb.connect(str(store.catalog_path), read_only=True) as con:
        reasons = dict(con.execute("SELECT source_name, reason FROM rejected").fetchall())
        assert "0 bytes" in reasons["empty.jpg"] and "not a recognised image" in reasons["notes.jpg"]
        same = con.execute(
            "SELECT count(DISTINCT id), count(DISTINCT content_hash) FROM images "
            "WHERE source_name IN ('img0.jpg', 'img0_copy.jpg')"
        ).fetchone()
        assert same == (2, 1)


def test_failed_partition_is_reported_and_others_finish(
    store: Store, plumbing_profile: Profile, tmp_path: Path
) -> None:
    good = plan_sketch(seed=4, images=10, partition_size=10, size=64)
    bad = plan_folder(
        tmp_path / "gone", ["a.jpg"], partition_size=1
    )  # its folder does not exist: every file unreadable
    summary = run_pipeline(store, plumbing_profile, [*bad, *good])
    assert summary.ok  # unreadable files are recorded, not fatal
    assert _counts(store) == {"images": 10, "rejected": 1, "embeddings": 10}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("open_clip/no-such-arch/random", "unknown open_clip architecture 'no-such-arch'"),
        ("open_clip/hotdog-sketch//nowhere/ckpt.safetensors", "does not exist"),
        ("clip-vit", "expected open_clip/<architecture>/<weights>"),
    ],
)
def test_bad_model_spec_is_refused_before_any_work(store: Store, model: str, message: str) -> None:
    specs = plan_sketch(seed=5, images=5, partition_size=5, size=64)
    with pytest.raises(ModelSpecError, match=re.escape(message)):
        run_pipeline(store, Profile(model=ModelSettings(name=model, num_workers=0)), specs)
    assert not store.tables_dir.exists()


def test_step_failure_reports_the_root_cause(store: Store, plumbing_profile: Profile) -> None:
    """A failure inside a step (here: a batch whose manifest vanished) names the user's exception."""
    specs = plan_sketch(seed=6, images=5, partition_size=5, size=64)
    from hotdog_dagster.pipeline import register_batches

    register_batches(store, dagster_instance(store), specs)
    (store.batches_dir / f"{specs[0].key}.json").unlink()
    instance = dagster_instance(store)
    ok, run_id = execute(
        build_definitions(plumbing_profile, home=str(store.root)), "ingest_batch", instance, specs[0].key
    )
    assert not ok
    assert "no batch manifest for partition" in failure_message(instance, run_id)


def test_checks_metadata_and_label_rescoring(store: Store, plumbing_profile: Profile) -> None:
    """Asset checks run and pass, the UI metadata carries contact sheets, and a new label set re-scores only."""
    specs = plan_sketch(seed=8, images=40, partition_size=40, size=64)
    assert run_pipeline(store, plumbing_profile, specs).ok
    instance = dagster_instance(store)
    for asset, check in [
        ("image_index", "index_matches_tables"),
        ("embeddings", "vectors_are_unit_norm"),
        ("image_quality", "quality_covers_every_image"),
        ("duplicate_groups", "groups_cover_every_image"),
        ("label_set", "scores_use_current_label_set"),
    ]:
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(asset), check)]
        )[dg.AssetCheckKey(dg.AssetKey(asset), check)]
        assert record.event.dagster_event.event_specific_data.passed, check
    quality = instance.get_latest_materialization_event(dg.AssetKey("image_quality")).asset_materialization.metadata
    assert quality["images"].value == 40 and "blank_by_reason" in quality
    if quality["blank"].value:  # the batch's own sheet, before the whole set is grouped
        assert "data:image/png;base64," in quality["blanks_contact_sheet"].value
    meta = instance.get_latest_materialization_event(dg.AssetKey("duplicate_groups")).asset_materialization.metadata
    assert meta["images"].value == 40 and "blank_by_reason" in meta
    if meta["blank"].value:
        assert "data:image/png;base64," in meta["blanks_contact_sheet"].value
    with duckdb.connect(str(store.catalog_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM image_labels").fetchone()[0] == meta["kept"].value

    embedded_at = {p.stat().st_mtime_ns for p in store.partition_files("embeddings")}
    relabel = plumbing_profile.model_copy(update={"labels": LabelSettings(labels=["a cat", "a dog"])})
    relabelled = build_definitions(relabel, home=str(store.root))
    # the label set is the code version: every scored partition now shows stale in the UI
    old = build_definitions(plumbing_profile, home=str(store.root)).resolve_asset_graph()
    new = relabelled.resolve_asset_graph()
    key = dg.AssetKey("label_scores")
    assert old.get(key).code_version != new.get(key).code_version
    result = dg.materialize(
        list(relabelled.assets),
        selection=["label_scores", "label_set"],
        partition_key=specs[0].key,
        instance=instance,
        resources=relabelled.resources,
    )
    assert result.success
    scores = store.read_table("label_scores")
    assert {"a_cat", "a_dog", "p_a_cat"} <= set(scores.column_names) and "a_face" not in scores.column_names
    assert {p.stat().st_mtime_ns for p in store.partition_files("embeddings")} == embedded_at  # nothing re-embedded


def test_bad_label_set_is_refused_before_any_work(store: Store, plumbing_profile: Profile) -> None:
    from hotdog_dagster.core.labels.scoring import LabelSetError

    bad = plumbing_profile.model_copy(
        update={"labels": LabelSettings.model_construct(labels=["a face", "A face"], templates=["{}"])}
    )
    with pytest.raises(LabelSetError, match="would both be column"):
        run_pipeline(store, bad, plan_sketch(seed=9, images=5, partition_size=5, size=64))
    assert not store.tables_dir.exists()
