"""Keyword (BM25) and hybrid ranking, and score modifiers, on a real home built by the core functions."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
from search_home import RARE_CAPTIONS, shared_search_home

from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.search import index, keyword
from hotdog_dagster.core.search.engine import (
    HYBRID_WINDOW,
    Modifier,
    Part,
    Query,
    QueryError,
    Searcher,
    parse_modifier,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return shared_search_home(tmp_path_factory)


@pytest.fixture(scope="module")
def searcher(home: Store) -> Searcher:
    with Searcher.open(home) as s:
        yield s


def names(hits: list) -> list[str]:
    return [h.columns["source_name"] for h in hits]


# ----------------------------------------------------------------------------------------------
# BM25 itself
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Two HOT dogs!", ["two", "hot", "dog"]),
        ("fries, cities & buses", ["fry", "city", "buse"]),
        ("glass bus shoes toes boys", ["glass", "bus", "shoes", "toes", "boy"]),
        ("ＦＵＬＬ width", ["full", "width"]),  # NFKC
        ("Straße STRASSE", ["strasse", "strasse"]),  # case folding
        ("img_01.png", ["img_01", "png"]),
        ("", []),
    ],
)
def test_tokenize_lowercases_splits_and_stems_plurals(text: str, tokens: list[str]) -> None:
    assert keyword.tokenize(text) == tokens


def _reference_bm25(docs: list[str | None], query: str, k1: float = 1.2, b: float = 0.75) -> list[float]:
    """Lucene's BM25, term by term with plain Python, for the index to agree with."""
    toks = [keyword.tokenize(d) if d else [] for d in docs]
    n = len(docs)
    lengths = [len(t) for t in toks]
    avg = sum(x for x in lengths if x) / max(1, sum(1 for x in lengths if x))
    scores = []
    for words in toks:
        tf = Counter(words)
        total = 0.0
        for term in keyword.tokenize(query):
            df = sum(1 for t in toks if term in t)
            if not tf[term]:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            total += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(words) / avg))
        scores.append(total)
    return scores


DOCS = ["a red circle", "two hot dogs", None, "a hot dog in a bun, hot", "", "one hotdog", "dog dog dog"]


@pytest.mark.parametrize("query", ["hot dog", "a", "dogs in a bun", "circle circle", "zebra", "hot hot"])
def test_scores_are_lucene_bm25(query: str) -> None:
    ix = keyword.build([str(i) for i in range(len(DOCS))], DOCS)
    np.testing.assert_allclose(ix.scores([(query, 1.0)]), _reference_bm25(DOCS, query), rtol=1e-5, atol=1e-6)


def test_part_weights_scale_and_subtract() -> None:
    ix = keyword.build([str(i) for i in range(len(DOCS))], DOCS)
    hot, bun = ix.scores([("hot", 1.0)]), ix.scores([("bun", 1.0)])
    np.testing.assert_allclose(ix.scores([("hot", 2.0), ("bun", -0.5)]), 2 * hot - 0.5 * bun, rtol=1e-6)
    assert not ix.scores([("nothing known", 1.0)]).any()


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    ids = ["a", "ü-id", "c", "d", "e", "f", "g"]
    ix = keyword.build(ids, DOCS)
    store = Store(tmp_path / "home")
    keyword.save(ix, keyword.path_of(store))
    back = keyword.load(store)
    assert back.ids.tolist() == ids and back.vocabulary == ix.vocabulary and back.meta == ix.meta
    np.testing.assert_array_equal(back.weights.toarray(), ix.weights.toarray())
    assert [p.name for p in store.index_dir.iterdir()] == [keyword.FILE_NAME]  # no temporary left behind


def test_empty_corpus_and_no_text_columns() -> None:
    ix = keyword.build(["a", "b"], [None, ""])
    assert ix.weights.shape == (2, 0) and not ix.scores([("x", 1.0)]).any()
    assert keyword.document_texts(pa.table({"id": ["a"]})) == [None]
    table = pa.table({"id": ["a", "b"], "caption": ["x", None], "prompt": [None, "y z"]})
    assert keyword.document_texts(table) == ["x", "y z"]


