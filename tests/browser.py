"""A real browser for the console's tests: Debian's chromium driven through Debian's chromedriver by
Selenium (both paths given, so selenium-manager never looks for, nor downloads, anything), headless,
with a profile of its own that is deleted when it stops.

Chrome's performance log is on (the Network domain only): a test reads every request the pages made
(`requested()`), and the status of each page the browser loaded (`status_of()`), which WebDriver
itself does not tell. The console log is kept too (`console_messages()`): a Content-Security-Policy
violation or a failed script shows up there.
"""

from __future__ import annotations

import json
import shutil
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

# Headless, no sandbox (CI runs as root in a container), and nothing of Chrome's own on the network:
# no QUIC, no first-run page, no background fetches, no component updates, no sync.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


class Browser:
    """A Chrome and what it has logged so far. Each log is read from the driver once (reading empties
    it there) and kept here, so that any number of checks can look at it; `mark()` is a position in it
    for "since then"."""

    def __init__(self, driver: webdriver.Chrome, profile: str):
        self.driver, self.profile = driver, profile
        self.network: list[dict] = []  # the performance log's messages: {"method": ..., "params": ...}
        self.console: list[dict] = []  # the browser log's entries: {"level", "message", "timestamp"}

    def _read(self) -> None:
        for entry in self.driver.get_log("performance"):
            self.network.append(json.loads(entry["message"])["message"])
        self.console.extend(self.driver.get_log("browser"))

    def mark(self) -> tuple[int, int]:
        """Where the logs end now."""
        self._read()
        return len(self.network), len(self.console)

    def events(self, method: str, since: tuple[int, int] = (0, 0)) -> list[dict]:
        self._read()
        return [event["params"] for event in self.network[since[0]:] if event.get("method") == method]

    def requested(self, since: tuple[int, int] = (0, 0)) -> list[str]:
        """Every URL the pages asked for since `since`: documents, styles, scripts, images, fetches,
        and each hop of a redirect."""
        return [params["request"]["url"] for params in self.events("Network.requestWillBeSent", since)]

    def status_of(self, url: str, since: tuple[int, int] = (0, 0)) -> int | None:
        """The HTTP status of the last response for this URL (a page, a form's POST, a fetch)."""
        statuses = [params["response"]["status"] for params in self.events("Network.responseReceived", since)
                    if params["response"]["url"] == url]
        return statuses[-1] if statuses else None

    def console_messages(self, since: tuple[int, int] = (0, 0)) -> list[dict]:
        self._read()
        return self.console[since[1]:]

    def stop(self) -> None:
        if self.driver is None:
            return
        try:
            self.driver.quit()
        finally:
            self.driver = None
            shutil.rmtree(self.profile, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<Browser profile {self.profile}>"


def chrome(chromium: str, chromedriver: str, width: int = 1280, height: int = 1000,
           javascript: bool = True) -> Browser:
    """A new headless Chromium with a fresh profile (javascript=False: a browser that runs no script,
    to show a page works without)."""
    profile = tempfile.mkdtemp(prefix="cfs-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    options.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    try:
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return Browser(driver, profile)
