"""The console in a real browser: Debian's Chromium (tests/browser.py) against the Procfile's console
under gunicorn, with a real summaries worker and a real callbacks worker delivering to a real HTTP
receiver on loopback, all on the test services. What a person sees, and what the database then says.

One set of servers and one browser for the module (starting them is most of its time). The tables
are emptied once, before the workers start; each test makes accounts and summaries of its own and
looks only at those.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import text

from tests.browser import Browser, chrome
from tests.console_client import PASSWORD, make_user
from tests.processes import celery_worker, console_server, running, stopped, wait_for
from tests.receiver import Receiver, Reply
from tests.support import TABLES, make_account, require_debian_program, snapshot, summary_in

pytestmark = pytest.mark.slow

OPERATOR, VIEWER = "olivia", "victor"
# The callbacks worker may send to loopback (the receiver); a 404 fails a delivery at its first attempt.
WORKER_ENV = {"CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8", "CALLBACK_MAX_ATTEMPTS": "3",
              "CALLBACK_BACKOFF_INITIAL_S": "0.2", "CALLBACK_BACKOFF_MAX_S": "3", "CALLBACK_CONNECT_TIMEOUT_S": "1",
              "CALLBACK_READ_TIMEOUT_S": "1", "CALLBACK_CIRCUIT_THRESHOLD": "50"}
TITLE = " · Call Feedback Summaries"
NAV = [("Overview", "/"), ("Summaries", "/summaries"), ("Deliveries", "/deliveries"),
       ("Destinations", "/destinations"), ("Accounts", "/accounts"), ("Purge", "/purge")]


# --- the servers, the receiver, the browser: once for the module ---

@pytest.fixture(scope="module")
def db(service_urls):
    """The test database, emptied once for this module (and Redis with it, before any worker starts)."""
    import redis

    from shared.platform.db import get_engine

    engine = get_engine()
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    client = redis.Redis.from_url(service_urls["redis"])
    client.flushdb()
    client.close()
    make_user(engine, OPERATOR, "operator")
    make_user(engine, VIEWER, "viewer")
    return engine


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def origin(db, tmp_path_factory):
    """The console's base URL; a summaries worker and a callbacks worker run behind it."""
    log_dir = tmp_path_factory.mktemp("console-browser")
    started = [celery_worker(log_dir, "console-summaries", queues="summaries", concurrency=1, env=WORKER_ENV),
               celery_worker(log_dir, "console-callbacks", queues="callbacks", concurrency=8, env=WORKER_ENV,
                             pool="threads")]
    try:
        process, base_url = console_server(log_dir, env=WORKER_ENV)
        started.append(process)
        yield base_url
    finally:
        for process in started:
            process.stop()


@pytest.fixture(scope="module")
def browser(origin):
    found = running(chrome(require_debian_program("chromium"), require_debian_program("chromedriver")))
    found.origin = origin
    yield found
    found.stop()
    stopped(found)


# --- what a person does ---

def open_page(browser: Browser, path: str) -> None:
    browser.driver.get(browser.origin + path)


def text_of(browser: Browser, selector: str) -> str:
    return browser.driver.find_element(By.CSS_SELECTOR, selector).text


def go(browser: Browser, element) -> None:
    """Click what leads to another page (a link, a form's button) and wait until the browser shows it:
    a click returns once it is dispatched, not once the page it asked for is there."""
    page = browser.driver.find_element(By.TAG_NAME, "html")
    element.click()
    loaded(browser, page)


def _gone(page):
    """staleness_of, also when chromedriver, asked in the middle of the navigation, answers that the
    node "does not belong to the document" (an unknown error, not a stale element: seen in a full run)."""
    stale = staleness_of(page)

    def predicate(driver) -> bool:
        try:
            return stale(driver)
        except WebDriverException as error:
            if "does not belong to the document" in str(error):
                return True
            raise

    return predicate


def loaded(browser: Browser, page, timeout_s: float = 60) -> None:
    """Wait until `page` (its html element) is gone and the page after it has loaded in full."""
    WebDriverWait(browser.driver, timeout_s, 0.05).until(_gone(page))
    WebDriverWait(browser.driver, timeout_s, 0.05).until(
        lambda driver: driver.execute_script("return document.readyState") == "complete")