def test_rebuilt_only_when_images_change(home: Store, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(home.root, root)
    store = Store(root)
    first = keyword.update_from_store(store)
    assert not first.rebuilt  # the copy keeps mtimes: same partitions, nothing to do
    again = keyword.update_from_store(store, rebuild=True)
    assert again.rebuilt and again.documents == first.documents
    part = store.partitions("images")[0]
    table = store.read_table("images", part)
    store.write_table("images", table.slice(0, 5), part)
    changed = keyword.update_from_store(store)
    assert changed.rebuilt and changed.documents == first.documents - (table.num_rows - 5)


def test_faiss_rebuild_keeps_the_keyword_index(home: Store, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(home.root, root)
    store = Store(root)
    before = keyword.path_of(store).read_bytes()
    index.update_from_store(store, rebuild=True)
    assert keyword.path_of(store).read_bytes() == before
    assert (store.index_dir / "images.faiss").exists()


def test_keyword_index_asset_and_check(home: Store, tmp_path: Path) -> None:
    from hotdog_dagster.defs.search import keyword_index, keyword_index_matches_images
    from hotdog_dagster.resources import StoreResource

    root = tmp_path / "copy"
    shutil.copytree(home.root, root)
    keyword.path_of(Store(root)).unlink()
    result = dg.materialize(
        [keyword_index, keyword_index_matches_images], resources={"store": StoreResource(home=str(root))}
    )
    assert result.success
    meta = result.asset_materializations_for_node("keyword_index")[0].metadata
    assert meta["rebuilt"].value is True and meta["documents"].value == home.read_table("images").num_rows
    (check,) = result.get_asset_check_evaluations()
    assert check.passed


# ----------------------------------------------------------------------------------------------
# Keyword mode
# ----------------------------------------------------------------------------------------------


def test_keyword_mode_finds_rare_words(searcher: Searcher) -> None:
    hits = searcher.search(Query(parts=(Part("text", "zebra"),), mode="keyword", limit=10))
    # shorter caption first: BM25's length normalisation
    assert names(hits) == ["rare_zebra.png", "rare_both.png"]
    assert hits[0].score > hits[1].score > 0
    kiwi = searcher.search(Query(parts=(Part("text", "kiwi"),), mode="keyword"))
    assert names(kiwi) == ["rare_kiwi.png", "rare_both.png"]  # three kiwis beat one


def test_keyword_scores_equal_the_index_scores(searcher: Searcher, home: Store) -> None:
    ix = keyword.load(home)
    expected = dict(zip(ix.ids.tolist(), ix.scores([("hot dogs", 1.0), ("bun", 0.5)]), strict=True))
    hits = searcher.search(
        Query(
            parts=(Part("text", "hot dogs"), Part("text", "bun", 0.5)), mode="keyword", limit=100, include_flagged=True
        )
    )
    assert hits and all(h.score == pytest.approx(float(expected[h.id]), rel=1e-5) for h in hits)
    assert {h.id for h in hits} == {i for i, s in expected.items() if s > 0}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_keyword_negative_weights_push_away(searcher: Searcher) -> None:
    hits = searcher.search(Query(parts=(Part("text", "kiwi"), Part("text", "zebra", -1.0)), mode="keyword"))
    assert names(hits) == ["rare_kiwi.png"]


def test_keyword_mode_respects_filters_and_flags(searcher: Searcher) -> None:
    hits = searcher.search(Query(parts=(Part("text", "hot dog"),), mode="keyword", filter="source:sketch", limit=100))
    assert hits and all(h.columns["source"] == "sketch" for h in hits)
    flagged = searcher.search(Query(parts=(Part("text", "hot dog"),), mode="keyword", limit=100, include_flagged=True))
    default = searcher.search(Query(parts=(Part("text", "hot dog"),), mode="keyword", limit=100))
    assert all(h.columns["keep"] for h in default)
    assert {h.id for h in default} < {h.id for h in flagged}


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ((Part("image", "x.png"), Part("text", "zebra")), "keyword mode reads words only"),
        ((Part("text", "zebra", 0.0),), "keyword mode needs a text part"),
        ((Part("text", " "),), "a text part is empty"),
    ],
)
def test_keyword_mode_errors(searcher: Searcher, parts: tuple, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        searcher.search(Query(parts=parts, mode="keyword"))


def test_missing_keyword_index_says_what_to_build(home: Store, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(home.root, root)
    keyword.path_of(Store(root)).unlink()
    with Searcher(Store(root), encoder=None) as s, pytest.raises(QueryError, match="materialise keyword_index"):
        s.search(Query(parts=(Part("text", "zebra"),), mode="keyword"))


# ----------------------------------------------------------------------------------------------
# Hybrid mode
# ----------------------------------------------------------------------------------------------


def _rrf(searcher: Searcher, parts: tuple, alpha: float, k: float = 60.0, **options: object) -> dict[str, float]:
    """The fusion computed from the two single-mode rankings, as the docs state it."""
    vec = searcher.search(Query(parts=parts, limit=HYBRID_WINDOW, **options))
    texts = tuple(p for p in parts if p.kind == "text")
    kw = searcher.search(Query(parts=texts, mode="keyword", limit=HYBRID_WINDOW, **options)) if texts else []
    fused: dict[str, float] = {}
    for share, hits in ((alpha, vec), (1 - alpha, kw)):
        for rank, h in enumerate(hits, start=1):
            fused[h.id] = fused.get(h.id, 0.0) + share / (k + rank)
    return fused


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.8, 1.0])
def test_hybrid_is_weighted_reciprocal_rank_fusion(searcher: Searcher, alpha: float) -> None:
    parts = (Part("text", "a zebra with a hot dog"),)
    expected = _rrf(searcher, parts, alpha)
    hits = searcher.search(Query(parts=parts, mode="hybrid", alpha=alpha, limit=100))
    assert {h.id for h in hits} == set(expected)
    for h in hits:
        assert h.score == pytest.approx(expected[h.id], rel=1e-9)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hybrid_details_name_each_side(searcher: Searcher) -> None:
    parts = (Part("text", "kiwi"),)
    vec = {h.id: (r, h.score) for r, h in enumerate(searcher.search(Query(parts=parts, limit=100)), start=1)}
    kw = {
        h.id: (r, h.score)
        for r, h in enumerate(searcher.search(Query(parts=parts, mode="keyword", limit=100)), start=1)
    }
    for h in searcher.search(Query(parts=parts, mode="hybrid", rrf_k=10, limit=100)):
        assert (h.details["vector_rank"], h.details["vector_score"]) == (vec[h.id][0], pytest.approx(vec[h.id][1]))
        if h.id in kw:
            assert (h.details["keyword_rank"], h.details["keyword_score"]) == (kw[h.id][0], pytest.approx(kw[h.id][1]))
        else:
            assert h.details["keyword_rank"] is None and h.details["keyword_score"] is None
        assert {"vector_rank", "keyword_score"} <= set(h.to_dict())


