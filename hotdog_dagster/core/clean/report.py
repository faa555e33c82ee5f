"""What a cleaning run reports: counts per reason code, the largest groups, contact-sheet paths."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from hotdog_dagster.core.clean import stored
from hotdog_dagster.core.io.store import Store


def summarize(groups: pa.Table, top: int = 5) -> dict[str, Any]:
    """Counts per reason code and the largest groups of a ``duplicate_groups`` table: plain values."""
    df = groups.select(
        ["id", "is_blank", "blank_code", "duplicate_group", "group_size", "duplicate_of", "dup_code", "keep"]
    ).to_pandas()
    grouped = df.dropna(subset=["duplicate_group"])
    largest = (
        grouped.groupby("duplicate_group")
        .agg(size=("id", "size"), representative=("duplicate_of", "first"))
        .sort_index()
        .head(top)
    )
    return {
        "images": int(len(df)),
        "kept": int(df["keep"].sum()),
        "blank": int(df["is_blank"].sum()),
        "blank_by_reason": {str(k): int(v) for k, v in df["blank_code"].value_counts().sort_index().items()},
        "duplicates": int(df["dup_code"].notna().sum()),
        "duplicates_by_reason": {str(k): int(v) for k, v in df["dup_code"].value_counts().sort_index().items()},
        "groups": int(grouped["duplicate_group"].nunique()),
        "largest_groups": [
            {"group": int(g), "size": int(r["size"]), "representative": str(r["representative"])}
            for g, r in largest.iterrows()
        ],
    }


def sample_paths(
    store: Store, groups: pa.Table, n_groups: int = 4, per_group: int = 6, blanks: int = 8
) -> dict[str, list[str]]:
    """Image paths for contact sheets: the largest groups (representative first) and some blank frames.

    Blanks are the first by id: a deterministic sample that is as good as random (ids are hashes).
    """
    images = stored.read_columns(store, "images", ["id", "path"])
    if images is None:
        return {"duplicates": [], "blanks": []}
    paths = dict(zip(images.column("id").to_pylist(), images.column("path").to_pylist(), strict=True))
    df = groups.select(["id", "is_blank", "duplicate_group", "duplicate_of"]).to_pandas()
    dups = df.dropna(subset=["duplicate_group"])
    dups = dups[dups["duplicate_group"] < n_groups].assign(is_rep=lambda d: d["id"] == d["duplicate_of"])
    dups = dups.sort_values(["duplicate_group", "is_rep", "id"], ascending=[True, False, True])
    dup_ids = dups.groupby("duplicate_group").head(per_group)["id"].tolist()
    blank_ids = df.loc[df["is_blank"], "id"].sort_values().head(blanks).tolist()
    return {
        "duplicates": [paths[i] for i in dup_ids if i in paths],
        "blanks": [paths[i] for i in blank_ids if i in paths],
    }


def batch_sample_paths(
    store: Store, flags: pa.Table, edges: pa.Table, pairs: int = 8, blanks: int = 8
) -> dict[str, list[str]]:
    """Contact-sheet paths for one batch's cleaning: its first blank frames and its first edges as
    pairs side by side (the earlier image of a pair may sit in another batch).

    Lets a person judge a batch's flags from its own materialisation, before the whole set is grouped.
    """
    ids, is_blank = flags.column("id").to_pylist(), flags.column("is_blank").to_pylist()
    blank_ids = sorted(i for i, b in zip(ids, is_blank, strict=True) if b)
    pair_rows = edges.select(["a", "b"]).sort_by([("a", "ascending"), ("b", "ascending")]).slice(0, pairs).to_pylist()
    wanted = set(blank_ids[:blanks]) | {r[k] for r in pair_rows for k in ("a", "b")}
    if not wanted:
        return {"blanks": [], "pairs": []}
    images = stored.read_columns(store, "images", ["id", "path"])
    paths = {} if images is None else dict(zip(*(images.column(c).to_pylist() for c in ("id", "path")), strict=True))
    paths = {k: v for k, v in paths.items() if k in wanted}
    return {
        "blanks": [paths[i] for i in blank_ids[:blanks] if i in paths],
        "pairs": [paths[r[k]] for r in pair_rows if r["a"] in paths and r["b"] in paths for k in ("a", "b")],
    }
