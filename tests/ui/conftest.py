"""Fixtures for the dashboard and demo tests: the session gateway and a real headless Chromium.

The browser is Debian's `chromium` driven by Playwright (`executable_path`), not a Playwright
download, so the tests run offline on the machines the README's set-up prepares.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"


@dataclass(frozen=True)
class Server:
    """Where the dashboard under test lives and the key its tenant uses."""

    url: str
    api_key: str | None

    def rest(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


@pytest.fixture(scope="session")
def ui_server(gateway) -> Server:
    """The session gateway (tests/fixtures/gateway.py, auth on), as tenant A sees it."""
    return Server(url=gateway.base_url.rstrip("/"), api_key=gateway.key_a)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def memory_name() -> str:
    return f"ui-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium: run the README "
                    "set-up (apt-get install -y chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                      headless=True)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    """A fresh page at 1280x800; any uncaught JavaScript error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(60_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
