"""A small real HOTDOG_HOME for the search, hybrid and serve tests, built with the core functions.

Two batches: a folder of sketch drawings with caption sidecars (files outside the home, as a folder
ingest leaves them), an exact copy among them, and a few images whose captions hold rare words
for the keyword index; and a drawn sketch batch (files copied under ``images/``). Each batch is
ingested, embedded with the shipped sketch model and scored against the default labels; then
the FAISS index, the keyword index and the catalog's views are built, as the pipeline does.

``duplicate_groups`` is written in its simplest form (one group per content hash, the first id
kept), so ``search_items`` carries the ``keep`` flag the engine filters on; the cleaning stage's own
near-duplicate logic is tested elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from hotdog_dagster.core.io import catalog
from hotdog_dagster.core.io.batches import list_source_files, plan_folder, plan_sketch
from hotdog_dagster.core.io.ingest import ingest_batch
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.labels.scoring import LabelSet, score_partition
from hotdog_dagster.core.model.embedding import embed_partition
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.names import SKETCH_MODEL
from hotdog_dagster.core.model.sketch import draw
from hotdog_dagster.core.search import index, keyword
from hotdog_dagster.core.settings import LabelSettings

#: Captions with words no drawn caption uses, so keyword search has exact answers.
RARE_CAPTIONS = {
    "rare_zebra.png": "a zebra striped umbrella",
    "rare_kiwi.png": "kiwi kiwi kiwi on a plate",
    "rare_both.png": "a zebra eating a kiwi",
}


def build_search_home(root: Path) -> Store:
    folder = root / "pics"
    folder.mkdir(parents=True)
    for i in range(30):
        s = draw(11, i, size=64)
        s.image.save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(s.caption)
    (folder / "copy_a.png").write_bytes((folder / "img00.png").read_bytes())
    for n, (name, caption) in enumerate(RARE_CAPTIONS.items()):
        draw(12, n, size=64).image.save(folder / name)
        (folder / name).with_suffix(".txt").write_text(caption)
    store = Store(root / "home")
    specs = plan_folder(folder, list_source_files(folder), 20) + plan_sketch(
        seed=13, images=20, partition_size=20, size=64
    )
    encoder = ClipEncoder(SKETCH_MODEL)
    settings = LabelSettings()
    label_set = LabelSet.build(settings.labels, settings.templates)
    for spec in specs:
        ingest_batch(store, spec, workers=2)
        embed_partition(store, spec.key, encoder, batch_size=32, num_workers=0)
        scored = score_partition(
            store, spec.key, encoder.encode_texts, encoder.logit_scale, label_set, str(encoder.spec)
        )
        store.write_table("label_scores", scored.table, spec.key)
        store.write_table("label_set", scored.label_set, spec.key)
    images = store.read_table("images", columns=["id", "content_hash"]).to_pylist()
    first: dict[str, str] = {}
    for row in images:
        first.setdefault(row["content_hash"], row["id"])
    store.write_table(
        "duplicate_groups",
        pa.table(
            {
                "id": [r["id"] for r in images],
                "group_id": [first[r["content_hash"]] for r in images],
                "keep": [first[r["content_hash"]] == r["id"] for r in images],
            }
        ),
    )
    index.update_from_store(store)
    keyword.update_from_store(store)
    catalog.refresh(store)
    return store


_BUILT: dict[str, Store] = {}


def shared_search_home(factory: object) -> Store:
    """One home per test session, however many modules ask (``factory`` is pytest's tmp_path_factory)."""
    if "home" not in _BUILT:
        _BUILT["home"] = build_search_home(factory.mktemp("search_home"))  # type: ignore[attr-defined]
    return _BUILT["home"]
