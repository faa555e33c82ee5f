"""``hotdog serve``: the page, /api/search against the Python API, 4xx answers, uploads, files by id only."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from search_home import shared_search_home
from starlette.testclient import TestClient

from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.search.engine import Modifier, Part, Query, QueryError, Searcher
from hotdog_dagster.serve import create_app

CAP = 200_000


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return shared_search_home(tmp_path_factory)


@pytest.fixture(scope="module")
def searcher(home: Store) -> Searcher:
    with Searcher.open(home) as s:
        yield s


@pytest.fixture(scope="module")
def client(searcher: Searcher) -> TestClient:
    with TestClient(create_app(searcher, max_upload_bytes=CAP), raise_server_exceptions=False) as c:
        yield c


def rows(home: Store) -> dict[str, dict]:
    return {r["source_name"]: r for r in home.read_table("images").to_pylist()}


def python_api(searcher: Searcher, query: Query) -> list[dict]:
    return [h.to_dict() for h in searcher.search(query)]


def same_hits(api: list[dict], expected: list[dict]) -> None:
    assert [h["id"] for h in api] == [h["id"] for h in expected]
    for got, want in zip(api, expected, strict=True):
        assert got["score"] == pytest.approx(want["score"], rel=1e-6)
        assert {k: v for k, v in got.items() if k not in ("thumbnail", "image", "score")} == {
            k: v for k, v in json.loads(json.dumps(want, default=str)).items() if k != "score"
        }


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------


def test_page_renders_the_form_and_its_assets(client: TestClient, searcher: Searcher) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for needle in (
        'id="filter"',
        'id="filter-error"',
        'id="include_flagged"',
        'name="mode"',
        '<option value="hybrid">',
        '<option value="description">',
        'id="image_space_weight"',
        'id="add-upload"',
        'id="add-url"',
        '<option value="top_probability">',
        'id="grid"',
        'id="next"',
        f"{len(searcher.ids)} indexed images",
    ):
        assert needle in html, needle
    config = json.loads(html.split('id="hotdog-config" type="application/json">')[1].split("</script>")[0])
    assert config["numeric_fields"] == searcher.numeric_fields() and "caption" in config["fields"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in html
        assert client.get(asset).status_code == 200
    assert 'fetch("/api/search"' in client.get("/static/app.js").text


# ----------------------------------------------------------------------------------------------
# /api/search = the Python API
# ----------------------------------------------------------------------------------------------

CASES = [
    ({"q": "a face", "limit": "5"}, Query(parts=(Part("text", "a face"),), limit=5)),
    (
        {"text": ["a face", "a hamburger:-0.5"], "space": "both", "description_space_weight": "0.5"},
        Query(
            parts=(Part("text", "a face"), Part("text", "a hamburger", -0.5)),
            space="both",
            description_space_weight=0.5,
        ),
    ),
    (
        {"q": "kiwi zebra", "mode": "hybrid", "alpha": "0.7", "multiply_score_by": "top_probability:2", "limit": "8"},
        Query(
            parts=(Part("text", "kiwi zebra"),),
            mode="hybrid",
            alpha=0.7,
            multiply_score_by=(Modifier("top_probability", 2.0),),
            limit=8,
        ),
    ),
    (
        {
            "q": "hot dog",
            "mode": "keyword",
            "filter": "source:(folder sketch) -caption:*pair*",
            "include_flagged": "true",
        },
        Query(
            parts=(Part("text", "hot dog"),),
            mode="keyword",
            filter="source:(folder sketch) -caption:*pair*",
            include_flagged=True,
        ),
    ),
    (
        {"q": "a red circle", "limit": "4", "offset": "4", "add_to_score": ["width:0.001", "p_a_face:-1"]},
        Query(
            parts=(Part("text", "a red circle"),),
            limit=4,
            offset=4,
            add_to_score=(Modifier("width", 0.001), Modifier("p_a_face", -1.0)),
        ),
    ),
]


@pytest.mark.parametrize(("params", "query"), CASES)
def test_api_get_and_post_equal_the_python_api(
    client: TestClient, searcher: Searcher, params: dict, query: Query
) -> None:
    expected = python_api(searcher, query)
    assert expected
    got = client.get("/api/search", params=params)
    assert got.status_code == 200, got.text
    body = got.json()
    same_hits(body["hits"], expected)
    assert (body["count"], body["offset"], body["limit"], body["mode"]) == (
        len(expected),
        query.offset,
        query.limit,
        query.mode,
    )
    posted = client.post("/api/search", data=params)
    assert posted.status_code == 200 and posted.json() == body


def test_like_an_id_and_the_hit_urls(client: TestClient, searcher: Searcher, home: Store) -> None:
    row = rows(home)["img03.png"]
    body = client.get("/api/search", params={"like": row["id"], "limit": 3}).json()
    same_hits(body["hits"], python_api(searcher, Query(parts=(Part("id", row["id"]),), limit=3)))
    first = body["hits"][0]
    assert first["id"] == row["id"] and first["score"] == pytest.approx(1.0, abs=1e-5)
    assert first["thumbnail"] == f"/thumb/{row['id']}" and first["image"] == f"/image/{row['id']}"


def test_upload_is_decoded_and_searched_like_the_file(client: TestClient, searcher: Searcher, home: Store) -> None:
    row = rows(home)["img05.png"]
    data = Path(row["path"]).read_bytes()
    got = client.post(
        "/api/search",
        files=[("upload", ("query.png", data, "image/png"))],
        data={"limit": "3", "upload_weight": "2", "text": "a face:0.1"},
    )
    assert got.status_code == 200, got.text
    expected = python_api(
        searcher, Query(parts=(Part("text", "a face", 0.1), Part("image", row["path"], 2.0)), limit=3)
    )
    same_hits(got.json()["hits"], expected)


# ----------------------------------------------------------------------------------------------
# Bad input: 4xx with the CLI's message, never a 500
# ----------------------------------------------------------------------------------------------


def cli_error(home: Store, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "hotdog_dagster.cli", "search", "--home", str(home.root), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    return out.stderr.removeprefix("hotdog search: error: ").rstrip("\n")


def test_bad_filter_is_a_400_with_the_clis_message_and_its_position(client: TestClient, home: Store) -> None:
    got = client.get("/api/search", params={"q": "x", "filter": "a_face:[0.5 TO"})
    assert got.status_code == 400
    body = got.json()
    assert body["input"] == "filter" and body["position"] == 14
    assert body["error"] == cli_error(home, "x", "--filter", "a_face:[0.5 TO")
    assert body["error"].splitlines()[-1] == "  " + " " * 14 + "^"
    grouped = client.get("/api/search", params={"q": "x", "filter": "source:(sketch"}).json()
    assert grouped["position"] == 14 and "close the group of 'source'" in grouped["error"]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({}, 400, "the query is empty"),
        ({"q": "  "}, 400, "the query is empty"),
        ({"text": "x:0"}, 400, "the query is empty"),
        ({"q": "x", "filter": "nope:1"}, 400, "unknown field 'nope'"),
        ({"q": "x", "limit": "abc"}, 400, "limit: invalid int value: 'abc'"),
        ({"q": "x", "limit": "0"}, 400, "limit must be >= 1 and offset >= 0"),
        ({"q": "x", "limit": "100000"}, 400, "limit must be at most 500"),
        ({"q": "x", "offset": "-1"}, 400, "limit must be >= 1 and offset >= 0"),
        ({"q": "x", "alpha": "nan"}, 400, "alpha: must be a finite number"),
        ({"q": "x", "mode": "fuzzy"}, 400, "mode: invalid choice 'fuzzy' (choose from vector, keyword, hybrid)"),
        ({"q": "x", "space": "both", "image_space_weight": "0", "description_space_weight": "0"}, 400, "space weights"),
        ({"q": "x", "include_flagged": "maybe"}, 400, "include_flagged: expected true or false"),
        ({"q": "x", "limit": ["1", "2"]}, 400, "limit: given 2 times"),
        ({"image": "/etc/passwd"}, 400, "not paths on its disk"),
        ({"image": "file:///etc/passwd"}, 400, "not paths on its disk"),
        ({"like": "no-such-id"}, 400, "no indexed image has id 'no-such-id'"),
        ({"q": "x", "multiply_score_by": "caption"}, 400, "field 'caption' is VARCHAR, not a number"),
        ({"q": "x", "add_to_score": "top_prob:1"}, 400, "did you mean 'top_probability'?"),
        ({"q": "x", "mode": "keyword", "like": "abc"}, 400, "keyword mode reads words only"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(client: TestClient, params: dict, status: int, message: str) -> None:
    got = client.get("/api/search", params=params)
    assert got.status_code == status, got.text
    assert message in got.json()["error"]


def test_messages_match_the_cli(client: TestClient, home: Store) -> None:
    for params, args in [
        ({"q": "x", "add_to_score": "caption"}, ["x", "--add-to-score", "caption"]),
        ({"like": "no-such-id"}, ["--like", "no-such-id"]),
    ]:
        assert client.get("/api/search", params=params).json()["error"] == cli_error(home, *args)


def test_bad_uploads(client: TestClient) -> None:
    text = client.post("/api/search", files=[("upload", ("notes.png", b"not an image", "image/png"))])
    assert text.status_code == 400 and "image notes.png is not a usable image" in text.json()["error"]
    empty = client.post("/api/search", files=[("upload", ("empty.png", b"", "image/png"))])
    assert empty.status_code == 400 and "empty file" in empty.json()["error"]
    weights = client.post(
        "/api/search",
        files=[("upload", ("a.png", b"x", "image/png"))],
        data={"upload_weight": ["1", "2"]},
    )
    assert weights.status_code == 400 and "2 weights for 1 uploads" in weights.json()["error"]
    garbled = client.post(
        "/api/search", content=b"--xx\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=xx"}
    )
    assert 400 <= garbled.status_code < 500


def _png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((side, side), 64).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_are_capped(client: TestClient) -> None:
    big = _png(400)
    assert len(big) > CAP
    got = client.post("/api/search", files=[("upload", ("big.png", big, "image/png"))])
    assert got.status_code == 413 and "upload too large" in got.json()["error"]

    def chunks():  # no Content-Length: the cap holds while the body streams in
        for _ in range(200):
            yield b"x" * 10_000

    streamed = client.post(
        "/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xx"}
    )
    assert streamed.status_code == 413
    small = _png(64)
    assert client.post("/api/search", files=[("upload", ("ok.png", small, "image/png"))]).status_code == 200


def test_random_input_never_gets_a_500(client: TestClient) -> None:
    for value in ["(", ")", "\\", '"', "a:(", "+", "-", "::", "[*", "x" * 5000, "\x00", "é:(ü ö)", "%", "{}"]:
        for name in ("filter", "q", "alpha", "limit", "multiply_score_by", "like", "space", "image"):
            got = client.get("/api/search", params={"q": "a face", name: value})
            assert got.status_code < 500, (name, value, got.text)


# ----------------------------------------------------------------------------------------------
# Files: by catalog id only, nothing outside HOTDOG_HOME
# ----------------------------------------------------------------------------------------------


def test_thumbnails_of_catalog_images(client: TestClient, home: Store) -> None:
    for name in ("img01.png", "rare_kiwi.png"):
        row = rows(home)[name]
        got = client.get(f"/thumb/{row['id']}", params={"size": 64})
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        img = Image.open(io.BytesIO(got.content))
        assert max(img.size) <= 64
    assert client.get("/thumb/no-such-id").status_code == 404
    assert client.get(f"/thumb/{row['id']}", params={"size": "13"}).status_code == 400
    assert client.get(f"/thumb/{row['id']}", params={"size": "big"}).status_code == 400


def test_images_inside_the_home_are_served_and_others_are_not(client: TestClient, home: Store) -> None:
    drawn = next(r for r in rows(home).values() if r["source"] == "sketch")
    assert Path(drawn["path"]).is_relative_to(home.root)
    got = client.get(f"/image/{drawn['id']}")
    assert got.status_code == 200 and got.content == Path(drawn["path"]).read_bytes()
    outside = rows(home)["img02.png"]  # a folder ingest leaves the file where it was
    refused = client.get(f"/image/{outside['id']}")
    assert refused.status_code == 404 and "outside HOTDOG_HOME" in refused.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/image/..%2F..%2F..%2Fetc%2Fpasswd",
        "/image/%2e%2e",
        "/thumb/..%2Fcatalog.duckdb",
        "/static/..%2F..%2F..%2Fpyproject.toml",
        "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/static/%2e%2e/app.py",
        "/static//etc/passwd",
        "/catalog.duckdb",
        "/index/keyword.npz",
        "/image/",
    ],
)
def test_path_traversal_is_refused(client: TestClient, path: str) -> None:
    got = client.get(path)
    assert got.status_code == 404, (path, got.status_code)
    assert b"root:" not in got.content and b"[project]" not in got.content and b"def create_app" not in got.content


def test_raw_dot_segments_never_leave_static(searcher: Searcher) -> None:
    """A client that sends ``..`` unnormalised, straight to the ASGI app."""
    app = create_app(searcher)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    import asyncio

    for raw in ("/static/../app.py", "/static/../../../../../etc/passwd", "/static/./../templates/index.html"):
        sent.clear()
        scope = {
            "type": "http",
            "method": "GET",
            "path": raw,
            "raw_path": raw.encode(),
            "query_string": b"",
            "headers": [],
            "root_path": "",
            "scheme": "http",
            "server": ("test", 80),
        }
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == 404, raw


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hotdog_serve_answers_on_loopback(home: Store, searcher: Searcher) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hotdog_dagster.cli", "serve", "--home", str(home.root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/search?q=a+face&limit=3"
        body = None
        for _ in range(600):  # the server imports torch and opens the model first
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body = json.load(resp)
                break
            except OSError:
                time.sleep(0.2)
        assert body is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        same_hits(body["hits"], python_api(searcher, Query(parts=(Part("text", "a face"),), limit=3)))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_hotdog_serve_refuses_bad_options(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hotdog_dagster.cli", "serve", "--home", str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "run the pipeline first" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "hotdog_dagster.cli", "serve", "--max-upload-mb", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "--max-upload-mb must be positive" in out.stderr


def test_query_errors_carry_the_filter_position(searcher: Searcher) -> None:
    with pytest.raises(QueryError) as info:
        searcher.search(Query(parts=(Part("text", "x"),), filter="label:(a"))
    assert (info.value.input, info.value.position) == ("filter", 8)
