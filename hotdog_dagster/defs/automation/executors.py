"""The executor a profile asks for (``scale.executor``): one code base for a laptop, Celery workers or Kubernetes.

Imports of dagster-celery and dagster-k8s happen only when chosen, so a one-machine install loads neither.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from hotdog_dagster.core.settings import ScaleSettings

#: Celery settings both the executor and every worker need (``dagster-celery worker start -y``): one task
#: at a time per worker process, and a visibility timeout longer than any step, or Redis hands a long GPU
#: step to a second worker.
CELERY_SOURCE: dict[str, Any] = {
    "worker_prefetch_multiplier": 1,
    "task_acks_late": True,
    "broker_transport_options": {"visibility_timeout": 6 * 3600},
}


def celery_config(scale: ScaleSettings) -> dict[str, Any]:
    """The celery executor's config; also the ``execution: config:`` block of a worker's ``-y`` YAML."""
    return {"broker": scale.celery_broker, "backend": scale.celery_backend, "config_source": CELERY_SOURCE}


def executor_for(scale: ScaleSettings) -> dg.ExecutorDefinition:
    """``in_process`` starts nothing per step; ``multiprocess`` forks steps from a server that imported the
    code once (spawn would re-import Dagster, dbt and this package for every step); ``celery`` and ``k8s``
    place each step by its tags (see ``defs/shared.py``)."""
    if scale.executor == "in_process":
        return dg.in_process_executor
    if scale.executor == "multiprocess":
        return dg.multiprocess_executor.configured({"start_method": {"forkserver": {}}}, name="multiprocess")
    if scale.executor == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_config(scale), name="celery")
    from dagster_k8s import k8s_job_executor  # its settings come from the K8sRunLauncher in the Helm values

    return k8s_job_executor
