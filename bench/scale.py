"""Where the time of a batch run goes, per executor: starting the run, starting each step, and the work.

The same batches (4 x 100 sketches by default) go through ``raw_images`` + ``image_embeddings`` (the
issue's scenario; ``--all-steps`` runs every per-batch step) in several ways, each into its own
``HOTDOG_HOME``, each run started as its own process the way a run launcher starts one
(``dagster asset materialize``):

  baseline          Dagster's default multiprocess executor (spawn): one run per batch, one fresh Python
                    per step, each importing Dagster, dbt and this package again (the state before)
  multiprocess      forkserver: steps fork from a server that imported the code once
  in_process        every step of a run in the run's own process (the default on one machine now)
  in_process_range  one run for all batches: what the single-run backfill policy makes of a backfill or
                    `dagster asset materialize --partition-range A...B`; the model loads once
  celery            one run per batch, steps on the local Celery deployment (PostgreSQL, Redis, a gpu
                    and a default-queue worker, already running: start-up not counted)
  celery_range      one run for all batches on Celery

Per run, from its event log: *run start* (process launch to RUN_START: interpreter, imports, loading
the definitions), *step start* per step (from the moment the step could run, its upstream steps done, to
its STEP_START: a new process, a fork, a Celery round trip, or next to nothing), *work* (STEP_START to
STEP_SUCCESS, model loading included) and *other* (events between steps, the run's end, process exit;
negative where steps overlap). *Overhead* is wall time minus work. Ratios are against the baseline
measured in the same invocation. At the end the tables of every variant are compared with the
baseline's (paths aside).
A second figure: what importing the definitions costs a fresh process, and what it would cost if
torch, open_clip and faiss were imported at module level instead of inside the steps.

    python bench/scale.py
    python bench/scale.py --batches 2 --images 50 --only baseline,in_process,in_process_range
    python bench/scale.py --all-steps
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import yaml

from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.settings import Profile, ScaleSettings
from hotdog_dagster.local_cluster import LocalCluster, ServerUnavailable, missing_servers

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("baseline", "multiprocess", "in_process", "in_process_range", "celery", "celery_range")
#: The steps of the issue's 74 s measurement; ``--all-steps`` runs every per-batch step.
CHAIN = ("raw_images", "image_embeddings")


def tables_of(steps: tuple[str, ...] | None) -> list[str]:
    """The per-batch tables (asset keys) the given steps write; every per-batch table when ``steps`` is None."""
    from hotdog_dagster.definitions import ASSETS
    from hotdog_dagster.defs.shared import batches

    chosen = [a for a in ASSETS if a.partitions_def == batches and (steps is None or a.node_def.name in steps)]
    return [k.to_user_string() for a in chosen for k in a.keys]


#: The profile's scale.executor per variant (the baseline's executor comes from bench/scale_baseline.py).
EXECUTOR = {"baseline": "multiprocess", "multiprocess": "multiprocess", "in_process": "in_process"}
EXECUTOR.update({"in_process_range": "in_process", "celery": "celery", "celery_range": "celery"})


@dataclass
class RunTimes:
    wall: float
    run_start: float
    steps: dict[str, tuple[float, float]]  # step -> (step start, work)

    @property
    def rest(self) -> float:
        return self.wall - self.run_start - sum(s + w for s, w in self.steps.values())


@dataclass
class Result:
    variant: str
    runs: list[RunTimes] = field(default_factory=list)
    tables: dict[str, pa.Table] = field(default_factory=dict)
    note: str = ""

    @property
    def wall(self) -> float:
        return sum(r.wall for r in self.runs)

    def total(self, part: str) -> float:
        if part == "run_start":
            return sum(r.run_start for r in self.runs)
        if part == "rest":
            return sum(r.rest for r in self.runs)
        i = 0 if part == "step_start" else 1
        return sum(v[i] for r in self.runs for v in r.steps.values())

    def per_step(self) -> dict[str, tuple[float, float]]:
        """Step -> (mean step start, mean work) over the runs."""
        acc: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in self.runs:
            for step, v in r.steps.items():
                acc[step].append(v)
        return {s: (statistics.mean(a for a, _ in v), statistics.mean(b for _, b in v)) for s, v in acc.items()}


def run_times(instance: dg.DagsterInstance, run_id: str, launched: float, ended: float) -> RunTimes:
    """Split one run's wall time by its events (timestamps are the wall clock of the process that logged them).

    A step's start-up overhead runs from the moment it could run (the run started and every upstream step
    succeeded) to its STEP_START: a new process, a fork, a Celery round trip, or next to nothing.
    """
    run = instance.get_run_by_id(run_id)
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    upstream = {s.key: {h.step_key for i in s.inputs for h in i.upstream_output_handles} for s in plan.steps}
    started: dict[str, float] = {}
    done: dict[str, float] = {}
    run_start = launched
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.RUN_START:
            run_start = record.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.is_step_success or event.is_step_failure:
            done[event.step_key] = record.timestamp
    steps = {}
    for step, t0 in started.items():
        ready = max([run_start, *(done[u] for u in upstream.get(step, ()) if u in done)])
        steps[step] = (t0 - ready, done.get(step, t0) - t0)
    return RunTimes(wall=ended - launched, run_start=run_start - launched, steps=steps)


def _materialize(env: dict[str, str], target: list[str], select: list[str], partition: str) -> tuple[float, float]:
    flag = "--partition-range" if "..." in partition else "--partition"
    args = ["dagster", "asset", "materialize", *target, "--select", ",".join(select), flag, partition]
    t0 = time.time()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    t1 = time.time()
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise RuntimeError(f"{' '.join(args)} failed:\n{tail}")
    return t0, t1


def run_variant(
    variant: str, root: Path, select: list[str], batches: int, images: int, cluster: LocalCluster | None
) -> Result:
    """Plan the batches into a fresh data root, run them as ``variant`` says, and time every run."""
    if cluster is not None:
        env, home, dagster_home = cluster.env(), cluster.hotdog_home, cluster.dagster_home
        os.environ.update({k: v for k, v in env.items() if k.startswith("DAGSTER_PG_")})  # this process reads runs too
    else:
        home, dagster_home = root / variant / "hotdog_home", root / variant / "dagster_home"
        dagster_home.mkdir(parents=True)
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        profile = Profile(scale=ScaleSettings(executor=EXECUTOR[variant]))
        (root / variant / "profile.yaml").write_text(yaml.safe_dump(profile.model_dump(), sort_keys=False))
        env = {**os.environ, "HOTDOG_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
        env["HOTDOG_CONFIG"] = str(root / variant / "profile.yaml")
    plan = ["hotdog", "plan", "--source", "sketch", "--images", str(batches * images)]
    subprocess.run([*plan, "--partition-size", str(images)], env=env, check=True, capture_output=True)
    # the baseline swaps in Dagster's default executor; every other variant loads the project as deployed
    target = ["-f", str(REPO / "bench" / "scale_baseline.py")] if variant == "baseline" else []
    target = target or ["-m", "hotdog_dagster.definitions"]
    result = Result(variant)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        keys = instance.get_dynamic_partitions("batches")
        groups = [f"{keys[0]}...{keys[-1]}"] if variant.endswith("_range") else keys
        for partition in groups:
            launched, ended = _materialize(env, target, select, partition)
            run = instance.get_runs(limit=1)[0]
            result.runs.append(run_times(instance, run.run_id, launched, ended))
    store = Store(home)
    result.tables = {t: normalised(store, t) for t in select}
    return result


def normalised(store: Store, table: str) -> pa.Table:
    """The table sorted by id, with the data root written as ``<home>`` so two roots compare equal."""
    t = store.read_table(table)
    if t is None:
        return pa.table({})
    root = str(store.root)
    cols = {}
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_string(col.type):
            col = pa.array([None if v is None else v.replace(root, "<home>") for v in col.to_pylist()], pa.string())
        cols[name] = col
    t = pa.table(cols)
    return t.sort_by([("id", "ascending")]) if "id" in t.column_names else t


def compare(a: pa.Table, b: pa.Table) -> str:
    """'identical', or how they differ (float columns: the largest difference)."""
    if a.equals(b):
        return "identical"
    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return f"differ in shape ({a.num_rows} vs {b.num_rows} rows)"
    worst, others = 0.0, []
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        if x.equals(y):
            continue
        try:
            dx = np.asarray(x.to_pylist(), dtype=np.float64)
            dy = np.asarray(y.to_pylist(), dtype=np.float64)
            worst = max(worst, float(np.nanmax(np.abs(dx - dy))))
        except (TypeError, ValueError):
            others.append(name)
    return f"differ in {', '.join(others)}" if others else f"floats within {worst:.2e}"


def import_seconds(code: str, rounds: int = 3) -> float:
    """Median wall time of a fresh ``python -c code``."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def report(results: list[Result], imports: dict[str, float]) -> None:
    base = results[0]
    print(
        f"\n{'variant':<17}{'runs':>5}{'wall s':>9}{'run start':>11}{'step start':>12}{'work':>9}{'other':>8}"
        f"{'wall vs baseline':>18}{'overhead vs baseline':>22}"
    )
    base_over = base.wall - base.total("work")
    for r in results:
        over = r.wall - r.total("work")
        print(
            f"{r.variant:<17}{len(r.runs):>5}{r.wall:>9.1f}{r.total('run_start'):>11.1f}{r.total('step_start'):>12.1f}"
            f"{r.total('work'):>9.1f}{r.total('rest'):>8.1f}{base.wall / r.wall:>17.2f}x{base_over / over:>21.2f}x"
        )
    print("\nper step, mean over runs: step start (overhead) / work, seconds")
    for r in results:
        steps = ", ".join(f"{s} {a:.2f}/{w:.2f}" for s, (a, w) in sorted(r.per_step().items()))
        print(f"  {r.variant:<17} run start {r.total('run_start') / len(r.runs):.2f}; {steps}")
    print("\ntables against the baseline's:")
    for r in results[1:]:
        verdicts = {t: compare(base.tables[t], r.tables.get(t, pa.table({}))) for t in base.tables}
        print(f"  {r.variant:<17} " + "; ".join(f"{t}: {v}" for t, v in verdicts.items()))
    print("\nimporting in a fresh process (median of 3), seconds:")
    for what, s in imports.items():
        print(f"  {what:<62} {s:6.2f}")
    for r in results:
        if r.note:
            print(f"{r.variant}: {r.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--images", type=int, default=100, help="images per batch")
    parser.add_argument("--all-steps", action="store_true", help="every per-batch step, not only ingest + embed")
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants (baseline first)")
    args = parser.parse_args()
    variants = [v for v in VARIANTS if v in args.only.split(",")]
    select = tables_of(None if args.all_steps else CHAIN)
    from hotdog_dagster.dbt_project import prepare_dbt

    prepare_dbt()
    print(
        f"{args.batches} batches x {args.images} sketches; steps for {', '.join(select)}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="hotdog-scale-") as tmp:
        root = Path(tmp)
        for v in [v for v in variants if not v.startswith("celery")]:
            print(f"running {v} ...", flush=True)
            results.append(run_variant(v, root, select, args.batches, args.images, None))
            print(f"  {v}: {results[-1].wall:.1f} s, work {results[-1].total('work'):.1f} s", flush=True)
        celery = [v for v in variants if v.startswith("celery")]
        if celery and missing_servers():
            print(f"celery: not measured ({', '.join(missing_servers())} missing: run scripts/setup.sh)")
        elif celery:
            for v in celery:
                print(f"running {v} (starting PostgreSQL, Redis and two workers first) ...", flush=True)
                cluster = LocalCluster(root / v, Profile(), REPO / "deploy" / "celery" / "dagster.yaml")
                try:
                    with cluster:
                        cluster.start_worker("gpu", ["gpu"])
                        cluster.start_worker("cpu", ["dagster"])
                        results.append(run_variant(v, root, select, args.batches, args.images, cluster))
                    print(f"  {v}: {results[-1].wall:.1f} s, work {results[-1].total('work'):.1f} s", flush=True)
                except ServerUnavailable as exc:
                    print(f"{v}: not measured ({exc})")
        imports = {
            "hotdog_dagster.definitions (what a step process imports)": import_seconds(
                "import hotdog_dagster.definitions"
            ),
            "torch, open_clip, faiss, then the definitions (eager imports)": import_seconds(
                "import torch, open_clip, faiss, hotdog_dagster.definitions"
            ),
            "dagster alone": import_seconds("import dagster"),
        }
    report(results, imports)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