def button(browser: Browser, label: str):
    return browser.driver.find_element(By.XPATH, f"//button[normalize-space()={label!r}]")


def buttons(browser: Browser, label: str) -> list:
    return browser.driver.find_elements(By.XPATH, f"//button[normalize-space()={label!r}]")


def sign_in(browser: Browser, name: str, password: str = PASSWORD) -> None:
    """A fresh session (no cookie), then the sign-in form, filled in and sent."""
    open_page(browser, "/healthz")
    browser.driver.delete_all_cookies()
    open_page(browser, "/sign-in")
    fill_sign_in(browser, name, password)


def fill_sign_in(browser: Browser, name: str, password: str) -> None:
    driver = browser.driver
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(password)
    go(browser, button(browser, "Sign in"))


def path_and_query(browser: Browser) -> tuple[str, dict[str, str]]:
    parts = urlsplit(browser.driver.current_url)
    return parts.path, {name: values[0] for name, values in parse_qs(parts.query).items()}


def submit_form(browser: Browser, action: str, fields: dict[str, str]) -> None:
    """A form put into the page the browser shows, and sent: a POST as the browser sends any form
    (the page's cookie, its Origin), with exactly these fields."""
    page = browser.driver.find_element(By.TAG_NAME, "html")
    browser.driver.execute_script("""
        const form = document.createElement("form");
        form.method = "post";
        form.action = arguments[0];
        for (const [name, value] of Object.entries(arguments[1])) {
            const input = document.createElement("input");
            input.type = "hidden"; input.name = name; input.value = value;
            form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();""", action, fields)
    loaded(browser, page)


