"""The console's pictures in docs/console/ (`make screenshots`): a demo system of its own, a headless
browser through every page, one PNG per page.

It starts `summaries up --demo` with a fresh data directory (its own embedded PostgreSQL and Redis,
whatever DATABASE_URL and REDIS_URL say) on free ports, reads the demo operator's password from the
banner, signs in through the form with Debian's chromium (chromedriver, through Selenium) and saves
each page, as tall as its content; only a complete set replaces the pictures. Nothing is sent or
deleted: the bulk redelivery stops at its dry run. Whatever happens, `up` is then stopped with Ctrl-C's signal (killed if it does not stop), and
every process that still runs for this data directory is killed: none is left behind.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "console"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT, MAX_HEIGHT = 1400, 900, 6000
BANNER_TIMEOUT_S = 600  # the first start creates the database and seeds 25,000 calls
STOP_TIMEOUT_S = 60  # `up` gives each of its processes 20 s
SWEEP_WAIT_S = 90  # the scheduler's first sweep comes SWEEP_INTERVAL_S (30 s) after it starts
BANNER = re.compile(r"sign in as\s+(\S+), password (\S+)")
CONSOLE_URL = re.compile(r"console is at (http://\S+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Up:
    """`summaries up --demo` as a child: its output kept (the last lines, shown if something fails)."""

    def __init__(self, data_dir: Path):
        env = {name: value for name, value in os.environ.items()
               if name not in ("DATABASE_URL", "REDIS_URL", "SUMMARIES_EMBEDDED", "SUMMARIES_DATA_DIR")}
        env.update(LOG_FORMAT="text", PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "cli.main", "--data-dir", str(data_dir), "up", "--demo",
                   "--port", str(free_port()), "--console-port", str(free_port())]
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.banner = threading.Event()
        self.console_url = self.user = self.password = None
        # A session of its own: a Ctrl-C at the terminal reaches this script, which stops `up` below.
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
        threading.Thread(target=self._read, name="up-output", daemon=True).start()

    def _read(self) -> None:
        # Read to the end, always: `up` must never block on a full pipe, least of all while it stops.
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if found := CONSOLE_URL.search(line):
                self.console_url = found.group(1)
            if found := BANNER.search(line):
                self.user, self.password = found.groups()
                self.banner.set()

    def wait_banner(self) -> None:
        deadline = time.monotonic() + BANNER_TIMEOUT_S
        while not self.banner.wait(0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                why = "timed out" if self.process.poll() is None else f"exited {self.process.returncode}"
                raise RuntimeError(f"`summaries up --demo` did not print its banner ({why}):\n{self.tail()}")
        if not self.console_url:
            raise RuntimeError("the banner names no console address:\n" + self.tail())

    def tail(self, count: int = 40) -> str:
        return "\n".join(list(self.lines)[-count:])

    def stop(self) -> None:
        """Ctrl-C's signal, and a wait for `up` to stop everything it started; killed if it does not."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(f"summaries up did not stop in {STOP_TIMEOUT_S} s; killing it", file=sys.stderr)
                self.process.kill()
                self.process.wait()


def ours(marker: str) -> list[int]:
    """The processes that name our temporary directory in their command line or environment: `up`'s
    children and servers (their SUMMARIES_DATA_DIR), chromium (its profile)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            text = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker.encode() in text:
            found.append(int(entry.name))
    return found


def leave_nothing(marker: str, grace_s: float = 15) -> None:
    """Wait a little for what is stopping (PostgreSQL stops as `up` exits), then kill what remains."""
    deadline = time.monotonic() + grace_s
    while (left := ours(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        print(f"process {pid} still ran for {marker}; killing it", file=sys.stderr)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class Browser:
    def __init__(self, base_url: str, profile: Path, pictures: Path):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        self.base_url, self.pictures = base_url, pictures
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.written: list[Path] = []

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)
        self.check()
        if path != "/sign-in" and urlsplit(self.driver.current_url).path == "/sign-in":
            raise RuntimeError(f"{path} sent the browser to sign in: the session did not hold")

    def check(self) -> None:
        """A page of the console, not its error page."""
        if re.match(r"\d{3} ", self.driver.title):
            problem = self.driver.find_elements(By.CSS_SELECTOR, "p.problem")
            raise RuntimeError(f"{self.driver.current_url} answered {self.driver.title.split()[0]}: "
                               f"{problem[0].text if problem else '(no message)'}")

    def submit(self, css: str, arrived: str) -> None:
        """Press a form's button, and wait for the page it leads to (a CSS selector on it)."""
        self.driver.find_element(By.CSS_SELECTOR, css).click()
        WebDriverWait(self.driver, 30).until(lambda driver: driver.find_elements(By.CSS_SELECTOR, arrived)
                                             or re.match(r"\d{3} ", driver.title))
        self.check()

    def link(self, css: str) -> str:
        """The path of the first link that matches."""
        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        if not found:
            raise RuntimeError(f"{self.driver.current_url} has no link {css}")
        return found[0].get_attribute("href").removeprefix(self.base_url)

    def shot(self, name: str) -> None:
        """The whole page: the window as tall as the document (within reason), then a screenshot."""
        self.driver.set_window_size(WIDTH, HEIGHT)
        chrome = self.driver.execute_script("return window.outerHeight - window.innerHeight") or 0
        for _ in range(2):  # a taller window can change the layout (a scroll bar gone): measure again
            height = self.driver.execute_script("return document.body.scrollHeight")
            self.driver.set_window_size(WIDTH, min(max(HEIGHT, height + chrome), MAX_HEIGHT))
        path = self.pictures / f"{name}.png"
        # As chromium writes it: zlib's best level saved nothing on these (0.2%), and pillow is not a dependency.
        path.write_bytes(self.driver.get_screenshot_as_png())
        self.written.append(path)
        print(f"  {name}.png  ({path.stat().st_size // 1024} KiB)", flush=True)

    def quit(self) -> None:
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001 - chromedriver already gone: stop what remains of it
            self.driver.service.stop()


