"""Named walk definitions saved beside the data, so a walk partition re-materialises by its key alone.

A dynamic partition key is only a name (as with batches): ``walks/<name>.json`` under the data root
says what the name means, written before the partition is added, so the UI, a backfill or
``dagster asset materialize`` rebuild the same walk from the key.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from hotdog_dagster.core.io.store import Store, atomic_path, check_partition_key
from hotdog_dagster.core.settings import SettingsError, WalkSettings, describe_errors


def walks_dir(store: Store) -> Path:
    return store.root / "walks"


def media_dir(store: Store, name: str) -> Path:
    """Where a walk's GIF, MP4, contact sheet and map go."""
    return store.media_dir / "walks" / check_partition_key(name)


def save_walk(store: Store, settings: WalkSettings) -> Path:
    """Write (replace) the definition of ``settings.name``."""
    path = walks_dir(store) / f"{settings.name}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(settings.values(), indent=1))
    return path


def load_walk(store: Store, name: str) -> WalkSettings:
    """The saved definition of walk ``name``; a missing or invalid one says what to do."""
    path = walks_dir(store) / f"{check_partition_key(name)}.json"
    if not path.exists():
        known = ", ".join(list_walks(store)) or "none yet"
        raise FileNotFoundError(f"no walk named {name!r} under {walks_dir(store)} (known: {known}); define it first")
    try:
        return WalkSettings.model_validate(json.loads(path.read_text()))
    except (ValidationError, json.JSONDecodeError) as exc:
        detail = describe_errors(exc, str(path)) if isinstance(exc, ValidationError) else str(exc)
        raise SettingsError(f"walk definition {path} is invalid: {detail}") from None


def list_walks(store: Store) -> list[str]:
    d = walks_dir(store)
    return sorted(p.stem for p in d.glob("*.json")) if d.exists() else []