def fetch_post(browser: Browser, path: str, fields: dict[str, str]) -> tuple[int, str]:
    """A POST by the page's own script, with its cookie (fetch, credentials same-origin): status, body."""
    return tuple(browser.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: "POST", credentials: "same-origin", body: new URLSearchParams(arguments[1])})
            .then(r => r.text().then(t => done([r.status, t])))
            .catch(e => done([0, String(e)]));""", path, fields))


def page_csrf(browser: Browser) -> str:
    return browser.driver.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")


def no_alert(browser: Browser) -> bool:
    try:
        browser.driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


# --- what the database says ---

def status_of(db, sid: str) -> str:
    with db.connect() as connection:
        return connection.scalar(text("SELECT status FROM feedback_summaries WHERE sid = :s"), {"s": sid})


def events_of(db, sid: str) -> list[tuple]:
    with db.connect() as connection:
        return [tuple(row) for row in connection.execute(
            text("SELECT kind, actor, at FROM summary_events WHERE summary_sid = :s ORDER BY at, id"), {"s": sid})]


def deliveries_of(db, sids: list[str]) -> dict[str, dict]:
    with db.connect() as connection:
        rows = connection.execute(text("SELECT * FROM callback_deliveries WHERE summary_sid = ANY(:s)"),
                                  {"s": list(sids)})
        return {row.summary_sid: row._asdict() for row in rows}


def computed_with_callback(db, account, url: str, count: int) -> list[str]:
    """Summaries created and left to the real summaries worker, which completes them and hands their
    status callback to the callbacks worker."""
    from shared.platform.queue import enqueue_summary

    sids = [summary_in(db, account, "queued", status_callback=url) for _ in range(count)]
    for sid in sids:
        assert enqueue_summary(sid)
    return sids


def settled(db, sids: list[str], state: str, timeout_s: float = 30) -> dict[str, dict]:
    def done():
        found = deliveries_of(db, sids)
        return found if len(found) == len(sids) and all(d["state"] == state for d in found.values()) else None

    return wait_for(done, timeout_s, 0.2, f"{len(sids)} deliveries to be {state}")


# --- the tests ---

def test_an_operator_signs_in_through_the_form_and_lands_on_the_overview(browser):
    open_page(browser, "/healthz")
    browser.driver.delete_all_cookies()
    open_page(browser, "/")
    path, query = path_and_query(browser)
    assert (path, query) == ("/sign-in", {"next": "/"})  # nothing but the sign-in form without a session
    assert browser.driver.find_elements(By.CSS_SELECTOR, "header nav") == []

    fill_sign_in(browser, OPERATOR, "not the password")
    assert text_of(browser, "[role=alert]") == "Wrong name or password."
    assert browser.status_of(browser.origin + "/sign-in") == 401

    fill_sign_in(browser, OPERATOR, PASSWORD)
    assert path_and_query(browser) == ("/", {})
    assert text_of(browser, "main h1") == "Overview"
    assert browser.driver.title == "Overview" + TITLE
    assert text_of(browser, "header form.who span") == f"{OPERATOR} (operator)"
    for card in ("Queues", "Summaries", "Deliveries", "Processes"):
        assert browser.driver.find_element(By.XPATH, f"//article/h2[normalize-space()='{card}']")


def test_an_operator_finds_a_failed_summary_by_the_filters_retries_it_and_sees_it_complete(browser, db):
    account, other = make_account(db), make_account(db)
    failed = summary_in(db, account, "failed", reason="the database cancelled the aggregate (statement timeout)")
    summary_in(db, account, "completed")
    summary_in(db, other, "failed")
    sign_in(browser, OPERATOR)

    go(browser, browser.driver.find_element(By.LINK_TEXT, "Summaries"))
    Select(browser.driver.find_element(By.NAME, "status")).select_by_visible_text("failed")
    browser.driver.find_element(By.NAME, "account").send_keys(account.sid)
    go(browser, button(browser, "Filter"))

    path, query = path_and_query(browser)
    assert path == "/summaries" and query == {"status": "failed", "account": account.sid}  # a view to bookmark
    listed = [link.text for link in browser.driver.find_elements(By.CSS_SELECTOR, "table.list tbody td:first-child a")]
    assert listed == [failed]
    assert text_of(browser, "table.list tbody .reason") == "the database cancelled the aggregate (statement timeout)"

    go(browser, browser.driver.find_element(By.LINK_TEXT, failed))
    assert path_and_query(browser)[0] == f"/summaries/{failed}"
    assert text_of(browser, "h1 .status") == "failed"
    go(browser, button(browser, "Retry this summary"))

    assert text_of(browser, "p.notice[role=status]") == "retry: queued"
    assert path_and_query(browser)[0] == f"/summaries/{failed}"

    def completed():
        browser.driver.refresh()
        return text_of(browser, "h1 .status") == "completed"

    wait_for(completed, 30, 0.5, "the summary's page to say completed")
    assert buttons(browser, "Retry this summary") == []
    assert status_of(db, failed) == "completed"
    actors = [actor for _, actor, _ in events_of(db, failed)]
    assert f"console:{OPERATOR}" in actors, actors  # the timeline says who retried it
    by = [cell.text for cell in browser.driver.find_elements(By.CSS_SELECTOR, "table.timeline tbody td:nth-child(3)")]
    assert f"console:{OPERATOR}" in by


def test_a_viewer_sees_no_action_and_a_retry_it_posts_anyway_is_refused(browser, db):
    account = make_account(db)
    failed = summary_in(db, account, "failed")
    before = events_of(db, failed)
    sign_in(browser, VIEWER)
    assert text_of(browser, "header form.who span") == f"{VIEWER} (viewer)"

    open_page(browser, f"/summaries/{failed}")
    assert text_of(browser, "h1 .status") == "failed"
    assert browser.driver.find_elements(By.CSS_SELECTOR, ".actions, form[action$='/retry']") == []
    assert buttons(browser, "Retry this summary") == []
    open_page(browser, f"/deliveries?status=failed&account={account.sid}")
    assert browser.driver.find_elements(By.CSS_SELECTOR, "form.bulk") == []

    # The form the operator would have, with this session's own token, put into the viewer's page.
    open_page(browser, f"/summaries/{failed}")
    mark = browser.mark()
    submit_form(browser, f"/summaries/{failed}/retry", {"csrf": page_csrf(browser)})
    assert text_of(browser, "main h1") == "403"
    assert browser.status_of(f"{browser.origin}/summaries/{failed}/retry", mark) == 403
    assert text_of(browser, "p.problem") == "Your role (viewer) may look, not act: nothing was changed."
    assert status_of(db, failed) == "failed" and events_of(db, failed) == before

    # And by the page's script, the same.
    open_page(browser, f"/summaries/{failed}")
    status, body = fetch_post(browser, f"/summaries/{failed}/retry", {"csrf": page_csrf(browser)})
    assert status == 403 and "may look, not act" in body
    assert status_of(db, failed) == "failed" and events_of(db, failed) == before


def test_bulk_redelivery_shows_a_dry_run_then_sends_at_the_rate_asked_and_the_receiver_gets_them(browser, db,
                                                                                                  receiver):
    count, rate = 5, 2.0
    account = make_account(db)
    url = receiver.script("/bulk", Reply(404, body=b"no such hook"))
    sids = computed_with_callback(db, account, url, count)
    settled(db, sids, "failed")
    assert len(receiver.requests_to("/bulk")) == count
    receiver.script("/bulk", Reply(200))  # the receiver is fixed

    sign_in(browser, OPERATOR)
    go(browser, browser.driver.find_element(By.LINK_TEXT, "Deliveries"))
    Select(browser.driver.find_element(By.NAME, "status")).select_by_visible_text("failed")
    browser.driver.find_element(By.NAME, "host").send_keys("127.0.0.1")
    browser.driver.find_element(By.NAME, "account").send_keys(account.sid)
    go(browser, button(browser, "Filter"))
    path, query = path_and_query(browser)
    assert path == "/deliveries" and query == {"status": "failed", "host": "127.0.0.1", "account": account.sid}
    listed = {link.text for link in browser.driver.find_elements(By.CSS_SELECTOR, "table.list tbody td:first-child a")}
    assert listed == set(sids)

    # The dry run: how many, which, and nothing sent.
    go(browser, button(browser, "Redeliver every failed delivery of this filter…"))
    assert text_of(browser, "main h1") == "Redeliver: dry run"
    assert text_of(browser, "p.count strong") == str(count)
    assert "Nothing has been sent." in text_of(browser, "p.count")
    shown = [cell.text for cell in browser.driver.find_elements(By.CSS_SELECTOR, "table.list tbody td:first-child")]
    assert sorted(shown) == sorted(sids)
    assert all(url in row.text for row in browser.driver.find_elements(By.CSS_SELECTOR, "table.list tbody tr"))
    assert {d["state"] for d in deliveries_of(db, sids).values()} == {"failed"}
    assert len(receiver.requests_to("/bulk")) == count

    field = browser.driver.find_element(By.NAME, "rate")
    field.clear()
    field.send_keys(f"{rate:g}")
    mark = browser.mark()
    started = time.monotonic()
    go(browser, button(browser, f"Send {count} again"))
    elapsed = time.monotonic() - started

    assert text_of(browser, "#finished") == "Finished."
    lines = [item.text for item in browser.driver.find_elements(By.CSS_SELECTOR, "ol.progress li")]
    parsed = [re.fullmatch(r"(\d+)/(\d+) (FS[0-9a-f]{32}) sent again", line) for line in lines]
    assert all(parsed), lines
    assert [(int(m[1]), int(m[2])) for m in parsed] == [(k, count) for k in range(1, count + 1)]
    assert sorted(m[3] for m in parsed) == sorted(sids)
    # Streamed: the browser had the page's first bytes at once and its last when the last was sent.
    (request,) = [params["requestId"] for params in browser.events("Network.requestWillBeSent", mark)
                  if params["request"]["url"] == f"{browser.origin}/deliveries/redeliver/send"]
    arrived = {method: [params["timestamp"] for params in browser.events(method, mark)
                        if params["requestId"] == request]
               for method in ("Network.responseReceived", "Network.dataReceived", "Network.loadingFinished")}
    assert len(arrived["Network.dataReceived"]) > 1, arrived
    assert arrived["Network.loadingFinished"][0] - arrived["Network.responseReceived"][0] >= (count - 1) / rate - 0.1
    # The rate cap: count deliveries at `rate` a second take at least (count - 1) / rate seconds.
    assert elapsed >= (count - 1) / rate, elapsed
    redelivered = sorted(at for sid in sids for kind, actor, at in events_of(db, sid)
                         if kind == "callback redelivered" and actor == f"console:{OPERATOR}")
    assert len(redelivered) == count
    assert (redelivered[-1] - redelivered[0]).total_seconds() >= (count - 1) / rate - 0.05, redelivered

    # The callbacks worker sends each again, with the event's idempotency token of the first time.
    final = settled(db, sids, "delivered")
    assert all(d["redeliveries"] == 1 for d in final.values())
    got = receiver.requests_to("/bulk")
    assert len(got) == 2 * count
    for sid in sids:
        tokens = {r.headers["I-Twilio-Idempotency-Token"] for r in got if r.form["FeedbackSummarySid"] == sid}
        assert len(tokens) == 1, sid
    again = [r.at for r in got[count:]]
    assert again[-1] - again[0] >= (count - 2) / rate  # spaced by the cap (less a step of a worker's jitter)


def test_a_receivers_markup_in_a_response_excerpt_is_shown_as_text_and_never_runs(browser, db, receiver):
    markup = ("<script>document.title='pwned'</script><script>alert('pwned')</script>"
              "<img src=x onerror=\"document.title='pwned'\">")
    account = make_account(db)
    url = receiver.script("/markup", Reply(404, {"Content-Type": "text/html"}, body=markup.encode()))
    (sid,) = computed_with_callback(db, account, url, 1)
    settled(db, [sid], "failed")

    sign_in(browser, OPERATOR)
    mark = browser.mark()
    open_page(browser, f"/summaries/{sid}")
    assert no_alert(browser)
    assert browser.driver.title == sid + TITLE
    assert browser.driver.execute_script("return document.title") == sid + TITLE
    excerpts = [pre.text for pre in browser.driver.find_elements(By.CSS_SELECTOR, "pre.excerpt")]
    assert excerpts == [markup]  # the receiver's text, every character of it, as text
    assert browser.driver.find_elements(By.CSS_SELECTOR, "main script, main img") == []
    assert [url for url in browser.requested(mark) if urlsplit(url).path.endswith("/x")] == []
    refused = [entry["message"] for entry in browser.console_messages(mark) if "Content Security Policy" in
               entry["message"] or "pwned" in entry["message"]]
    assert refused == []  # not even blocked by the policy: it never was markup in the page


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(browser, db, receiver):
    account = make_account(db)
    failed = summary_in(db, account, "failed")
    url = receiver.script("/csrf", Reply(404))
    (finished,) = computed_with_callback(db, account, url, 1)
    settled(db, [finished], "failed")
    sign_in(browser, OPERATOR)
    open_page(browser, f"/summaries/{failed}")
    token = page_csrf(browser)
    before = snapshot(db)
    sent = len(receiver.requests_to("/csrf"))

    # The retry form with its token taken out, sent from the console's own page.
    browser.driver.execute_script(
        "document.querySelector(\"form[action$='/retry'] input[name=csrf]\").remove()")
    mark = browser.mark()
    go(browser, button(browser, "Retry this summary"))
    assert text_of(browser, "main h1") == "403"
    assert browser.status_of(f"{browser.origin}/summaries/{failed}/retry", mark) == 403
    assert "no valid CSRF token" in text_of(browser, "p.problem")

    # The page's script: no token, then a wrong one.
    open_page(browser, "/deliveries?status=failed")
    selection = {"status": "failed", "account": account.sid, "rate": "20"}
    for fields in (selection, {**selection, "csrf": token[::-1]}):
        status, body = fetch_post(browser, "/deliveries/redeliver/send", fields)
        assert status == 403 and "no valid CSRF token" in body

    # Another site's page (same site, another origin: the cookie goes along) with the right token, as
    # it is and saying no referrer (its POST's Origin is then "null").
    for number, head in enumerate(("", '<meta name="referrer" content="no-referrer">')):
        attack = receiver.script(f"/attack{number}", Reply(200, {"Content-Type": "text/html; charset=utf-8"}, body=(
            f'<!doctype html>{head}<form method="post" action="{browser.origin}/summaries/{finished}/redeliver">'
            f'<input type="hidden" name="csrf" value="{token}"><button type="submit">Win a prize</button></form>'
        ).encode()))
        browser.driver.get(attack)
        mark = browser.mark()
        go(browser, button(browser, "Win a prize"))
        assert urlsplit(browser.driver.current_url).netloc == urlsplit(browser.origin).netloc
        assert browser.status_of(f"{browser.origin}/summaries/{finished}/redeliver", mark) == 403
        assert text_of(browser, "p.problem") == "This form came from another site; nothing was changed."

    assert snapshot(db) == before
    assert status_of(db, failed) == "failed" and deliveries_of(db, [finished])[finished]["state"] == "failed"
    time.sleep(0.5)  # a redelivery would have reached the receiver by now
    assert len(receiver.requests_to("/csrf")) == sent


def test_no_request_leaves_the_consoles_origin_on_a_tour_of_every_page(browser, db):
    """The demo's data (`summaries up --demo`): every page has something to show, a receiver's markup
    and other hosts' URLs among it."""
    from cli.demo import FAILING_HOST, add_demo_data, open_demo_circuit
    from shared.platform.config import get_settings

    demo = make_account(db, name="Demo")
    sub = make_account(db, parent=demo, name="Demo sub")
    add_demo_data(db, demo, sub, get_settings())
    open_demo_circuit(demo, get_settings())
    with db.connect() as connection:
        failing = connection.scalar(text("SELECT summary_sid FROM callback_deliveries WHERE host = :h"),
                                    {"h": FAILING_HOST})
    driver = browser.driver
    sign_in(browser, OPERATOR)
    mark = browser.mark()
    visited = []

    def click(locator: tuple[str, str]) -> None:
        go(browser, driver.find_element(*locator))
        visited.append(driver.current_url)
        assert driver.find_elements(By.CSS_SELECTOR, "main h1"), driver.current_url

    for label in ("Summaries", "Deliveries", "Destinations", "Accounts", "Purge", "Overview"):
        click((By.CSS_SELECTOR, f"header nav a[href='{dict(NAV)[label]}']"))
    click((By.LINK_TEXT, "7d"))
    click((By.CSS_SELECTOR, "a[href='/summaries?status=failed']"))  # the overview's failed summaries
    click((By.CSS_SELECTOR, "table.list tbody td:first-child a"))
    click((By.CSS_SELECTOR, "dd a"))  # its account
    click((By.LINK_TEXT, "its deliveries"))
    open_page(browser, f"/summaries/{failing}")
    visited.append(driver.current_url)
    assert FAILING_HOST in text_of(browser, "dl.facts")
    click((By.LINK_TEXT, "Destinations"))
    click((By.LINK_TEXT, "failed deliveries"))
    click((By.XPATH, "//button[starts-with(normalize-space(), 'Redeliver every failed delivery')]"))
    assert text_of(browser, "main h1") == "Redeliver: dry run"
    click((By.LINK_TEXT, "Back to the deliveries"))
    click((By.LINK_TEXT, "Purge"))
    click((By.XPATH, "//button[normalize-space()='Count them']"))
    click((By.LINK_TEXT, "Accounts"))
    click((By.CSS_SELECTOR, "table.list tbody td:first-child a"))
    click((By.XPATH, "//button[normalize-space()='Sign out']"))
    assert path_and_query(browser)[0] == "/sign-in"

    requested = browser.requested(mark)
    assert browser.origin + "/static/console.css" in requested and browser.origin + "/static/console.js" in requested
    elsewhere = [url for url in requested if not url.startswith(browser.origin + "/") and not url.startswith("data:")]
    assert elsewhere == [], elsewhere
    problems = [entry for entry in browser.console_messages(mark) if entry["level"] in ("SEVERE", "WARNING")]
    assert problems == [], problems  # no policy violation, no failed load, no script error
    assert len(visited) >= 18


def test_the_pages_work_without_javascript(origin, db):
    """A browser that runs no script signs in, filters, and retries: every page is plain HTML forms."""
    account = make_account(db)
    failed = summary_in(db, account, "failed")
    plain = running(chrome(require_debian_program("chromium"), require_debian_program("chromedriver"),
                           javascript=False))
    try:
        plain.origin = origin
        plain.driver.get("data:text/html,<noscript>no script</noscript><script>document.write('script')</script>")
        assert text_of(plain, "body") == "no script"  # this browser runs none indeed
        open_page(plain, "/summaries")
        fill_sign_in(plain, OPERATOR, PASSWORD)
        assert path_and_query(plain)[0] == "/summaries"  # where it was going
        Select(plain.driver.find_element(By.NAME, "status")).select_by_visible_text("failed")
        plain.driver.find_element(By.NAME, "account").send_keys(account.sid)
        go(plain, button(plain, "Filter"))
        go(plain, plain.driver.find_element(By.LINK_TEXT, failed))
        go(plain, button(plain, "Retry this summary"))
        assert text_of(plain, "p.notice") == "retry: queued"
        assert status_of(db, failed) in ("queued", "in-progress", "completed")
    finally:
        plain.stop()
        stopped(plain)
