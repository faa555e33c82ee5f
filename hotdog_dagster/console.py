"""What ``hotdog run`` shows a person: a progress bar per stage, a log file for the rest, one summary.

Dagster's event log and dbt's output are written to a log file (its path is printed) by pointing
the process's stdout and stderr, and so every child process's, at it while the jobs run; the bars
are drawn on a copy of the terminal taken before.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from hotdog_dagster.pipeline import RunSummary, StepDone

#: Per-batch steps -> (bar, the metadata count it advances by).
PER_BATCH_BARS = {
    "raw_images": ("ingest", "files_in"),
    "image_embeddings": ("embed", "vectors"),
    "image_quality": ("clean", "images"),
    "label_scores": ("labels", "images"),
}


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[IO[str]]:
    """Send fds 1 and 2 (and children's) to ``log``; yield a stream on the terminal's original stdout."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(log, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


class StageBars:
    """One bar per stage with counts and rates, advanced as each step of each run finishes."""

    def __init__(self, console: Console, images: int, batches: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.started = time.perf_counter()
        self.tasks: dict[str, TaskID] = {
            name: self.progress.add_task(name, total=images, rate="") for name, _ in PER_BATCH_BARS.values()
        }
        self.tasks["whole set"] = self.progress.add_task("whole set", total=None, rate="")
        self.busy: dict[str, float] = {}
        self.failed: list[str] = []

    def __enter__(self) -> StageBars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def step(self, done: StepDone) -> None:
        if not done.ok:
            self.failed.append(done.step)
        if done.job == "whole_set":
            self.progress.advance(self.tasks["whole set"], 1)
            return
        bar, key = PER_BATCH_BARS.get(done.step.split(".")[0], (None, None))
        if bar is None:
            return
        n = int(done.metadata.get(key, 0) or 0)
        self.busy[bar] = self.busy.get(bar, 0.0) + done.seconds
        task = self.tasks[bar]
        self.progress.advance(task, n)
        completed = self.progress.tasks[task].completed
        rate = completed / self.busy[bar] if self.busy[bar] > 0 else 0.0
        self.progress.update(task, rate=f"{rate:,.0f}/s")


def summary_table(summary: RunSummary, log: Path | None) -> Table:
    """Rows per table, and where things are."""
    table = Table(title="hotdog run" + (" — FAILED" if not summary.ok else ""), show_lines=False)
    table.add_column("table / view")
    table.add_column("rows", justify="right")
    for name, rows in summary.tables.items():
        table.add_row(name, f"{rows:,}")
    return table


def where_lines(summary: RunSummary, log: Path | None) -> list[str]:
    lines = [
        f"data in {summary.home}",
        f"runs in {summary.dagster_home} (dagster dev with this DAGSTER_HOME shows them)",
    ]
    return lines + ([f"log: {log}"] if log else [])


def terminal_console(stream: IO[str] | None = None) -> Console:
    return Console(file=stream or sys.stdout, highlight=False)
