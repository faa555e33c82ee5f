"""Search plumbing on the real pipeline output (shipped sketch model): parts, weights, filters, flags, paging, errors."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from hotdog_dagster.core.io.batches import list_source_files, plan_folder
from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.model.encoder import ClipEncoder
from hotdog_dagster.core.model.names import SKETCH_MODEL
from hotdog_dagster.core.model.sketch import draw
from hotdog_dagster.core.search.engine import Part, Query, QueryError, Searcher, split_weight
from hotdog_dagster.core.settings import ModelSettings, Profile
from hotdog_dagster.pipeline import run_pipeline


class CountingEncoder:
    """The real encoder, counting what it is asked to encode (weight-0 parts must never reach it)."""

    def __init__(self, inner: ClipEncoder) -> None:
        self.inner, self.texts, self.images = inner, [], 0

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return self.inner.encode_texts(texts)

    def encode_pil(self, images: list) -> np.ndarray:
        self.images += len(images)
        return self.inner.encode_pil(images)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A folder of sketch images with caption sidecars, two exact copies, and a black frame, through the pipeline."""
    import os

    tmp = tmp_path_factory.mktemp("search")
    folder = tmp / "pics"
    folder.mkdir()
    for i in range(40):
        s = draw(11, i, size=64)
        s.image.save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(s.caption)
    (folder / "copy_a.png").write_bytes((folder / "img00.png").read_bytes())
    draw(11, 0, size=64, label="black").image.save(folder / "black.png")
    old = {k: os.environ.get(k) for k in ("HOTDOG_HOME", "DAGSTER_HOME")}
    os.environ["DAGSTER_HOME"] = str(tmp / "dagster")
    try:
        store = Store(tmp / "home")
        profile = Profile(model=ModelSettings(name=SKETCH_MODEL, num_workers=0, batch_size=32))
        summary = run_pipeline(store, profile, plan_folder(folder, list_source_files(folder), 20))
        assert summary.ok, summary.failed
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return store


@pytest.fixture(scope="module")
def searcher(built: Store) -> Searcher:
    s = Searcher(built, CountingEncoder(ClipEncoder(SKETCH_MODEL)))
    yield s
    s.close()


def test_split_weight_reads_only_a_final_number() -> None:
    assert split_weight("a hamburger:-0.5") == ("a hamburger", -0.5)
    assert split_weight("a face") == ("a face", 1.0)
    assert split_weight("a face", 0.3) == ("a face", 0.3)
    assert split_weight("http://host:8080/x.png:2") == ("http://host:8080/x.png", 2.0)
    assert split_weight("http://host:8080/x.png") == ("http://host:8080/x.png", 1.0)
    assert split_weight("ratio 1:2e-1") == ("ratio 1", 0.2)


def test_sidecar_captions_are_descriptions_not_inputs(built: Store) -> None:
    images = built.read_table("images").to_pylist()
    assert len(images) == 42 and built.read_table("rejected").num_rows == 0
    by_name = {r["source_name"]: r for r in images}
    assert by_name["img03.png"]["caption"] == draw(11, 3, size=64).caption
    assert by_name["black.png"]["caption"] is None


def test_self_query_ranks_first_with_score_one(searcher: Searcher, built: Store) -> None:
    path = next(r["path"] for r in built.read_table("images").to_pylist() if r["source_name"] == "img05.png")
    hits = searcher.search(Query(parts=(Part("image", path),), limit=3))
    assert hits[0].path == path and hits[0].score >= 0.999


def test_flagged_images_are_excluded_unless_asked(searcher: Searcher) -> None:
    def names(include: bool) -> set[str]:
        hits = searcher.search(Query(parts=(Part("text", "a black image"),), limit=100, include_flagged=include))
        return {h.columns["source_name"] for h in hits}

    default, everything = names(False), names(True)
    assert "black.png" not in default and "black.png" in everything
    assert len({"img00.png", "copy_a.png"} & default) == 1  # one representative of the exact pair
    assert {"img00.png", "copy_a.png"} <= everything


def test_filter_narrows_before_the_search(searcher: Searcher, built: Store) -> None:
    faces = [r for r in built.read_table("images").to_pylist() if r["label"] is None and "face" in (r["caption"] or "")]
    hits = searcher.search(Query(parts=(Part("text", "a hamburger"),), filter="caption:*face*", limit=50))
    assert hits and all("face" in h.columns["caption"] for h in hits)
    assert len(hits) == len(faces)
    # a selective filter still returns `limit` hits when that many match
    hits = searcher.search(Query(parts=(Part("text", "x"),), filter="width:64 AND NOT caption:*face*", limit=5))
    assert len(hits) == 5 and all("face" not in h.columns["caption"] for h in hits)
    assert searcher.search(Query(parts=(Part("text", "x"),), filter="width:[1000 TO *]")) == []


