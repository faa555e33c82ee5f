"""Two writers on one HOTDOG_HOME: two `hotdog run` at once, and several partitions materialised at
once with the multiprocess executor while the catalog and dbt run beside them. No DuckDB lock
error, no lost or doubled rows; where two writers would collide the second waits or says plainly
that the home is busy and who holds it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultkit import (
    PARTITION,
    REPO,
    TINY_PROFILE,
    Reference,
    differences,
    env_for,
    finish,
    hotdog,
    snapshot,
    start,
)

from hotdog_dagster.core.io.locks import file_lock, holder_of, lock_path

pytestmark = pytest.mark.reliability

PER_BATCH = (
    "images,rejected,thumbnails,embeddings,embedding_failures,image_quality,duplicate_edges,label_scores,label_set"
)
CATALOG_AND_DBT = (
    "clean_images,search_items,stg_images,stg_image_quality,stg_label_scores,stg_label_set,image_labels,label_summary"
)
LOCK_ERRORS = ("Could not set lock", "Conflicting lock")  # DuckDB's lock errors


def test_a_second_run_on_a_busy_home_stops_at_once_and_names_the_holder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with file_lock(lock_path(home, "run"), what="test"):
        t0 = time.monotonic()
        done = hotdog(["run", "--images", "10", "--partition-size", "10"], home, timeout=300)
        plan = hotdog(["plan", "--images", "10", "--partition-size", "10"], home, timeout=300)
    assert done.returncode == 2, done.tail()
    assert f"is busy: pid {os.getpid()}" in done.stderr and "--wait" in done.stderr
    assert str(lock_path(home, "run")) in done.stderr and done.stderr.count("\n") == 1
    assert plan.returncode == 2 and f"pid {os.getpid()}" in plan.stderr
    assert time.monotonic() - t0 < 120  # said at once (process start-up aside), no work done
    assert not (home / "tables").exists() and not (home / "batches").exists()


def _wait_for_holder(path: Path, pid: int, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while holder_of(path).get("pid") != pid:
        assert proc.poll() is None, "the first run ended before taking the lock"
        assert time.monotonic() < deadline, "the first run never took the home lock"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_runs_at_once_lose_and_double_nothing(reference: Reference, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start(reference.args(), home)
    try:
        _wait_for_holder(lock_path(home, "run"), first.pid, first)
        second = hotdog(reference.args(), home, timeout=300)
        waiting = start([*reference.args(), "--wait"], home)
        first_done = finish(first)
        waited = finish(waiting)
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
    assert first_done.returncode == 0, first_done.tail()
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.tail()
    assert waited.returncode == 0, waited.tail()
    for out in (first_done, second, waited):
        assert not any(e in out.stdout + out.stderr for e in LOCK_ERRORS), out.tail()
    assert differences(snapshot(home), reference.snap) == []


def _dagster(args: list[str], home: Path, profile: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dagster", *args],
        cwd=REPO,
        env=env_for(home, HOTDOG_CONFIG=str(profile)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_partitions_at_once_on_the_multiprocess_executor_with_dbt_beside_them(
    reference: Reference, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    profile = tmp_path / "multiprocess.yaml"
    profile.write_text(TINY_PROFILE + "scale:\n  executor: multiprocess\n")
    plan = hotdog(
        ["plan", "--source", "folder", "--path", str(reference.folder), "--partition-size", str(PARTITION)]
        + ["--config", str(profile)],
        home,
    )
    assert plan.returncode == 0, plan.tail()
    keys = [line.split("\t")[0] for line in plan.stdout.splitlines()]
    assert len(keys) == 3
    materialize = ["asset", "materialize", "-m", "hotdog_dagster.definitions"]
    # the first batch and the whole set, so the catalog and dbt have something to build on
    for args in ([*materialize, "--select", PER_BATCH, "--partition", keys[0]], ["job", "execute", "-m",
                 "hotdog_dagster.definitions", "-j", "whole_set"]):  # fmt: skip
        done = finish(_dagster(args, home, profile))
        assert done.returncode == 0, done.tail()
    # now two batches at once, each on the multiprocess executor, and the catalog + dbt twice beside them
    procs = [_dagster([*materialize, "--select", PER_BATCH, "--partition", key], home, profile) for key in keys[1:]]
    procs += [_dagster([*materialize, "--select", CATALOG_AND_DBT], home, profile) for _ in range(2)]
    results = [finish(p) for p in procs]
    for done in results:
        assert done.returncode == 0, done.tail(6000)
        assert not any(e in done.stdout + done.stderr for e in LOCK_ERRORS), done.tail(6000)
    # then the whole set and the walk, as `hotdog run` finishes a folder whose batches are all done
    final = hotdog(reference.args(), home)
    assert final.returncode == 0, final.tail()
    assert differences(snapshot(home), reference.snap) == []
