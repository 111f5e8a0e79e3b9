"""The console in process: sign-in, sessions and CSRF, roles, each page, each action, and what came
from outside shown as text. The browser tests (tests/test_console_browser.py) drive the same pages in
Chromium; the bench times them on a million summaries."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shared.models import CallbackDelivery, ConsoleUser, FeedbackSummary, SummaryEvent
from tests.console_client import PASSWORD, ConsoleClient, make_user
from tests.support import backdate, summary_in

PAGES = ("/", "/?range=7d", "/summaries", "/summaries?status=failed", "/deliveries", "/deliveries?status=failed",
         "/destinations", "/accounts", "/purge", "/purge?days=1")


@pytest.fixture(autouse=True)
def _no_pings_left_behind():
    """The overview asks the workers from a thread of this process: stopped after each test, or its
    pings (kombu's reply bindings in Redis) would show in the next test's snapshot of Redis."""
    from console import pages

    yield
    pages.stop_asking_workers()


@pytest.fixture
def console(engine, redis_client):
    from console.app import Console

    return Console()


@pytest.fixture
def operator(console, engine):
    make_user(engine, "olivia", "operator")
    client = ConsoleClient(console)
    assert client.sign_in("olivia").status == 303
    return client


@pytest.fixture
def viewer(console, engine):
    make_user(engine, "victor", "viewer")
    client = ConsoleClient(console)
    assert client.sign_in("victor").status == 303
    return client


def status_of(engine, sid: str) -> str:
    with Session(engine) as session:
        return session.get(FeedbackSummary, sid).status


def delivery_for(engine, account, state: str, host: str = "hooks.example.com", excerpt: str | None = "ok") -> str:
    """A summary whose callback went to `host` and ended `state`, as the callbacks worker records it."""
    from cli.demo import _attempts
    from shared.platform.config import get_settings

    sid = summary_in(engine, account, "completed", status_callback=f"https://{host}/cb")
    outcome = {"delivered": ("delivered", 200, None, excerpt), "failed": ("failed", 500, None, excerpt)}[state]
    _attempts(engine, sid, get_settings(), [outcome])
    return sid


def test_every_page_renders_for_a_signed_in_operator(operator, engine, account):
    sid = summary_in(engine, account, "failed")
    delivery_for(engine, account, "failed")
    for path in (*PAGES, f"/summaries/{sid}", f"/accounts/{account.sid}"):
        page = operator.get(path)
        assert page.status == 200, (path, page.body[:2000])


def test_without_a_session_a_page_sends_to_sign_in_and_back_and_a_post_is_refused(console, engine, account):
    make_user(engine, "olivia", "operator")
    client = ConsoleClient(console)
    page = client.get("/summaries?status=failed")
    assert page.status == 303 and page.location == "/sign-in?next=%2Fsummaries%3Fstatus%3Dfailed"
    sid = summary_in(engine, account, "failed")
    client.get("/sign-in")
    assert client.post(f"/summaries/{sid}/retry").status == 403
    assert status_of(engine, sid) == "failed"
    client.get(page.location)
    signed_in = client.post("/sign-in", {"name": "olivia", "password": PASSWORD, "next": "/summaries?status=failed"})
    assert signed_in.status == 303 and signed_in.location == "/summaries?status=failed"


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "https://evil.example/", "javascript:alert(1)",
                                    "/%0d%0aSet-Cookie:x=1", " /x", "http:/evil.example"])
def test_sign_in_never_redirects_to_another_site(console, engine, target):
    make_user(engine, "olivia", "operator")
    client = ConsoleClient(console)
    client.get("/sign-in")
    page = client.post("/sign-in", {"name": "olivia", "password": PASSWORD, "next": target})
    assert page.status == 303
    assert page.location.startswith("/") and not page.location.startswith(("//", "/\\"))
    assert "\r" not in page.location and "\n" not in page.location and "evil" not in page.location.split("?")[0][:2]


def test_sign_ins_are_limited_per_user_and_address_per_address_and_per_user(console, engine, settings_env):
    from shared.operator import users

    settings_env(CONSOLE_SIGN_IN_LIMIT="3")
    make_user(engine, "olivia", "operator")
    make_user(engine, "oscar", "operator")
    client = ConsoleClient(console.__class__())
    for _ in range(3):
        assert client.sign_in("olivia", "wrong password!").status == 401
    limited = client.sign_in("Olivia")  # the right password (and the name in another case): not even checked
    assert limited.status == 429 and "Too many failed sign-ins" in limited.body
    # A stranger who guesses from their address blocks the name there, not from the operator's own.
    assert ConsoleClient(client.app, remote_addr="10.0.0.9").sign_in("olivia").status == 303
    assert client.sign_in("oscar").status == 303  # another user from the same address still may
    # Per address: 4 x the limit, whichever names are tried.
    attacker = ConsoleClient(client.app, remote_addr="10.0.0.66")
    for number in range(12):
        attacker.sign_in(f"nobody{number}", "guess guess guess")
    assert attacker.sign_in("oscar").status == 429
    # `console-users unlock` lifts a user's limits.
    with Session(engine) as session:
        assert users.unlock(session, "olivia") == 1
        session.commit()
    assert client.sign_in("olivia").status == 303


def test_parallel_guesses_do_not_slip_past_the_limit(console, engine, settings_env):
    from concurrent.futures import ThreadPoolExecutor

    settings_env(CONSOLE_SIGN_IN_LIMIT="3")
    make_user(engine, "olivia", "operator")
    app = console.__class__()
    clients = [ConsoleClient(app) for _ in range(12)]
    for client in clients:
        client.get("/sign-in")
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda c: c.post("/sign-in", {"name": "olivia", "password": "x" * 12}).status,
                                 clients))
    assert statuses.count(401) == 3 and statuses.count(429) == 9, statuses


def test_an_unknown_name_and_a_wrong_password_read_the_same(console, engine):
    make_user(engine, "olivia", "operator")
    client = ConsoleClient(console)
    unknown, wrong = client.sign_in("mallory", "whatever123456"), client.sign_in("olivia", "whatever123456")
    assert unknown.status == wrong.status == 401
    assert "Wrong name or password." in unknown.body and "Wrong name or password." in wrong.body


def test_a_post_without_the_csrf_token_or_from_another_site_changes_nothing(operator, engine, account):
    sid = summary_in(engine, account, "failed")
    assert operator.post(f"/summaries/{sid}/retry", csrf=False).status == 403
    assert operator.post(f"/summaries/{sid}/retry", {"csrf": "forged"}).status == 403
    for site in ("cross-site", "same-site"):  # the browser's word on where the form came from
        assert operator.post(f"/summaries/{sid}/retry", headers={"Sec-Fetch-Site": site}).status == 403
    assert status_of(engine, sid) == "failed"
    assert operator.post(f"/summaries/{sid}/retry").status == 303
    assert status_of(engine, sid) == "queued"


def test_a_notice_in_a_link_from_elsewhere_is_not_shown(operator, engine, account):
    sid = summary_in(engine, account, "failed")
    page = operator.get(f"/summaries/{sid}?done=Your+session+expired,+call+555-0100")
    assert "555-0100" not in page.body and 'class="notice"' not in page.body


def test_an_operator_retries_and_the_timeline_names_the_console_user(operator, engine, account):
    sid = summary_in(engine, account, "failed")
    page = operator.get(f"/summaries/{sid}")
    assert "Retry this summary" in page.body
    done = operator.post(f"/summaries/{sid}/retry")
    assert done.status == 303 and done.location.startswith(f"/summaries/{sid}?done=")
    assert "retry: queued" in operator.get(done.location).body
    with Session(engine) as session:
        kinds = [(e.kind, e.actor) for e in session.scalars(select(SummaryEvent).where(SummaryEvent.summary_sid == sid))]
    assert ("queued", "console:olivia") in kinds


def test_a_viewer_sees_everything_but_acts_on_nothing(viewer, engine, account, redis_client):
    failed = summary_in(engine, account, "failed")
    finished = delivery_for(engine, account, "failed")
    for path in PAGES:
        assert viewer.get(path).status == 200, path
    page = viewer.get(f"/summaries/{failed}")
    assert "Retry this summary" not in page.body and "Redeliver every" not in viewer.get("/deliveries?status=failed").body
    before = {sid: status_of(engine, sid) for sid in (failed, finished)}
    for path, form in ((f"/summaries/{failed}/retry", {}), (f"/summaries/{finished}/redeliver", {}),
                       ("/deliveries/redeliver", {"status": "failed"}), ("/deliveries/redeliver/send", {"status": "failed"}),
                       ("/circuits/close", {"account": account.sid, "address": "203.0.113.7"}),
                       ("/purge", {"days": "0.0001", "count": "1"})):
        refused = viewer.post(path, form)
        assert refused.status == 403 and "nothing was changed" in refused.body, path
    assert {sid: status_of(engine, sid) for sid in (failed, finished)} == before
    with Session(engine) as session:
        assert session.get(CallbackDelivery, finished).state == "failed"


def test_every_answer_carries_the_security_headers_and_the_cookie_its_flags(operator, console):
    for path in (*PAGES, "/sign-in", "/no-such-page", "/static/console.css"):
        page = operator.get(path)
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, path
        assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    fresh = ConsoleClient(console)
    captured = {}

    def start_response(status, headers):
        captured["cookie"] = dict(headers)["Set-Cookie"]

    console({"REQUEST_METHOD": "GET", "PATH_INFO": "/sign-in", "QUERY_STRING": "", "wsgi.url_scheme": "https",
             "wsgi.input": None, "REMOTE_ADDR": "127.0.0.1"}, start_response)
    assert {"HttpOnly", "SameSite=Strict", "Secure", "Path=/"} <= {part.strip() for part in captured["cookie"].split(";")}
    assert "Secure" not in fresh.get("/sign-in").headers["Set-Cookie"]  # plain HTTP (loopback): no Secure flag


def test_a_page_has_no_inline_script_and_its_own_static_files(operator):
    page = operator.get("/")
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.body, re.S)
    assert scripts and all('src="/static/' in attributes and not body.strip() for attributes, body in scripts)
    assert not re.search(r"\son[a-z]+=", page.body)  # no inline event handlers either
    assert not re.search(r'(src|href)="(https?:)?//', page.body)
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        served = operator.get(f"/static/{name}")
        assert served.status == 200 and served.headers["Content-Type"].startswith(kind)
    for hostile in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/.hidden", "/static/"):
        assert operator.get(hostile).status == 404


def test_a_session_ends_when_idle_when_too_old_and_when_its_user_is_deleted(console, engine, monkeypatch):
    import console.sessions as sessions
    import itsdangerous.timed

    make_user(engine, "olivia", "operator")
    client = ConsoleClient(console)
    client.sign_in("olivia")
    assert client.get("/").status == 200
    real = itsdangerous.timed.time.time
    idle = console.settings.console_session_idle_s
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() + idle + 5)
    assert client.get("/").status == 303  # idle too long: signed out
    monkeypatch.undo()

    client.sign_in("olivia")
    cookie = client.cookie
    monkeypatch.setattr(sessions.time, "time", lambda: real() + console.settings.console_session_max_s + 5)
    assert client.get("/").status == 303  # in use, but signed in too long ago
    monkeypatch.undo()

    client.cookie = cookie
    assert client.get("/").status == 200
    with Session(engine) as session:
        session.delete(session.get(ConsoleUser, "olivia"))
        session.commit()
    assert client.get("/").status == 303


def test_signing_out_ends_every_session_of_the_user_and_a_replayed_cookie_too(operator, console, engine):
    elsewhere = ConsoleClient(console)
    elsewhere.sign_in("olivia")
    kept = operator.cookie
    assert operator.post("/sign-out").status == 303
    assert operator.get("/").status == 303
    assert elsewhere.get("/").status == 303  # signed out everywhere
    operator.cookie = kept  # the cookie from before the sign-out, replayed
    assert operator.get("/").status == 303


def test_a_user_deleted_and_created_again_does_not_revive_its_old_sessions(operator, engine):
    from shared.operator import users

    with Session(engine) as session:
        users.delete(session, "olivia")
        users.create(session, "olivia", "operator", PASSWORD)
        session.commit()
    assert operator.get("/").status == 303


def test_a_trusted_proxy_names_the_user_and_nobody_else_can(engine, settings_env, redis_client):
    from console.app import Console

    settings_env(CONSOLE_TRUSTED_USER_HEADER="X-Forwarded-User", CONSOLE_TRUSTED_PROXIES="10.1.0.0/16")
    make_user(engine, "sso-olivia", "operator", password=None)
    console = Console()
    proxied = ConsoleClient(console, remote_addr="10.1.2.3")
    assert proxied.get("/", headers={"X-Forwarded-User": "sso-olivia"}).status == 200
    assert proxied.get("/", headers={"X-Forwarded-User": "nobody"}).status == 403
    direct = ConsoleClient(console, remote_addr="192.0.2.10")
    assert direct.get("/", headers={"X-Forwarded-User": "sso-olivia"}).status == 303  # not from a proxy: not believed
    assert direct.sign_in("sso-olivia", "").status == 401  # no password: signs in only through the proxy


def test_secrets_appear_nowhere(operator, engine, account):
    sid = delivery_for(engine, account, "failed")
    with Session(engine) as session:
        password_hash = session.get(ConsoleUser, "olivia").password_hash
    bodies = "".join(operator.get(path).body for path in (*PAGES, f"/summaries/{sid}", f"/accounts/{account.sid}"))
    assert account.auth_token not in bodies and password_hash not in bodies and "scrypt$" not in bodies


def test_what_came_from_outside_is_shown_as_text(operator, engine, account):
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    sid = delivery_for(engine, account, "failed", host="hooks.example.com", excerpt=hostile)
    failed = summary_in(engine, account, "failed", reason=hostile)
    for path in (f"/summaries/{sid}", f"/summaries/{failed}", "/summaries?status=failed"):
        body = operator.get(path).body
        assert "<script>alert" not in body and "<img src=x" not in body, path
        assert html.escape(hostile, quote=False) in body or html.escape(hostile) in body, path


def test_lists_page_newest_first_by_keyset_with_filters_in_the_url(operator, engine, account):
    sids = [summary_in(engine, account, "failed") for _ in range(55)]
    first = operator.get(f"/summaries?status=failed&account={account.sid}")
    shown = re.findall(r'href="/summaries/(FS\w+)"', first.body)
    assert len(shown) == 50 and set(shown) <= set(sids)
    older = html.unescape(re.search(r'rel="next" href="([^"]+)"', first.body).group(1))
    assert "status=failed" in older and f"account={account.sid}" in older
    second = re.findall(r'href="/summaries/(FS\w+)"', operator.get(older).body)
    assert len(second) == 5 and not set(second) & set(shown) and set(shown) | set(second) == set(sids)
    assert "End of the list" in operator.get(older).body


@pytest.mark.parametrize("query", ["status=bogus", "account=ACnope", "sid=FS1", "since=yesterday",
                                   "before=2024-01-01T00:00:00~nope", "status=failed&status=queued"])
def test_a_filter_that_cannot_be_read_is_a_400_that_says_why(operator, query):
    page = operator.get(f"/summaries?{query}")
    assert page.status == 400 and 'class="problem"' in page.body


def test_the_bulk_redelivery_shows_its_dry_run_then_sends_each_again(operator, engine, account):
    failing = [delivery_for(engine, account, "failed", host="down.example.com") for _ in range(3)]
    delivery_for(engine, account, "failed", host="other.example.com")
    plan = operator.post("/deliveries/redeliver", {"status": "failed", "host": "down.example.com"})
    assert plan.status == 200 and "<strong>3</strong> failed deliveries match" in plan.body
    assert all(sid in plan.body for sid in failing)
    with Session(engine) as session:
        assert {d.state for d in session.scalars(select(CallbackDelivery))} == {"failed"}  # a dry run sends nothing
    stale = operator.post("/deliveries/redeliver/send", {"status": "failed", "host": "down.example.com", "rate": "20",
                                                         "expected": "2"})
    assert stale.status == 200 and "The selection changed since the dry run (2 then)" in stale.body
    assert "sent again</span>" not in stale.body
    sent = operator.post("/deliveries/redeliver/send", {"status": "failed", "host": "down.example.com", "rate": "20",
                                                        "expected": "3"})
    assert sent.status == 200 and sent.body.count("<span class=\"ok\">sent again") == 3 and 'id="finished"' in sent.body
    with Session(engine) as session:
        states = {d.summary_sid: d.state for d in session.scalars(select(CallbackDelivery))}
        actors = set(session.scalars(select(SummaryEvent.actor).where(SummaryEvent.kind == "callback redelivered")))
    assert {states[sid] for sid in failing} == {"pending"} and list(states.values()).count("failed") == 1
    assert actors == {"console:olivia"}


def test_a_bulk_redelivery_never_takes_a_sid_so_never_sends_a_delivered_one_again(operator, engine, account):
    delivered = delivery_for(engine, account, "delivered")
    assert "Redeliver every" not in operator.get(f"/deliveries?status=failed&sid={delivered}").body
    for path in ("/deliveries/redeliver", "/deliveries/redeliver/send"):
        refused = operator.post(path, {"status": "failed", "sid": delivered, "expected": "1"})
        assert refused.status == 400, path
    with Session(engine) as session:
        assert session.get(CallbackDelivery, delivered).state == "delivered"


def test_a_bulk_redelivery_refuses_a_rate_over_the_cap(operator, engine, account):
    delivery_for(engine, account, "failed")
    refused = operator.post("/deliveries/redeliver/send", {"status": "failed", "rate": "100000"})
    assert refused.status == 400 and "CONSOLE_REDELIVERY_MAX_RATE" in refused.body


def test_a_page_answers_another_method_with_405_and_what_it_allows(operator):
    page = operator.request("PUT", "/summaries")
    assert page.status == 405 and page.headers["Allow"] == "GET"
    assert operator.request("DELETE", "/sign-in").headers["Allow"] == "GET, POST"


def test_closing_a_circuit_from_the_destinations_page(operator, account, redis_client):
    from shared.callbacks.circuit import CircuitBreaker

    breaker = CircuitBreaker(redis_client, 2, 300, 15)
    key = f"{account.sid}:203.0.113.7"
    breaker.record_failure(key)
    breaker.record_failure(key)
    page = operator.get("/destinations")
    assert "203.0.113.7" in page.body and ">open<" in page.body
    done = operator.post("/circuits/close", {"account": account.sid, "address": "203.0.113.7"})
    assert done.status == 303 and not breaker.is_open(key)
    assert "Every circuit is closed." in operator.get("/destinations").body


def test_purge_deletes_what_it_counted_and_nothing_when_the_count_moved(operator, engine, account):
    old = [summary_in(engine, account, "failed") for _ in range(2)]
    backdate(engine, "feedback_summaries", old, days=10)
    recent = summary_in(engine, account, "failed")
    assert "<strong>2</strong> failed summaries" in operator.get("/purge?days=7").body
    moved = operator.post("/purge", {"days": "7", "count": "5"})
    assert moved.status == 303 and moved.location.startswith("/purge?days=7&done=")
    assert "nothing was deleted" in operator.get(moved.location).body
    for days in ("0.001", "1e-320", "nan", "40000"):
        assert operator.post("/purge", {"days": days, "count": "0"}).status == 400, days
    assert operator.post("/purge", {"days": "7", "count": "2"}).status == 303
    with Session(engine) as session:
        left = set(session.scalars(select(FeedbackSummary.sid)))
    assert left == {recent}


def test_the_charts_count_by_hour_and_keep_finished_hours(operator, engine, account):
    from console import charts

    for _ in range(3):
        summary_in(engine, account, "completed")
    summary_in(engine, account, "failed")
    now = dt.datetime.now(dt.timezone.utc)
    hours = dict(charts.hourly(24, now))
    current = now.replace(minute=0, second=0, microsecond=0)
    assert hours[current]["summaries.created"] == 4 and hours[current]["summaries.completed"] == 3
    assert hours[current]["summaries.failed"] == 1 and hours[current]["duration.p50"] >= 0
    later = dict(charts.hourly(24, now + dt.timedelta(hours=2)))  # that hour is over: computed once, kept
    assert later[current]["summaries.created"] == 4
    with engine.connect() as connection:
        kept = dict(connection.execute(text("SELECT metric, value FROM console_chart_hours WHERE hour = :h"),
                                       {"h": current}).all())
    assert kept["summaries.created"] == 4 and "computed" in kept


def test_the_account_page_shows_its_days_and_its_last_status_callback(operator, engine, account, client):
    from tests.test_live_traffic import T0, event, post_event

    assert "never arrived" in operator.get(f"/accounts/{account.sid}").body
    assert post_event(client, event(account, "CA" + "1" * 32, "completed", T0, 1), account.auth_token).status == 204
    page = operator.get(f"/accounts/{account.sid}")
    assert "never arrived" not in page.body and "ago" in page.body


def test_a_chart_breaks_its_line_where_an_hour_has_no_value_and_marks_a_lone_one():
    from console.charts import Chart, Series

    series = Series("p50", "s-p50", [None, 4.0, None, 2.0, 8.0])
    chart = Chart("t", "seconds", [series], ["a", "b", "c", "d", "e"], width=400, height=80)
    assert chart.segments(series) == ["300.0,60.0 400.0,0.0"]
    assert chart.dots(series) == [(100.0, 40.0)]


@pytest.mark.parametrize("env, message", [
    ({"CONSOLE_TRUSTED_USER_HEADER": "X-Forwarded-User"}, "CONSOLE_TRUSTED_PROXIES is not"),
    ({"CONSOLE_TRUSTED_PROXIES": "10.0.0.0/8"}, "CONSOLE_TRUSTED_USER_HEADER is not"),
    ({"CONSOLE_SESSION_IDLE_S": "7200", "CONSOLE_SESSION_MAX_S": "3600"}, "longer than CONSOLE_SESSION_MAX_S"),
])
def test_the_console_refuses_to_start_with_settings_that_cannot_work(env, message, capsys):
    from console.checks import check_console_settings
    from shared.platform.config import Settings

    with pytest.raises(SystemExit) as stopped:
        check_console_settings(Settings.from_env(env))
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(Exception, match="CONSOLE_TRUSTED_USER_HEADER must be a header name"):
        Settings.from_env({"CONSOLE_TRUSTED_USER_HEADER": "X-User: admin"})


def test_another_sites_odd_cookie_beside_ours_does_not_sign_us_out(operator):
    ours = operator.cookie
    for junk in ("theme", 'prefs={"k": "v"}', "a=b c", 'x="'):
        operator.cookie = f"{junk}; {ours}"
        assert operator.get("/").status == 200, junk


@pytest.mark.parametrize("path", ["/deliveries?host=a%00b", "/summaries?host=%00", "/summaries?account=%01"])
def test_a_control_character_in_a_parameter_is_a_400(operator, path):
    assert operator.get(path).status == 400


def test_a_control_character_in_the_sign_in_name_is_refused_too(console, engine):
    client = ConsoleClient(console)
    client.get("/sign-in")
    assert client.post("/sign-in", {"name": "olivia\x00", "password": PASSWORD}).status == 400


@pytest.mark.parametrize("target", ["/?q=\u0100", "/?a=%7F", "/?\u2028", "/summaries?host=b\u00fccher.example"])
def test_a_next_with_any_characters_gives_a_header_safe_redirect(console, engine, target):
    make_user(engine, "olivia", "operator")
    client = ConsoleClient(console)
    client.get("/sign-in")
    page = client.post("/sign-in", {"name": "olivia", "password": PASSWORD, "next": target})
    assert page.status == 303 and page.location.isascii() and page.location.isprintable()


def test_a_notice_is_shown_to_the_user_whose_action_wrote_it_only(operator, console, engine, account):
    sid = summary_in(engine, account, "failed")
    done = operator.post(f"/summaries/{sid}/retry").location
    assert 'class="notice"' in operator.get(done).body
    make_user(engine, "otto", "operator")
    other = ConsoleClient(console)
    other.sign_in("otto")
    assert 'class="notice"' not in other.get(done).body


def test_a_viewer_never_sees_the_password_a_callback_url_holds(viewer, engine, account):
    sid = summary_in(engine, account, "completed", status_callback="https://user:s3cr3t-pass@hooks.example.com/cb")
    from cli.demo import _attempts
    from shared.platform.config import get_settings

    _attempts(engine, sid, get_settings(), [("failed", 500, None, "no")])
    for path in (f"/summaries/{sid}", "/deliveries?status=failed"):
        body = viewer.get(path).body
        assert "s3cr3t-pass" not in body and "hooks.example.com/cb" in body, path


@pytest.mark.parametrize("rate", ["0.01", "1e-300", "nan", "-1"])
def test_a_bulk_redelivery_refuses_a_rate_under_the_floor(operator, engine, account, rate):
    delivery_for(engine, account, "failed")
    assert operator.post("/deliveries/redeliver/send", {"status": "failed", "rate": rate, "expected": "1"}).status == 400


@pytest.mark.parametrize("form", [{"account": "AC - read this", "address": "203.0.113.7"},
                                  {"account": "AC" + "0" * 32, "address": "not an address"}])
def test_closing_a_circuit_takes_an_account_sid_and_an_ip_address_only(operator, form):
    assert operator.post("/circuits/close", form).status == 400


def test_a_host_filter_pages_the_same_whether_the_host_has_few_deliveries_or_many(operator, engine, account,
                                                                                   monkeypatch):
    from console import queries

    mine = [delivery_for(engine, account, "failed", host="rare.example.com") for _ in range(53)]
    delivery_for(engine, account, "failed", host="other.example.com")

    def pages() -> list[str]:
        first = operator.get("/summaries?host=rare.example.com")
        older = html.unescape(re.search(r'rel="next" href="([^"]+)"', first.body).group(1))
        return [*re.findall(r'href="/summaries/(FS\w+)"', first.body),
                *re.findall(r'href="/summaries/(FS\w+)"', operator.get(older).body)]

    few = pages()  # fetched by host, then sorted
    monkeypatch.setattr(queries, "FEW_DELIVERIES", 1)
    assert pages() == few and sorted(few) == sorted(mine)  # walked newest first: the same pages
    assert "No summary matches." in operator.get("/summaries?host=never.example.com").body
