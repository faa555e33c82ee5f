"""Faults injected, runs recovered, rows lost: the figures of the reliability suite (issue 16).

Everything runs against this checkout (``python -m hotdog_dagster.cli``) on a folder of drawn
sketches (60 images, 3 batches) with the shipped model, each run in its own process group:

  kill      SIGKILL at a random fault point of each stage (ingest, embed, clean, labels, index,
            catalog, dbt, walk; the point drawn with --seed), the whole group (dbt too), then
            `hotdog run` again
  delay     SIGKILL after a random delay (0 .. the clean run's time), then `hotdog run` again
  corrupt   a torn Parquet partition, an overwritten FAISS index, a garbage batch manifest, a
            catalog.duckdb with a broken header, each in a copy of the clean home: the next
            `hotdog run` must fail naming the file (or heal it by itself), `hotdog run --rerun`
            must heal it
  enospc    a full disk (OSError ENOSPC) at every write of a batch in turn, in process: the
            last good version must stay, and a rerun must complete
  hostile   a folder of hostile files (bombs, 0x0, 100000x1, truncated, symlink loops, a FIFO,
            permissions, names with newlines and non-UTF-8 bytes, a file over the cap) and a
            zip bomb, ingested: every file must be an image or a rejected row with a reason code

After each recovery every table, the FAISS index (id -> vector), the catalog's dbt tables and the
image files are compared with the clean run: rows lost and rows doubled must both be 0.

    python bench/faults.py                      # everything (about 25 minutes on 2 busy cores)
    python bench/faults.py --only kill,hostile --seed 7
"""

from __future__ import annotations

import argparse
import errno
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

from faultkit import (  # noqa: E402
    CAP_FOR_HOSTILE,
    STAGES,
    build_reference,
    hostile_folder,
    hostile_zip,
    hotdog,
    kill_group,
    snapshot,
    start,
    unreadable_files,
)

KINDS = ("kill", "delay", "corrupt", "enospc", "hostile")


def row_damage(got: dict, want: dict) -> tuple[int, int]:
    """(rows lost, rows doubled or extra) of a recovered home's snapshot against the clean one's."""
    lost = extra = 0
    for key in sorted(set(want) | set(got)):
        a, b = want.get(key), got.get(key)
        if key.startswith("table ") or key.startswith("dbt ") or key == "index":
            rows_a = _rows(a)
            rows_b = _rows(b)
            ca, cb = Counter(rows_a), Counter(rows_b)
            lost += sum((ca - cb).values())
            extra += sum((cb - ca).values())
        elif key == "image files":
            lost += len(set(a or {}) - set(b or {}))
            extra += len(set(b or {}) - set(a or {}))
    return lost, extra


def _rows(value: object) -> list:
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{k}\0{r}" for k, rows in value.items() for r in rows]
    return [json.dumps(r, default=str) if not isinstance(r, str) else r for r in value]


class Tally:
    def __init__(self) -> None:
        self.injected: Counter[str] = Counter()
        self.recovered: Counter[str] = Counter()
        self.lost = 0
        self.extra = 0
        self.visible_partial = 0
        self.failures: list[str] = []
        self.hostile_tried = 0
        self.hostile_recorded = 0
        self.hostile_codes: Counter[str] = Counter()

    def check(self, kind: str, home: Path, want: dict, ok: bool, what: str) -> None:
        self.injected[kind] += 1
        if not ok:
            self.failures.append(f"{kind}: {what}: the rerun failed")
            return
        lost, extra = row_damage(snapshot(home), want)
        self.lost += lost
        self.extra += extra
        if lost or extra:
            self.failures.append(f"{kind}: {what}: {lost} rows lost, {extra} doubled or extra")
        else:
            self.recovered[kind] += 1


def kill_faults(ref, tally: Tally, rng: np.random.Generator, work: Path, per_stage: int) -> None:  # noqa: ANN001
    from test_rel_kill import kill_point

    for stage in STAGES:
        for i in range(per_stage):
            k = kill_point(stage, ref, rng)
            home = work / f"kill-{stage}-{i}"
            done = hotdog(ref.args(), home, HOTDOG_FAULT_KILL_AT=f"{stage}:{k}", HOTDOG_FAULT_KILL_GROUP="1")
            if not done.killed:
                tally.failures.append(f"kill: {stage}:{k} was never reached")
                continue
            partial = unreadable_files(home)
            tally.visible_partial += len(partial)
            rerun = hotdog(ref.args(), home)
            tally.check("kill", home, ref.snap, rerun.returncode == 0 and not partial, f"{stage}:{k}")
            print(f"  kill at {stage}:{k}: rerun rc {rerun.returncode} in {rerun.seconds:.0f} s", flush=True)
            shutil.rmtree(home, ignore_errors=True)


