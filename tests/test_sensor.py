"""The folder sensor: new files become new partitions, once each, on the real instance."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg

from hotdog_dagster.core.io.batches import load_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model.sketch import draw
from hotdog_dagster.definitions import defs
from hotdog_dagster.pipeline import dagster_instance
from hotdog_dagster.resources import StoreResource, WatchResource


def _write(folder: Path, names: list[str], age_seconds: float = 60) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    past = time.time() - age_seconds
    for i, name in enumerate(names):
        draw(2, i, size=32).image.save(folder / name)
        os.utime(folder / name, (past, past))


def _tick(store: Store, folder: Path, instance: dg.DagsterInstance, chunk: int = 3):
    sensor = defs.get_repository_def().get_sensor_def("new_files_sensor")
    ctx = dg.build_sensor_context(
        instance=instance,
        resources={
            "store": StoreResource(home=str(store.root)),
            "watch": WatchResource(folder=str(folder), chunk=chunk),
        },
    )
    return sensor(ctx)


def test_sensor_adds_one_partition_per_chunk_of_new_files(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    _write(folder, [f"a{i}.png" for i in range(5)])
    instance = dagster_instance(store)

    first = _tick(store, folder, instance)
    keys = [r.partition_key for r in first.run_requests]
    assert keys == ["folder-incoming-00000", "folder-incoming-00001"]
    assert [r.run_key for r in first.run_requests] == keys  # run_key: a batch is never requested twice
    assert first.dynamic_partitions_requests[0].partition_keys == keys
    assert load_batch(store, keys[0]).files == ["a0.png", "a1.png", "a2.png"]

    assert isinstance(_tick(store, folder, instance), dg.SkipReason)  # nothing new

    _write(folder, ["b0.png"])
    _write(folder, ["b1.png"], age_seconds=0)  # still being copied: waits for the next tick
    third = _tick(store, folder, instance)
    assert [r.partition_key for r in third.run_requests] == ["folder-incoming-00002"]
    assert load_batch(store, "folder-incoming-00002").files == ["b0.png"]


def test_sensor_without_a_folder_says_how_to_enable_it(store: Store) -> None:
    sensor = defs.get_repository_def().get_sensor_def("new_files_sensor")
    ctx = dg.build_sensor_context(resources={"store": StoreResource(home=str(store.root)), "watch": WatchResource()})
    result = sensor(ctx)
    assert isinstance(result, dg.SkipReason) and "watch.folder" in result.skip_message
