"""kill -9 in every stage at a random point: no partial file is ever visible, the rerun completes,
and every table equals a clean run's (same ids, same vectors, same flags).

Runs are ``hotdog run --source folder`` of this checkout in their own process group; the kill is
the fault hook's SIGKILL at a fault point chosen with the printed seed (``HOTDOG_FAULT_SEED``
replays it), sent to the whole group so dbt dies with the run, like a machine going away.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from faultkit import PARTITION, STAGES, Reference, differences, hotdog, snapshot, unreadable_files

pytestmark = pytest.mark.reliability

#: Stages a batch runs (their fault points repeat per batch); the rest run once over the whole set.
BATCH_STAGES = ("ingest", "embed", "clean", "labels")


def per_batch_points(reference: Reference) -> Counter[str]:
    """Fault points of each stage in one batch (the reference run's count over its batches)."""
    counts = Counter(stage for _, stage, _ in reference.trace)
    batches = len(list(reference.folder.glob("*.png"))) // PARTITION
    return Counter({s: counts[s] // batches for s in BATCH_STAGES})


def whole_run_points(reference: Reference) -> Counter[str]:
    return Counter(stage for _, stage, _ in reference.trace)


def kill_point(stage: str, reference: Reference, rng: np.random.Generator) -> int:
    """A random point (1-based, counted within the stage) that a run reaches in ``stage``.

    For a batch stage, within the first batch the run redoes (so a recovery run, which redoes only
    unfinished batches, reaches it too); for a whole-set stage, anywhere in the stage.
    """
    available = per_batch_points(reference)[stage] if stage in BATCH_STAGES else whole_run_points(reference)[stage]
    assert available > 0, f"the reference run passed no fault point of stage {stage}"
    return int(rng.integers(1, available + 1))


def killed_run(reference: Reference, home, stage: str, k: int):  # noqa: ANN001, ANN201
    done = hotdog(reference.args(), home, HOTDOG_FAULT_KILL_AT=f"{stage}:{k}", HOTDOG_FAULT_KILL_GROUP="1")
    assert done.killed, f"the run was not killed at {stage}:{k}\n{done.tail()}"
    visible = unreadable_files(home)
    assert visible == [], f"after a kill at {stage}:{k}, readers see partial or broken files: {visible}"
    return done


def test_a_kill_inside_a_pooled_step_then_a_rerun_equals_a_clean_run(
    reference: Reference, rng: np.random.Generator, tmp_path
) -> None:  # noqa: ANN001
    """Embedding runs in the ``gpu`` pool (one step at a time). A killed in-process run never gave
    its pool slot back, so the rerun waited for it for ever; now the rerun marks the dead run failed,
    frees its slots and completes."""
    import dagster as dg

    k = kill_point("embed", reference, rng)
    print(f"killing at the fault point embed:{k}")
    home = tmp_path / "home"
    killed_run(reference, home, "embed", k)
    done = hotdog(reference.args(), home, timeout=600)
    assert done.returncode == 0, done.tail()
    assert differences(snapshot(home), reference.snap) == []
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    statuses = Counter(r.status for r in instance.get_runs())
    assert dg.DagsterRunStatus.STARTED not in statuses and statuses[dg.DagsterRunStatus.FAILURE] == 1, statuses


@pytest.mark.slow
def test_a_kill_in_every_stage_in_turn_then_a_rerun_equals_a_clean_run(
    reference: Reference, rng: np.random.Generator, tmp_path
) -> None:  # noqa: ANN001
    """One home, one run killed per stage in pipeline order; each run also recovers the previous kill.

    A batch stage is killed inside the first batch the run redoes, so the next run redoes it
    again; whole-set stages are killed once every batch is done. The last run is left alone and
    its home must equal the clean run's.
    """
    home = tmp_path / "home"
    plan = [(stage, kill_point(stage, reference, rng)) for stage in STAGES]
    print("kill plan: " + ", ".join(f"{s}:{k}" for s, k in plan))
    for stage, k in plan:
        killed_run(reference, home, stage, k)
    done = hotdog(reference.args(), home)
    assert done.returncode == 0, done.tail()
    assert differences(snapshot(home), reference.snap) == []