def test_offset_pages_through_the_same_ranking(searcher: Searcher) -> None:
    q = dict(parts=(Part("text", "a red circle"),))
    first = searcher.search(Query(**q, limit=10))
    page2 = searcher.search(Query(**q, limit=5, offset=5))
    assert [h.id for h in page2] == [h.id for h in first[5:10]]


def test_weights_combine_parts_and_zero_weight_parts_are_not_encoded(searcher: Searcher) -> None:
    enc = searcher.encoder
    enc.texts.clear()
    searcher.search(Query(parts=(Part("text", "a face"), Part("text", "never encoded", 0.0)), limit=3))
    assert enc.texts == ["a face"]
    q_pos = searcher.query_vector((Part("text", "a face"), Part("text", "a hamburger", 0.5)))
    q_neg = searcher.query_vector((Part("text", "a face"), Part("text", "a hamburger", -0.5)))
    a, b = enc.inner.encode_texts(["a face", "a hamburger"])
    assert np.allclose(q_pos, (a + 0.5 * b) / np.linalg.norm(a + 0.5 * b), atol=1e-5)
    assert np.allclose(q_neg, (a - 0.5 * b) / np.linalg.norm(a - 0.5 * b), atol=1e-5)


def test_both_space_is_the_weighted_mean_of_the_two_spaces(searcher: Searcher) -> None:
    part = (Part("text", "a blue square"),)
    img = {h.id: h.score for h in searcher.search(Query(parts=part, space="image", limit=100))}
    txt = {h.id: h.score for h in searcher.search(Query(parts=part, space="description", limit=100))}
    both = searcher.search(Query(parts=part, space="both", image_space_weight=3, description_space_weight=1, limit=5))
    for h in both:
        assert h.score == pytest.approx((3 * img[h.id] + txt[h.id]) / 4, abs=1e-5)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (Query(parts=()), "the query is empty"),
        (Query(parts=(Part("text", "x", 0.0),)), "the query is empty"),
        (Query(parts=(Part("text", "  "),)), "a text part is empty"),
        (Query(parts=(Part("text", "x"),), filter="a_face:[0.5 TO"), "position 14"),
        (Query(parts=(Part("text", "x"),), filter="nope:1"), "unknown field 'nope'"),
        (Query(parts=(Part("image", "/no/such.png"),)), "does not exist"),
        (Query(parts=(Part("image", "ftp://x/y.png"),)), "only local paths and http(s) URLs"),
        (Query(parts=(Part("text", "x"),), limit=0), "limit must be >= 1"),
    ],
)
def test_bad_queries_say_what_is_wrong(searcher: Searcher, query: Query, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        searcher.search(query)


def test_image_by_url_and_bad_urls(searcher: Searcher, built: Store, tmp_path: Path) -> None:
    path = Path(next(r["path"] for r in searcher.items.to_pylist() if r["keep"]))  # a kept image answers as itself
    (tmp_path / "q.png").write_bytes(path.read_bytes())
    (tmp_path / "notes.png").write_text("not an image")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path), **k)

        def log_message(self, *a) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        hits = searcher.search(Query(parts=(Part("image", f"{base}/q.png"),), limit=1))
        assert hits[0].path == str(path) and hits[0].score >= 0.999
        with pytest.raises(QueryError, match="HTTP 404"):
            searcher.search(Query(parts=(Part("image", f"{base}/missing.png"),)))
        with pytest.raises(QueryError, match="not a usable image"):
            searcher.search(Query(parts=(Part("image", f"{base}/notes.png"),)))
    finally:
        server.shutdown()


def test_cli_search_json_html_and_errors(built: Store, tmp_path: Path) -> None:
    def hotdog(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hotdog_dagster.cli", "search", "--home", str(built.root), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    out = hotdog("a face", "--limit", "3", "--json", "--html", str(tmp_path / "g.html"), "--filter", "source:folder")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 3 and {"id", "score", "path", "caption", "keep"} <= set(hits[0])
    page = (tmp_path / "g.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "a face" in page
    bad = hotdog("x", "--filter", "a_face:[0.5 0.9]")
    assert bad.returncode == 2 and "expected TO" in bad.stderr and "Traceback" not in bad.stderr
    empty = hotdog()
    assert empty.returncode == 2 and "the query is empty" in empty.stderr