def delay_faults(ref, tally: Tally, rng: np.random.Generator, work: Path, count: int) -> None:  # noqa: ANN001
    for i in range(count):
        delay = float(rng.uniform(0, ref.seconds))
        home = work / f"delay-{i}"
        proc = start(ref.args(), home)
        time.sleep(delay)
        kill_group(proc)
        proc.communicate()
        partial = unreadable_files(home)
        tally.visible_partial += len(partial)
        rerun = hotdog(ref.args(), home)
        tally.check("delay", home, ref.snap, rerun.returncode == 0 and not partial, f"after {delay:.1f} s")
        print(f"  killed after {delay:.1f} s: rerun rc {rerun.returncode}", flush=True)
        shutil.rmtree(home, ignore_errors=True)


def corrupt_faults(ref, tally: Tally, work: Path) -> None:  # noqa: ANN001
    def torn_parquet(home: Path) -> Path:
        path = sorted((home / "tables" / "embeddings").glob("*.parquet"))[1]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path

    def index_file(home: Path) -> Path:
        path = home / "index" / "images.faiss"
        path.write_bytes(b"garbage" * 100)
        return path

    def manifest(home: Path) -> Path:
        path = sorted((home / "batches").glob("*.json"))[0]
        path.write_bytes(b"\x00\xff{")
        return path

    def catalog(home: Path) -> Path:
        path = home / "catalog.duckdb"
        with open(path, "r+b") as fh:
            fh.write(b"\xde\xad\xbe\xef" * 64)
        return path

    for name, damage in (
        ("parquet", torn_parquet),
        ("index", index_file),
        ("manifest", manifest),
        ("catalog", catalog),
    ):
        home = work / f"corrupt-{name}"
        shutil.copytree(ref.home, home, symlinks=True, ignore=shutil.ignore_patterns("dagster"))  # a fresh instance
        path = damage(home)
        first = hotdog(ref.args(), home)
        said = first.stdout + first.stderr  # --json puts the failures in the summary on stdout
        named = first.returncode == 0 or (str(path) in said and "re-materialise" in said)
        if not named:
            tally.failures.append(f"corrupt {name}: the rerun failed without naming {path}: {said[-800:]}")
        healed = first if first.returncode == 0 else hotdog([*ref.args(), "--rerun"], home)
        tally.check("corrupt", home, ref.snap, healed.returncode == 0 and named, name)
        how = "healed by the next run" if first.returncode == 0 else "named, healed by --rerun"
        print(f"  corrupt {name}: {how} (rc {healed.returncode})", flush=True)
        shutil.rmtree(home, ignore_errors=True)


def enospc_faults(tally: Tally, work: Path) -> None:
    """ENOSPC at each write of one batch in turn (in process): the old file stays, the retry completes."""
    import pyarrow.parquet as pq

    from hotdog_dagster.core.io import store as store_module
    from hotdog_dagster.core.io.batches import plan_sketch
    from hotdog_dagster.core.io.ingest import ingest_batch
    from hotdog_dagster.core.io.store import Store

    spec = plan_sketch(seed=3, images=20, partition_size=20, size=64)[0]
    home = work / "enospc"
    store = Store(home)
    ingest_batch(store, spec, workers=2)
    tables = ("images", "thumbnails", "rejected")
    before = {t: store.table_path(t, spec.key).read_bytes() for t in tables}
    rows = {t: pq.read_table(store.table_path(t, spec.key)) for t in tables}
    real = store_module.pq.write_table
    for n in range(len(tables)):

        def full(data, where, _n=n, _calls=[0], **kw):  # noqa: ANN001, ANN202, B006 - a counter per fault
            _calls[0] += 1
            if _calls[0] - 1 == _n:
                with open(where, "wb") as fh:
                    fh.write(b"PAR1 partial")
                raise OSError(errno.ENOSPC, "No space left on device", str(where))
            return real(data, where, **kw)

        store_module.pq.write_table = full
        try:
            ingest_batch(store, spec, workers=2)
            refused = False
        except OSError as exc:
            refused = exc.errno == errno.ENOSPC
        finally:
            store_module.pq.write_table = real
        tally.injected["enospc"] += 1
        # the write that hit the full disk left its file as it was (earlier ones had replaced theirs whole)
        kept = store.table_path(tables[n], spec.key).read_bytes() == before[tables[n]]
        leftovers = list(home.rglob("*.tmp")) + list(home.rglob("*.staging"))
        ingest_batch(store, spec, workers=2)  # the retry
        again = all(pq.read_table(store.table_path(t, spec.key)).equals(rows[t]) for t in tables)
        if refused and kept and not leftovers and again:
            tally.recovered["enospc"] += 1
        else:
            tally.failures.append(f"enospc at write {n + 1}: refused={refused} kept={kept} leftovers={leftovers}")
    print(f"  enospc: {tally.recovered['enospc']}/{tally.injected['enospc']} writes kept the last good version")


