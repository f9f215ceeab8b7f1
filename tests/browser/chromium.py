"""Debian's Chromium through Playwright, for the browser tests. Chromium: env HANDOFF_CHROMIUM, else `chromium`
on the PATH. Without one the test is skipped, unless HANDOFF_REQUIRE_BROWSER=1 (CI), where a missing browser (or
the playwright package) is a failure."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connections

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    path = os.environ.get("HANDOFF_CHROMIUM") or shutil.which("chromium")
    if path and Path(path).exists():
        return path
    why = f"no Chromium found (HANDOFF_CHROMIUM={os.environ.get('HANDOFF_CHROMIUM', '')!r}, none on PATH)"
    if os.environ.get("HANDOFF_REQUIRE_BROWSER") == "1":
        pytest.fail(why + " and HANDOFF_REQUIRE_BROWSER=1")
    pytest.skip(why)


@contextmanager
def chromium_page(executable: str):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # the dev extra is not installed
        if os.environ.get("HANDOFF_REQUIRE_BROWSER") == "1":
            pytest.fail("the playwright package is not installed and HANDOFF_REQUIRE_BROWSER=1")
        pytest.skip("the playwright package is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()
            # Playwright runs this code in its own context (greenlet), where Django opened a second database
            # connection; close it here, or it outlives the test and blocks dropping the test database
            connections.close_all()
