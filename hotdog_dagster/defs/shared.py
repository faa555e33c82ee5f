"""What several stages share: the batch partitioning, its backfill policy, and the placement of GPU steps."""

import functools
from collections.abc import Callable

import dagster as dg

from hotdog_dagster.core.io.store import CorruptFile

batches = dg.DynamicPartitionsDefinition(name="batches")

#: Every per-batch asset: a backfill (UI, or ``dagster asset materialize --partition-range A...B``) is one run
#: over all its partitions, so each process starts once and each model loads once for the whole range. One
#: policy for every per-batch asset, because a job mixing policies falls back to the smallest one.
BATCH_BACKFILL = dg.BackfillPolicy.single_run()

#: The pool of GPU steps; its limit (one step per card) comes from the deployment's ``dagster.yaml``.
GPU_POOL = "gpu"
#: The Celery queue of GPU steps: a worker on a GPU machine consumes it (``-q gpu``); CPU steps use the default.
GPU_QUEUE = "gpu"
#: The node label NVIDIA's GPU feature discovery sets, and the taint GPU node pools usually carry.
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]

#: Tags the executors read, on the assets themselves (job-level tags are not applied to backfills or
#: to assets launched from the graph): dagster-celery routes the step to the ``gpu`` queue; k8s_job_executor
#: gives its pod one GPU and schedules it on a GPU node. The in-process and multiprocess executors ignore them.
GPU_OP_TAGS = {
    "dagster-celery/queue": GPU_QUEUE,
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"nvidia.com/gpu": "1", "memory": "8Gi"},
                "limits": {"nvidia.com/gpu": "1", "memory": "16Gi"},
            }
        },
        "pod_spec_config": {"node_selector": GPU_NODE_SELECTOR, "tolerations": GPU_TOLERATIONS},
    },
}


def counts(values: list[str | None]) -> dg.MetadataValue:
    """Counts per reason code, as JSON metadata (codes are stored beside messages, never parsed from them)."""
    out: dict[str, int] = {}
    for v in values:
        if v is not None:
            out[v] = out.get(v, 0) + 1
    return dg.MetadataValue.json(dict(sorted(out.items())))


def unreadable_fails_the_check(check: Callable[..., dg.AssetCheckResult]) -> Callable[..., dg.AssetCheckResult]:
    """A check over a whole table that meets an unreadable file reports it as a failed check, naming it.

    Raised instead, it failed the step and with it the run of whatever batch happened to run the
    check, so re-materialising one damaged partition failed while another was still damaged and
    healing took rounds (found by the reliability suite). A failed blocking check still blocks.
    """

    @functools.wraps(check)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return check(*args, **kwargs)
        except CorruptFile as exc:
            return dg.AssetCheckResult(
                passed=False,
                metadata={"unreadable_file": dg.MetadataValue.path(str(exc.path)), "fix": str(exc)},
            )

    return wrapper
