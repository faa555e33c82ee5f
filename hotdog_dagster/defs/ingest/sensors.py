"""A sensor that turns new files in a watched folder into new ``batches`` partitions and runs them."""

import dagster as dg

from hotdog_dagster.core.io.batches import save_batch
from hotdog_dagster.core.io.watch import plan_new_files
from hotdog_dagster.defs.shared import batches
from hotdog_dagster.resources import StoreResource, WatchResource

#: The job the sensor requests (defined in definitions.py; named here so the sensor needs no import of it).
BATCH_JOB = "ingest_batch"


@dg.sensor(job_name=BATCH_JOB, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED)
def new_files_sensor(
    context: dg.SensorEvaluationContext, store: StoreResource, watch: WatchResource
) -> dg.SensorResult | dg.SkipReason:
    """One partition per chunk of new files; `run_key` = partition key, so no batch runs twice."""
    if not watch.folder:
        return dg.SkipReason(
            "no folder to watch: set watch.folder in the profile (HOTDOG_CONFIG) to enable this sensor"
        )
    specs = plan_new_files(store.store(), watch.folder, watch.chunk)
    if not specs:
        return dg.SkipReason(f"no new files in {watch.folder}")
    for spec in specs:
        save_batch(store.store(), spec)
    keys = [s.key for s in specs]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, run_key=k) for k in keys],
        dynamic_partitions_requests=[batches.build_add_request(keys)],
        cursor=keys[-1],
    )