def hostile_faults(tally: Tally, work: Path) -> None:
    from hotdog_dagster.core.io.batches import list_source_files, plan_folder
    from hotdog_dagster.core.io.ingest import display_name, ingest_batch
    from hotdog_dagster.core.io.store import Store

    folder = hostile_folder(work / "hostile", max_file_bytes=CAP_FOR_HOSTILE)
    archive = work / "bomb.zip"
    zipped = hostile_zip(archive, CAP_FOR_HOSTILE)
    for note in folder.notes:
        print(f"  note: {note}")
    for root, expected in ((folder.root, folder.expected), (archive, zipped)):
        files = list_source_files(root)
        (spec,) = plan_folder(root, files, partition_size=len(files) + 1)
        result = ingest_batch(Store(work / "hostile-home"), spec, workers=2, max_file_bytes=CAP_FOR_HOSTILE)
        got = {r["source_name"]: r["reason_code"] for r in result.rejected.to_pylist()}
        got.update({r["source_name"]: "image" for r in result.images.to_pylist()})
        want = {display_name(k): v for k, v in expected.items()}
        tally.hostile_tried += len(expected)
        tally.hostile_recorded += sum(got.get(k) == v for k, v in want.items())
        tally.hostile_codes.update(got.values())
        for k, v in want.items():
            if got.get(k) != v:
                tally.failures.append(f"hostile {k!r}: expected {v}, got {got.get(k)}")
    tally.injected["hostile"] = tally.hostile_tried
    tally.recovered["hostile"] = tally.hostile_recorded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None, help="fault seed (default: random, printed)")
    parser.add_argument("--only", default=",".join(KINDS), help=f"comma-separated kinds of {', '.join(KINDS)}")
    parser.add_argument("--kills-per-stage", type=int, default=1)
    parser.add_argument("--delays", type=int, default=2, help="runs killed after a random delay")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = np.random.default_rng(seed)
    print(f"fault seed {seed} (replay with --seed {seed})", flush=True)
    work = Path(tempfile.mkdtemp(prefix="hotdog-faults-"))
    tally = Tally()
    t0 = time.monotonic()
    try:
        ref = None
        if {"kill", "delay", "corrupt"} & set(kinds):
            ref = build_reference(work)
            print(f"clean reference run: {ref.seconds:.0f} s, {len(ref.trace)} fault points", flush=True)
        if "kill" in kinds:
            kill_faults(ref, tally, rng, work, args.kills_per_stage)
        if "delay" in kinds:
            delay_faults(ref, tally, rng, work, args.delays)
        if "corrupt" in kinds:
            corrupt_faults(ref, tally, work)
        if "enospc" in kinds:
            enospc_faults(tally, work)
        if "hostile" in kinds:
            hostile_faults(tally, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - t0
    print()
    print(f"{'fault kind':<10} {'injected':>9} {'recovered':>10}")
    for kind in kinds:
        print(f"{kind:<10} {tally.injected[kind]:>9} {tally.recovered[kind]:>10}")
    runs = sum(tally.injected[k] for k in ("kill", "delay", "corrupt"))
    print(f"runs recovered: {sum(tally.recovered[k] for k in ('kill', 'delay', 'corrupt'))} of {runs}")
    print(f"rows lost: {tally.lost}   rows doubled or extra: {tally.extra}   partial files seen by readers: "
          f"{tally.visible_partial}")  # fmt: skip
    print(f"hostile files tried: {tally.hostile_tried}, recorded as expected: {tally.hostile_recorded} "
          f"(by outcome: {dict(sorted(tally.hostile_codes.items()))})")  # fmt: skip
    print(f"seed {seed}, {seconds / 60:.1f} minutes")
    for failure in tally.failures:
        print(f"FAILED {failure}")
    ok = not tally.failures and tally.lost == 0 and tally.extra == 0 and tally.visible_partial == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
