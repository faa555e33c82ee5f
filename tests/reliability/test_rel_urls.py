"""Image queries by URL against a hostile server on loopback: timeouts, size caps, content types,
redirect chains and schemes other than http(s)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest
from faultkit import encoded
from PIL import Image

from hotdog_dagster.core.search import engine
from hotdog_dagster.core.search.engine import QueryError, fetch_image_url, load_image_bytes

pytestmark = pytest.mark.reliability

PNG = encoded(Image.new("RGB", (16, 16), (250, 0, 0)))


class Hostile(http.server.BaseHTTPRequestHandler):
    """Each path is one way for a server to misbehave."""

    def log_message(self, *a: object) -> None:
        pass

    def _send(self, body: bytes, kind: str = "image/png", length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path
        if path == "/ok.png":
            self._send(PNG)
        elif path == "/page.html":
            self._send(b"<html>not an image</html>", "text/html; charset=utf-8")
        elif path == "/no-type":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PNG)
        elif path == "/huge-declared":
            self._send(b"", length=10**12)
        elif path == "/huge-undeclared":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            chunk = b"\0" * 65536
            try:
                for _ in range(2000):  # 128 MB if nobody stops reading
                    self.wfile.write(chunk)
            except OSError:
                pass
        elif path == "/slow-start":
            time.sleep(5)
            self._send(PNG)
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass
        elif path.startswith("/hop/"):
            n = int(path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("Location", "/ok.png" if n == 0 else f"/hop/{n - 1}")
            self.end_headers()
        elif path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif path == "/to-ftp":
            self.send_response(301)
            self.send_header("Location", "ftp://127.0.0.1/x.png")
            self.end_headers()
        elif path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        else:
            self.send_error(404)


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up on a hostile answer is the point, not a failure


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = QuietServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(autouse=True)
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "URL_TIMEOUT_S", 1.5)
    monkeypatch.setattr(engine, "URL_MAX_BYTES", 1024 * 1024)


def test_a_good_image_url_and_a_short_redirect_chain(base: str) -> None:
    assert fetch_image_url(f"{base}/ok.png") == PNG
    assert load_image_bytes(f"{base}/hop/{engine.URL_MAX_REDIRECTS - 1}") == PNG


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/page.html", "content type 'text/html', not an image"),
        ("/no-type", "content type '(none)'"),
        ("/huge-declared", "over the 1 MB cap"),
        ("/huge-undeclared", "larger than the 1 MB cap"),
        ("/hop/10", "redirects more than 3 times"),
        ("/loop", "redirect"),
        ("/to-file", "only http(s) URLs are fetched"),
        ("/to-ftp", "only http(s) URLs are fetched"),
        ("/missing.png", "HTTP 404"),
    ],
)
def test_hostile_answers_are_query_errors(base: str, path: str, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fetch_image_url(base + path)


@pytest.mark.parametrize("path", ["/slow-start", "/trickle"])
def test_slow_servers_are_cut_off(base: str, path: str) -> None:
    """A server that never answers, or trickles a byte at a time, costs about the timeout, not forever."""
    t0 = time.monotonic()
    with pytest.raises(QueryError, match="timed out"):
        fetch_image_url(base + path)
    assert time.monotonic() - t0 < 2 * engine.URL_TIMEOUT_S + 1.0


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "FILE:///etc/hosts",
        "ftp://127.0.0.1/x.png",
        "gopher://127.0.0.1:70/",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "jar:file:///x.zip!/a.png",
    ],
)
def test_only_http_and_https_urls_are_fetched(url: str) -> None:
    with pytest.raises(QueryError, match="only"):
        load_image_bytes(url)
    with pytest.raises(QueryError, match="only http"):
        fetch_image_url(url)
