"""The Studio in a real browser: Debian's chromium, driven by Playwright for Python, against
a real daemon (real nsjail). One daemon (the session's shared one) and one browser for the
whole tier; each test gets a fresh browser context (its own sessionStorage).

Playwright cannot download its own browsers here, so it drives `/usr/bin/chromium`
(`scripts/setup.sh` installs it). In CI (CI=true) a missing chromium fails the run; elsewhere
the tier is skipped with the reason. Each test writes screenshots of the pages it visits to
`tests/ui/screenshots/` (not committed)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sandboxd.client import SyncClient
from tests.conftest import IN_CI
from tests.daemon import Daemon

CHROMIUM = Path(os.environ.get("SANDBOXD_TEST_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path(__file__).parent / "screenshots"
TIMEOUT_MS = 20_000


def browser_problem() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; scripts/setup.sh does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed: {exc}"
    return None


PROBLEM = browser_problem()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    mine = [i for i in items if i.path.is_relative_to(here)]
    if not mine or PROBLEM is None:
        return
    if IN_CI:
        raise pytest.UsageError(f"CI requires a browser for tests/ui, but {PROBLEM}")
    for item in mine:
        item.add_marker(pytest.mark.skip(reason=PROBLEM))


@pytest.fixture(scope="package")  # not session: Playwright's sync API holds an event loop
def browser() -> Iterator[Any]:  # in this thread, which the async tests after this tier need
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # root (as the tests run) needs chromium's own sandbox off; the page is ours anyway
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


class Studio:
    """A browser tab on the daemon's Studio, and helpers the tests share."""

    def __init__(self, page: Any, daemon: Daemon, name: str) -> None:
        self.page = page
        self.daemon = daemon
        self.name = name
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.set_default_timeout(TIMEOUT_MS)

    def url(self, path: str = "") -> str:
        return f"{self.daemon.url}/ui/{path}"

    def sign_in(self, token: str | None = None, path: str = "") -> None:
        self.page.goto(self.url(path))
        self.page.fill("input[name=token]", token if token is not None else self.daemon.token)
        self.page.click("button:has-text('Sign in')")
        self.page.wait_for_selector("nav")

    def open(self, path: str) -> None:
        self.page.goto(self.url(path))
        self.page.wait_for_selector("main h1")

    def shot(self, what: str) -> Path:
        SHOTS.mkdir(exist_ok=True)
        path = SHOTS / f"{self.name}-{what}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def xss(self) -> Any:
        return self.page.evaluate("() => window.__xss")


@pytest.fixture
def studio(browser: Any, daemon: Daemon, request: pytest.FixtureRequest) -> Iterator[Studio]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    s = Studio(page, daemon, request.node.name)
    yield s
    context.close()
    assert s.errors == [], s.errors  # no script error on any page the test opened


T = TypeVar("T")


def with_client(daemon: Daemon, fn: Callable[[SyncClient], T], token: str | None = None) -> T:
    """`fn(client)` on a thread of its own: Playwright's sync API holds an event loop on the
    test's thread, where the sync client cannot run its own."""

    def call() -> T:
        with daemon.client(token) as c:
            return fn(c)

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result(timeout=120)