def test_hybrid_lifts_keyword_matches_over_pure_vector(searcher: Searcher) -> None:
    parts = (Part("text", "a kiwi"),)
    vector_rank = names(searcher.search(Query(parts=parts, limit=100))).index("rare_kiwi.png")
    hybrid = names(searcher.search(Query(parts=parts, mode="hybrid", alpha=0.5, limit=100)))
    assert hybrid.index("rare_kiwi.png") < vector_rank
    assert hybrid[0] in ("rare_kiwi.png", "rare_both.png")
    keyword_order = names(searcher.search(Query(parts=parts, mode="hybrid", alpha=0.0, limit=2)))
    assert keyword_order == ["rare_kiwi.png", "rare_both.png"]


def test_hybrid_pages_filters_and_images(searcher: Searcher, home: Store) -> None:
    parts = (Part("text", "hot dog"),)
    full = searcher.search(Query(parts=parts, mode="hybrid", limit=30))
    page = searcher.search(Query(parts=parts, mode="hybrid", limit=7, offset=7))
    assert [h.id for h in page] == [h.id for h in full[7:14]]
    filtered = searcher.search(Query(parts=parts, mode="hybrid", filter="source:(folder) -label:*", limit=100))
    assert filtered and all(h.columns["source"] == "folder" for h in filtered)
    path = next(r["path"] for r in home.read_table("images").to_pylist() if r["source_name"] == "img05.png")
    image_only = searcher.search(Query(parts=(Part("image", path),), mode="hybrid", limit=3))
    assert image_only[0].path == path and image_only[0].details["keyword_rank"] is None


