"""What several stages share: the batch partitioning and the tags of GPU steps."""

import dagster as dg

batches = dg.DynamicPartitionsDefinition(name="batches")

#: Requests one GPU on Kubernetes (k8s_job_executor); ignored by the in-process and multiprocess executors.
GPU_OP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}


def counts(values: list[str | None]) -> dg.MetadataValue:
    """Counts per reason code, as JSON metadata (codes are stored beside messages, never parsed from them)."""
    out: dict[str, int] = {}
    for v in values:
        if v is not None:
            out[v] = out.get(v, 0) + 1
    return dg.MetadataValue.json(dict(sorted(out.items())))
