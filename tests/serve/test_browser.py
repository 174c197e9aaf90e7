"""The search page end to end in headless Chromium (Selenium + Debian's chromium and chromium-driver).

Skipped, with the reason, where the browser or its driver is not installed (``.ci/run`` installs
both). The expected answers are exact: an indexed image uploaded as the query comes back first with
score 1, and a text query shows the ranking ``Searcher.by_text`` computes for it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.search.tiny_index import CHECKPOINT_VERSION, INDEX_VERSION, build_tiny_index
from tests.serve.live_server import live_server
from timam.search import Searcher
from timam.serve.app import create_app

CHROMIUM = os.environ.get("TIMAM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TIMAM_CHROMEDRIVER", "/usr/bin/chromedriver")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (Path(path).is_file() or shutil.which(path)):
            return f"{name} is not installed at {path} (apt-get install chromium chromium-driver; .ci/run does)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_index(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def searcher(tiny):
    return Searcher.open(tiny.root, device="cpu")


@pytest.fixture(scope="module")
def page(searcher):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations are logged there
    with live_server(create_app(searcher)) as address:
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            driver.set_page_load_timeout(20)
            driver.get(f"http://{address}/")
            yield driver
        finally:
            driver.quit()


def _wait_for_results(driver) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 15).until(
        lambda d: d.find_element(By.ID, "results").get_attribute("data-state") in {"done", "error"}
    )
    assert driver.find_element(By.ID, "results").get_attribute("data-state") == "done", driver.find_element(
        By.ID, "status"
    ).text
    return driver.find_elements(By.CSS_SELECTOR, "#results .hit")


def _thumbnails_loaded(driver) -> bool:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
    )


def test_a_typed_query_shows_the_searchers_ranking_with_scores_and_paths(page, searcher):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(page, 10).until(lambda d: CHECKPOINT_VERSION in d.find_element(By.ID, "footer").text)
    footer = page.find_element(By.ID, "footer").text
    assert INDEX_VERSION in footer and "6 images" in footer
    box = page.find_element(By.ID, "query")
    box.clear()
    box.send_keys("a blue sky over the sea")
    k = page.find_element(By.ID, "k")
    k.clear()
    k.send_keys("4")
    page.find_element(By.ID, "search").click()
    hits = _wait_for_results(page)
    expected = searcher.by_text("a blue sky over the sea", k=4)
    assert [hit.get_attribute("title") for hit in hits] == [hit.path for hit in expected]  # path on hover
    assert [int(hit.get_attribute("data-row")) for hit in hits] == [hit.row for hit in expected]
    assert hits[0].find_element(By.CSS_SELECTOR, ".score").text == f"{expected[0].score:.3f}"
    WebDriverWait(page, 10).until(_thumbnails_loaded)


def test_an_uploaded_image_finds_itself_first(page, tiny):
    from selenium.webdriver.common.by import By

    page.execute_script("document.getElementById('results').dataset.state = 'waiting'")
    page.find_element(By.ID, "image").send_keys(tiny.images[4])  # choosing a file submits the search
    hits = _wait_for_results(page)
    assert hits[0].get_attribute("title") == tiny.images[4]
    assert hits[0].find_element(By.CSS_SELECTOR, ".score").text == "1.000"


def test_a_bad_query_shows_the_servers_message(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = page.find_element(By.ID, "query")
    box.clear()
    box.send_keys("a car")
    # Past the input's own limit (which the browser enforces): the server refuses and the page says why.
    page.execute_script("const k = document.getElementById('k'); k.removeAttribute('max'); k.value = '500'")
    page.execute_script("document.getElementById('text-form').requestSubmit()")
    WebDriverWait(page, 10).until(lambda d: d.find_element(By.ID, "results").get_attribute("data-state") == "error")
    status = page.find_element(By.ID, "status")
    assert "k must be from 1 to 100, got 500" in status.text and "error" in status.get_attribute("class")


def test_a_link_with_a_query_runs_it_when_the_page_opens(page, searcher):
    from selenium.webdriver.common.by import By

    address = page.current_url.split("/")[2]
    page.get(f"http://{address}/?q=a+grey+road&k=3")
    hits = _wait_for_results(page)
    assert page.find_element(By.ID, "query").get_attribute("value") == "a grey road"
    assert [hit.get_attribute("title") for hit in hits] == [hit.path for hit in searcher.by_text("a grey road", k=3)]


def test_the_page_works_under_its_content_security_policy(page):
    """Everything above ran under the server's CSP (only this server's files); the browser refused nothing."""
    address = page.current_url.split("/")[2]
    page.get(f"http://{address}/?q=a+red+square&k=2")
    assert len(_wait_for_results(page)) == 2
    refused = [entry["message"] for entry in page.get_log("browser") if "Content Security Policy" in entry["message"]]
    assert refused == []
