"""The Gradio app in a real headless browser (Debian's chromium + chromedriver) against a tiny random-weight
model: the page loads, a prompt goes in, the items table and both images come out.

CI installs chromium (see .ci/run); where it is missing this test fails, it does not skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
from pipeline_fixtures import *  # noqa: F403 (the tiny pipelines)

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PROMPT = "a crosswalk next to a bus station with a ~standing zebra~"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def app_url(tiny_sd15):  # noqa: F405
    from flowcore.frontends.app import build_app
    from flowcore.models.pipelines import patcher_for_pipeline

    app = build_app(tiny_sd15, patcher_for_pipeline(tiny_sd15), steps=2, size=64)  # noqa: F405
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture()
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            f"chromium or chromedriver is missing ({CHROMIUM}, {CHROMEDRIVER}): "
            "`apt-get install -y chromium chromium-driver` (CI does this in .ci/run)."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="flowcore-chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,1600", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(condition, timeout: float = 60.0, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_prompt_in_table_and_both_images_out(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    def find(selector: str):
        return browser.find_elements(By.CSS_SELECTOR, selector)

    # 1. The page loads.
    browser.get(app_url)
    box = wait_for(lambda: find("#prompt textarea"), what="the prompt box")[0]

    # 2. A prompt goes in; the items table comes out.
    box.clear()
    box.send_keys(PROMPT)
    find("#analyze")[0].click()
    wait_for(lambda: "standing zebra" in find("#items")[0].text, what="the items table")
    table = find("#items")[0].text
    assert "crosswalk" in table and "bus station" in table and "patch" in table
    assert "standing zebra" in find("#patch")[0].text

    # 3. Both images come out.
    find("#generate")[0].click()
    images = wait_for(lambda: [e for e in find("#original img, #patched img") if e.get_attribute("src")], what="images")
    wait_for(lambda: len([e for e in find("#original img, #patched img") if e.get_attribute("src")]) == 2)
    assert all(e.get_attribute("src") for e in images)
    wait_for(lambda: "patched" in find("#summary textarea")[0].get_attribute("value"), what="the report")
    browser.save_screenshot(str(tmp_path / "app.png"))
    if os.environ.get("FLOWCORE_SCREENSHOT"):
        browser.save_screenshot(os.environ["FLOWCORE_SCREENSHOT"])