def _settled(driver) -> bool:
    processes = driver.find_element(By.XPATH, "//article[h2='Processes']").text
    return "swept" in processes and "asking them" not in processes and "silent" not in processes


def tour(browser: Browser, user: str, password: str) -> None:
    driver = browser.driver
    browser.open("/sign-in")
    browser.shot("sign-in")
    driver.find_element(By.NAME, "name").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    browser.submit("form.sign-in button[type=submit]", "form.who, form.sign-in p.problem")
    if not driver.find_elements(By.CSS_SELECTOR, "form.who"):
        raise RuntimeError(f"signing in as {user} failed: {driver.find_element(By.CSS_SELECTOR, 'p.problem').text}")

    # Until the scheduler's first sweep and the console's first ping of the workers the overview says
    # so ("no sweep recorded yet", "asking them"): wait until it shows them alive.
    deadline = time.monotonic() + SWEEP_WAIT_S
    browser.open("/")
    while not _settled(driver) and time.monotonic() < deadline:
        time.sleep(2)
        browser.open("/")
    browser.shot("overview")

    browser.open("/summaries?status=failed")
    browser.shot("summaries-failed")
    browser.open(browser.link("table.list a[href^='/summaries/FS']"))
    browser.shot("summary-failed")

    browser.open("/deliveries?status=failed")
    browser.shot("deliveries-failed")
    failed_delivery = browser.link("table.list a[href^='/summaries/FS']")
    browser.submit("form.bulk button[type=submit]", "p.count")  # the dry run; its Send is never pressed
    browser.shot("redeliver-dry-run")

    browser.open(failed_delivery)
    excerpts = " ".join(pre.text for pre in driver.find_elements(By.CSS_SELECTOR, "pre.excerpt"))
    if "<script>" not in excerpts:
        print("  note: the failed delivery's timeline shows no receiver's markup as text", file=sys.stderr)
    browser.shot("summary-delivery-failed")

    browser.open("/destinations")
    browser.shot("destinations")
    browser.open("/accounts")
    browser.shot("accounts")
    account = driver.find_element(By.XPATH, "//table[contains(@class,'list')]//tr[td[2][normalize-space()='Demo "
                                            "account']]//a[starts-with(@href,'/accounts/AC')]")
    browser.open(account.get_attribute("href").removeprefix(browser.base_url))
    browser.shot("account")

    browser.open("/purge")
    browser.submit("main form[method=get] button[type=submit]", "p.count")  # counts them; deletes nothing
    browser.shot("purge")


def main() -> int:
    started = time.monotonic()
    # A TERM or a closed terminal ends this script through its `finally`, as Ctrl-C does.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, frame: sys.exit(128 + number))
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="cfs-screenshots-"))
    up = browser = None
    try:
        print("starting summaries up --demo with a data directory of its own...", flush=True)
        up = Up(scratch / "data")
        up.wait_banner()
        print(f"the console is at {up.console_url}; signing in as {up.user}", flush=True)
        (scratch / "png").mkdir()
        browser = Browser(up.console_url, scratch / "chromium", scratch / "png")
        tour(browser, up.user, up.password)
        # Only a whole set replaces the pictures: a run that fails half way leaves them as they were.
        for path in browser.written:
            shutil.copyfile(path, OUT / path.name)
    except Exception as error:  # noqa: BLE001 - one message, and `up`'s last lines
        print(f"screenshots: {error}", file=sys.stderr)
        if up is not None and up.banner.is_set():
            print("summaries up's last lines:\n" + up.tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if browser is not None:
            browser.quit()
        if up is not None:
            up.stop()
        leave_nothing(str(scratch))
        shutil.rmtree(scratch, ignore_errors=True)
    written = sum((OUT / path.name).stat().st_size for path in browser.written)
    print(f"{len(browser.written)} screenshots in {OUT.relative_to(ROOT)}/, {written // 1024} KiB, "
          f"in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
