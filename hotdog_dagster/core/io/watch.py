"""Find files that arrived in a watched folder since the last batch, and cut them into batches.

The batch manifests already on disk are the record of what was taken, so the sensor needs no
fragile cursor of its own: a file is new when no manifest for that folder lists it. Files modified
in the last few seconds are left for the next tick, since they may still be being copied in.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from hotdog_dagster.core.io.batches import BatchSpec, folder_prefix, list_batches, list_source_files, plan_folder
from hotdog_dagster.core.io.store import Store


def folder_batches(store: Store, root: Path, batches: list[BatchSpec] | None = None) -> list[BatchSpec]:
    """The batches already planned from ``root`` (a folder or zip), in key order."""
    root = Path(root).resolve()
    batches = list_batches(store) if batches is None else batches
    return [b for b in batches if b.source == "folder" and Path(b.root) == root]


def plan_new_files(
    store: Store, root: str | Path, chunk: int, settle_seconds: float = 10.0, now: float | None = None
) -> list[BatchSpec]:
    """Batches for the files under ``root`` that no existing batch of ``root`` lists yet."""
    root = Path(root).resolve()
    now = time.time() if now is None else now
    batches = list_batches(store)
    known = {f for b in folder_batches(store, root, batches) for f in b.files}
    fresh = []
    for name in list_source_files(root):
        if name in known:
            continue
        if root.is_dir():
            try:
                if now - (root / name).stat().st_mtime < settle_seconds:
                    continue
            except OSError:
                pass  # vanished or unreadable: ingest records the reason
        fresh.append(name)
    # Number after every batch with this prefix, not just this root's: ``photos/`` and ``photos.zip``
    # (or two folders named ``photos``) share a prefix, and must not overwrite each other's manifests.
    key_re = re.compile(rf"^{re.escape(folder_prefix(root))}-(\d+)$")
    used = [int(m.group(1)) for b in batches if (m := key_re.match(b.key))]
    return plan_folder(root, fresh, chunk, first_chunk=max(used, default=-1) + 1) if fresh else []