# ----------------------------------------------------------------------------------------------
# Score modifiers
# ----------------------------------------------------------------------------------------------


def test_parse_modifier() -> None:
    assert parse_modifier("top_probability") == Modifier("top_probability", 1.0)
    assert parse_modifier(" p_a_face:-0.5 ") == Modifier("p_a_face", -0.5)
    with pytest.raises(QueryError, match="needs a field name"):
        parse_modifier("  ")


def test_multiply_score_by_reranks_every_candidate(searcher: Searcher) -> None:
    parts = (Part("text", "a face"),)
    plain = {h.id: h for h in searcher.search(Query(parts=parts, limit=1000))}
    hits = searcher.search(
        Query(parts=parts, limit=5, multiply_score_by=(Modifier("top_probability", 2.0), Modifier("p_a_face", 1.0)))
    )
    expected = sorted(
        (h.score * 2.0 * h.columns["top_probability"] * h.columns["p_a_face"] for h in plain.values()),
        reverse=True,
    )[:5]
    assert [h.score for h in hits] == pytest.approx(expected, rel=1e-5)
    for h in hits:
        assert h.details["raw_score"] == pytest.approx(plain[h.id].score, abs=1e-6)


def test_add_to_score_and_missing_values(searcher: Searcher) -> None:
    parts = (Part("text", "two hot dogs"),)
    # seed is set for drawn sketches and missing for folder files: a missing value skips the modifier
    hits = searcher.search(Query(parts=parts, limit=100, add_to_score=(Modifier("seed", 1e-12),)))
    seeds = [h.columns["seed"] for h in hits]
    assert None in seeds and any(s is not None for s in seeds)
    for h in hits:
        extra = 0.0 if h.columns["seed"] is None else 1e-12 * h.columns["seed"]
        assert h.score == pytest.approx(h.details["raw_score"] + extra, abs=1e-9)
    none = searcher.search(Query(parts=parts, limit=5, multiply_score_by=(Modifier("steps", 3.0),)))
    assert all(h.score == h.details["raw_score"] for h in none)  # steps is missing everywhere


def test_modifiers_apply_in_keyword_and_hybrid_modes(searcher: Searcher) -> None:
    for mode in ("keyword", "hybrid"):
        hits = searcher.search(
            Query(
                parts=(Part("text", "hot dog"),),
                mode=mode,
                limit=20,
                multiply_score_by=(Modifier("top_probability"),),
                add_to_score=(Modifier("width", 0.001),),
            )
        )
        assert hits
        for h in hits:
            expected = h.details["raw_score"] * h.columns["top_probability"] + 0.001 * h.columns["width"]
            assert h.score == pytest.approx(expected, rel=1e-6)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_modifiers_favour_confident_labels(searcher: Searcher) -> None:
    parts = (Part("text", "a face"),)
    boosted = searcher.search(Query(parts=parts, limit=5, add_to_score=(Modifier("p_a_face", 10.0),)))
    probs = [h.columns["p_a_face"] for h in boosted]
    assert (
        min(probs)
        >= max(
            h.columns["p_a_face"]
            for h in searcher.search(Query(parts=parts, limit=1000))
            if h.id not in {b.id for b in boosted}
        )
        - 0.1
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            Query(parts=(Part("text", "x"),), multiply_score_by=(Modifier("caption"),)),
            "multiply_score_by: field 'caption' is VARCHAR, not a number; numeric fields are: ",
        ),
        (
            Query(parts=(Part("text", "x"),), add_to_score=(Modifier("top_prob"),)),
            "add_to_score: unknown field 'top_prob' (did you mean 'top_probability'?)",
        ),
        (Query(parts=(Part("text", "x"),), mode="hybrid", alpha=1.5), "alpha must be between 0"),
        (Query(parts=(Part("text", "x"),), mode="hybrid", rrf_k=0), "rrf_k must be > 0"),
        (Query(parts=(Part("text", "x"),), mode="fuzzy"), "unknown mode 'fuzzy'"),
        (Query(parts=(Part("id", "nope"),)), "no indexed image has id 'nope'"),
    ],
)
def test_bad_modes_and_modifiers_say_what_is_wrong(searcher: Searcher, query: Query, message: str) -> None:
    with pytest.raises(QueryError) as info:
        searcher.search(query)
    assert message in str(info.value)


