"""The partitioning shared by every per-batch asset: one dynamic partition per batch manifest."""

import dagster as dg

batches = dg.DynamicPartitionsDefinition(name="batches")

#: Requests one GPU on Kubernetes (k8s_job_executor); ignored by the in-process and multiprocess executors.
GPU_OP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}
