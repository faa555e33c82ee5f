"""The search page in a real browser: Debian's ``chromium`` driven by Playwright (no browser download).

Screenshots go to ``$HOTDOG_SCREENSHOTS`` when set, else to ``screenshots/`` under pytest's temporary
directory for this test (the path is printed). The test needs the ``chromium`` package and the
``playwright`` Python package; without them it is skipped with the reason.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from browser_env import CHROMIUM, browser_required, sync_api
from search_home import shared_search_home

from hotdog_dagster.core.io.store import Store
from hotdog_dagster.core.search.engine import Searcher
from hotdog_dagster.serve import create_app

pytestmark = browser_required("browser test")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return shared_search_home(tmp_path_factory)


@pytest.fixture(scope="module")
def base_url(home: Store) -> str:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    searcher = Searcher.open(home)
    server = uvicorn.Server(uvicorn.Config(create_app(searcher), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)
    searcher.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = Path(os.environ.get("HOTDOG_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {out}")
    return out


@pytest.fixture(scope="module")
def page(base_url: str):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page(viewport={"width": 1280, "height": 1000})
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


def card_ids(page) -> list[str]:
    return page.eval_on_selector_all(".card", "cards => cards.map(c => c.dataset.id)")


def wait_for_results(page, previous: list[str] | None = None) -> list[str]:
    """Wait until the search finished, a grid is drawn and every thumbnail has loaded."""
    page.wait_for_function("() => !document.getElementById('search').disabled")
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('.card img')];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
    )
    if previous is not None:
        page.wait_for_function(
            "ids => [...document.querySelectorAll('.card')].map(c => c.dataset.id).join() !== ids.join()", arg=previous
        )
    return card_ids(page)


def test_query_shows_thumbnails(page, base_url: str, shots: Path) -> None:
    page.goto(base_url)
    page.fill("#part-rows .part input.text", "a face")
    page.click("#search")
    ids = wait_for_results(page)
    assert len(ids) == 24
    assert "a face" in page.inner_text("#grid") or "face" in page.inner_text("#grid")
    assert "text=a+face%3A1" in page.url  # the address bar holds the query: a reload shows the same
    page.screenshot(path=str(shots / "1-query.png"), full_page=True)
    page.goto(page.url)
    assert wait_for_results(page) == ids
    assert page.input_value("#part-rows .part input.text") == "a face"


def test_changing_a_weight_changes_the_order(page, shots: Path) -> None:
    page.click("#add-text")
    rows = page.locator("#part-rows .part")
    rows.nth(1).locator("input.text").fill("two hot dogs")
    rows.nth(1).locator("input.weight").fill("0")
    page.click("#search")
    before = wait_for_results(page)
    rows.nth(1).locator("input.weight").fill("3")
    page.click("#search")
    after = wait_for_results(page, previous=before)
    assert after != before
    page.screenshot(path=str(shots / "2-weight-changed.png"), full_page=True)


def test_bad_filter_shows_the_message_at_its_position(page, shots: Path) -> None:
    page.fill("#filter", "source:(sketch")
    page.click("#search")
    page.wait_for_selector("#filter-error:not([hidden])")
    text = page.inner_text("#filter-error")
    assert "invalid filter at position 14" in text and "close the group of 'source'" in text
    assert text.splitlines()[-1] == "  " + " " * 14 + "^"
    assert page.get_attribute("#filter", "aria-invalid") == "true"
    assert page.evaluate("document.getElementById('filter').selectionStart") == 14
    page.screenshot(path=str(shots / "3-bad-filter.png"), full_page=True)
    page.fill("#filter", "source:(sketch OR folder)")
    page.click("#search")
    wait_for_results(page)
    assert page.is_hidden("#filter-error")


def test_clicking_an_image_searches_with_it(page, shots: Path) -> None:
    ids = card_ids(page)
    target = ids[5]
    page.click(f".card[data-id='{target}'] img")
    after = wait_for_results(page, previous=ids)
    assert after[0] == target  # an image is its own nearest neighbour
    assert page.locator("#part-rows .part").count() == 1
    assert page.inner_text(".card .score").startswith("#1 · 1.0000") or page.inner_text(".card .score").startswith(
        "#1 · 0.9999"
    )
    page.screenshot(path=str(shots / "4-clicked-image.png"), full_page=True)


def test_hybrid_and_a_modifier_from_the_page(page, base_url: str, shots: Path) -> None:
    page.goto(base_url)
    page.fill("#part-rows .part input.text", "kiwi")
    page.select_option("#mode", "hybrid")
    page.click("#add-modifier")
    page.select_option("#modifier-rows .modifier .field", "top_probability")
    page.click("#search")
    wait_for_results(page)
    first = page.inner_text(".card")
    assert "keyword #" in first and "vector #" in first and "raw " in first
    assert "kiwi" in first
    page.screenshot(path=str(shots / "5-hybrid-modifier.png"), full_page=True)