def test_like_an_indexed_id_is_its_stored_vector(searcher: Searcher, home: Store) -> None:
    row = next(r for r in home.read_table("images").to_pylist() if r["source_name"] == "img07.png")
    by_id = searcher.search(Query(parts=(Part("id", row["id"]),), limit=5))
    by_file = searcher.search(Query(parts=(Part("image", row["path"]),), limit=5))
    assert by_id[0].id == row["id"] and by_id[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.id for h in by_id] == [h.id for h in by_file]
    data = Path(row["path"]).read_bytes()
    by_bytes = searcher.search(Query(parts=(Part("image", "upload.png", data=data),), limit=5))
    assert [h.id for h in by_bytes] == [h.id for h in by_file]


def test_cli_hybrid_with_modifiers_equals_the_python_api(searcher: Searcher, home: Store) -> None:
    args = ["kiwi zebra", "--mode", "hybrid", "--alpha", "0.7", "--multiply-score-by", "top_probability:2"]
    out = subprocess.run(
        [sys.executable, "-m", "hotdog_dagster.cli", "search", "--home", str(home.root), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    expected = searcher.search(
        Query(
            parts=(Part("text", "kiwi zebra"),),
            mode="hybrid",
            alpha=0.7,
            multiply_score_by=(Modifier("top_probability", 2.0),),
        )
    )
    got = json.loads(out.stdout)
    assert [h["id"] for h in got] == [h.id for h in expected]
    assert [h["score"] for h in got] == pytest.approx([h.score for h in expected])
    assert set(RARE_CAPTIONS) >= {got[0]["source_name"]}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "hotdog_dagster.cli",
            "search",
            "--home",
            str(home.root),
            "x",
            "--add-to-score",
            "caption",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "add_to_score: field 'caption' is VARCHAR, not a number" in bad.stderr


def test_top_k_keeps_the_lowest_positions_among_ties() -> None:
    """A page, a hybrid window and a longer list must agree on which tied images come first."""
    from hotdog_dagster.core.search.engine import _top_order

    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 300))
        scores = rng.integers(0, 5, n).astype(np.float32)  # many ties
        positions = rng.permutation(n).astype(np.int64)
        full = np.lexsort((positions, -scores))
        for k in (1, 7, n // 2 + 1, n):
            np.testing.assert_array_equal(_top_order(positions, scores, k), full[:k])


def test_an_approximate_index_answers_through_faiss(home: Store, searcher: Searcher, tmp_path: Path) -> None:
    """Exact (flat) indexes are searched by a matrix product; HNSW and IVF through FAISS: same answers here."""
    root = tmp_path / "copy"
    shutil.copytree(home.root, root)
    index.update_from_store(Store(root), kind="hnsw", rebuild=True)
    assert searcher.exact
    with Searcher(Store(root), encoder=searcher.encoder) as approx:
        assert not approx.exact
        for query in (
            Query(parts=(Part("text", "a face"),), limit=5),
            Query(parts=(Part("text", "two hot dogs"),), filter="source:(folder) -label:*", limit=5),
            Query(parts=(Part("text", "kiwi"),), mode="hybrid", limit=5),
        ):
            exact = searcher.search(query)
            got = approx.search(query)
            assert [h.id for h in got] == [h.id for h in exact]
            assert [h.score for h in got] == pytest.approx([h.score for h in exact], abs=1e-5)
