"""`summaries calls sync`, run as a real process against a loopback stand-in of Twilio's Calls API
(tests/twilio_api.py) read through the official twilio library, into the test database."""

from __future__ import annotations

import datetime as dt
import os
import pty
import random
import subprocess
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Callable
from urllib.parse import urljoin, urlsplit

import pytest
from sqlalchemy import text

from cli.sync import MAX_PAGE_BYTES
from shared.accounts.sids import ACCOUNT, CALL, new_auth_token, new_sid
from tests.processes import summaries_cli
from tests.support import add_feedback, free_port, make_account, snapshot
from tests.twilio_api import TwilioCallsApi

pytestmark = pytest.mark.slow  # every test runs `summaries` as a process

UTC = dt.timezone.utc
SINCE, UNTIL = dt.date(2024, 3, 5), dt.date(2024, 3, 14)
START = dt.datetime(2024, 3, 5, tzinfo=UTC)  # --since, 00:00 UTC
END = dt.datetime(2024, 3, 15, tzinfo=UTC)  # the day after --until, 00:00 UTC: not in the window
SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def twilio():
    api = TwilioCallsApi()
    yield api
    api.close()


@pytest.fixture
def elsewhere():
    api = TwilioCallsApi(host="127.0.0.2")  # another host, which no request may reach
    yield api
    api.close()


def sync(api: TwilioCallsApi, *args: str, env: dict | None = None, **popen) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    environment.update({"TWILIO_API_BASE_URL": api.base_url, **(env or {})})
    return summaries_cli("calls", "sync", *args, env=environment, **popen)


def window_args(account_sid: str) -> list[str]:
    return ["--account", account_sid, "--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]


def rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def start_of(call: dict) -> dt.datetime | None:
    return parsedate_to_datetime(call["start_time"]) if call["start_time"] else None


def assert_rollups_hold(engine) -> None:
    # The daily rows plus the deltas not folded yet (migration 0007).
    assert sorted(rows(engine, "SELECT account_sid, day, sum(calls) FROM (SELECT account_sid, day, calls FROM daily_calls "
                       "UNION ALL SELECT account_sid, day, calls FROM calls_rollup_deltas) r "
                       "GROUP BY 1, 2 HAVING sum(calls) <> 0")) == sorted(rows(
        engine, "SELECT account_sid, (start_time AT TIME ZONE 'UTC')::date, count(*) FROM calls GROUP BY 1, 2"))


def test_a_multipage_history_is_backfilled_exactly_in_the_window_and_a_second_run_adds_nothing(engine, twilio):
    account = make_account(engine)
    subaccount = make_account(engine, account)
    twilio.add_account(account.sid, account.auth_token)
    random_ = random.Random(12)
    history_start = dt.datetime(2024, 3, 4, tzinfo=UTC)
    for _ in range(2500):  # twelve days around the ten of the window
        twilio.add_call(account.sid, history_start + dt.timedelta(seconds=random_.randrange(12 * 86400)))
    for boundary in (START, START - SECOND, END - SECOND, END):
        twilio.add_call(account.sid, boundary)
    for _ in range(5):  # queued, never dialed: no start_time
        twilio.add_call(account.sid, None, created=START + dt.timedelta(days=random_.randrange(10)))
    for _ in range(30):  # Twilio lists some under our subaccount: stored under it
        twilio.add_call(account.sid, START + dt.timedelta(seconds=random_.randrange(10 * 86400)), subaccount.sid)
    strangers = [new_sid(ACCOUNT), new_sid(ACCOUNT)]
    for stranger, count in zip(strangers, (7, 3)):  # accounts we do not know: skipped, named
        for _ in range(count):
            twilio.add_call(account.sid, START + dt.timedelta(hours=random_.randrange(240)), stranger)

    listed = twilio.calls[account.sid]
    expected = {(call["sid"], call["account_sid"], start_of(call)) for call in listed
                if call["start_time"] and START <= start_of(call) < END
                and call["account_sid"] in (account.sid, subaccount.sid)}
    read = sum(1 for call in listed if START <= call["_at"] < END)
    assert {START, END - SECOND} <= {when for _, _, when in expected}
    assert not {START - SECOND, END} & {when for _, _, when in expected}
    skipped = f"15 skipped (5 never dialed; 10 under other accounts: {strangers[0]} (7), {strangers[1]} (3))"

    first = sync(twilio, *window_args(account.sid), "--batch-size", "700")
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # not a terminal: no progress line
    assert first.stdout == (f"{read} calls read from Twilio for {account.sid}: {len(expected)} stored "
                            f"({len(expected)} new, 0 changed), 0 already there unchanged, {skipped}\n")
    assert set(rows(engine, "SELECT sid, account_sid, start_time FROM calls")) == expected
    assert rows(engine, "SELECT count(*) FROM calls WHERE provisional") == [(0,)]
    assert_rollups_hold(engine)

    pages = twilio.requests_seen()
    assert len(pages) == 3 and all(page["user"] == account.sid for page in pages)  # 2,100 calls in pages of 1000
    assert all(page["query"]["StartTime>"] == "2024-03-05T00:00:00Z" and
               page["query"]["StartTime<"] == "2024-03-14T23:59:59Z" for page in pages)

    before = snapshot(engine)
    second = sync(twilio, *window_args(account.sid))
    assert second.returncode == 0, second.stderr
    assert second.stdout == (f"{read} calls read from Twilio for {account.sid}: 0 stored (0 new, 0 changed), "
                             f"{len(expected)} already there unchanged, {skipped}\n")
    assert snapshot(engine) == before


def test_twilio_confirms_provisional_calls_corrects_start_times_and_moves_calls_it_says_are_elsewhere(engine, twilio):
    account = make_account(engine)
    subaccount = make_account(engine, account)
    twilio.add_account(account.sid, account.auth_token)
    posted = dt.datetime(2024, 3, 10, 12, 0, 5, tzinfo=UTC)
    confirmed, moved, corrected, same = (new_sid(CALL) for _ in range(4))
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO calls (sid, account_sid, start_time, provisional) VALUES "
            "(:confirmed, :account, :posted, true), (:moved, :account, :posted, true), "
            "(:corrected, :account, '2024-03-10T11:00:03Z', false), (:same, :account, '2024-03-10T09:00:00Z', false)"),
            {"confirmed": confirmed, "moved": moved, "corrected": corrected, "same": same, "account": account.sid,
             "posted": posted})
    for sid in (confirmed, moved):  # feedback posted before the call was known, under the account
        add_feedback(engine, sid, account, 2, ["dropped-call"], posted)
    twilio.add_call(account.sid, dt.datetime(2024, 3, 10, 11, 58, tzinfo=UTC), sid=confirmed)
    twilio.add_call(account.sid, dt.datetime(2024, 3, 10, 11, 57, tzinfo=UTC), subaccount.sid, sid=moved)
    twilio.add_call(account.sid, dt.datetime(2024, 3, 10, 11, 0, tzinfo=UTC), sid=corrected)
    twilio.add_call(account.sid, dt.datetime(2024, 3, 10, 9, 0, tzinfo=UTC), sid=same)
    new = twilio.add_call(account.sid, dt.datetime(2024, 3, 11, 8, 0, tzinfo=UTC))["sid"]

    result = sync(twilio, *window_args(account.sid))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"5 calls read from Twilio for {account.sid}: 4 stored (1 new, 3 changed), "
                             "1 already there unchanged, 0 skipped\n")
    assert sorted(rows(engine, "SELECT sid, account_sid, start_time, provisional FROM calls")) == sorted([
        (confirmed, account.sid, dt.datetime(2024, 3, 10, 11, 58, tzinfo=UTC), False),
        (moved, subaccount.sid, dt.datetime(2024, 3, 10, 11, 57, tzinfo=UTC), False),
        (corrected, account.sid, dt.datetime(2024, 3, 10, 11, 0, tzinfo=UTC), False),
        (same, account.sid, dt.datetime(2024, 3, 10, 9, 0, tzinfo=UTC), False),
        (new, account.sid, dt.datetime(2024, 3, 11, 8, 0, tzinfo=UTC), False)])
    # The confirmed call keeps its feedback; the one Twilio puts in the subaccount takes the feedback
    # the parent posted with it (the SPEC's parent-path case, carried by the move's trigger, 0013).
    assert sorted(rows(engine, "SELECT call_sid, account_sid FROM call_feedback")) == sorted(
        [(confirmed, account.sid), (moved, subaccount.sid)])
    assert_rollups_hold(engine)


def test_until_defaults_to_today(engine, twilio):
    account = make_account(engine)
    twilio.add_account(account.sid, account.auth_token)
    now = dt.datetime.now(UTC).replace(microsecond=0)
    today = twilio.add_call(account.sid, now - dt.timedelta(seconds=5))["sid"]
    twilio.add_call(account.sid, now - dt.timedelta(days=3))
    result = sync(twilio, "--account", account.sid, "--since", (now - dt.timedelta(days=1)).date().isoformat())
    assert result.returncode == 0, result.stderr
    assert rows(engine, "SELECT sid FROM calls") == [(today,)]


def test_wrong_credentials_are_one_line_and_exit_code_2(engine, twilio):
    account = make_account(engine)
    twilio.add_account(account.sid, new_auth_token())  # not the token stored here
    twilio.add_call(account.sid, START)
    result = sync(twilio, *window_args(account.sid))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr == "summaries calls: Twilio answered 401: Authenticate (code 20003); nothing was stored\n"
    assert rows(engine, "SELECT count(*) FROM calls") == [(0,)]


def test_an_api_key_and_secret_are_used_when_both_are_set(engine, twilio):
    account = make_account(engine)
    twilio.add_account(account.sid, new_auth_token())  # the stored token would fail
    key, secret = "SK" + new_sid(CALL)[2:], new_auth_token()
    twilio.add_key(key, secret, account.sid)
    twilio.add_call(account.sid, START)
    result = sync(twilio, *window_args(account.sid), env={"TWILIO_API_KEY": key, "TWILIO_API_SECRET": secret})
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"1 call read from Twilio for {account.sid}: 1 stored (1 new, 0 changed), "
                             "0 already there unchanged, 0 skipped\n")
    assert [page["user"] for page in twilio.requests_seen()] == [key]

    half = sync(twilio, *window_args(account.sid), env={"TWILIO_API_KEY": key})
    assert half.returncode == 2 and "TWILIO_API_KEY and TWILIO_API_SECRET go together" in half.stderr
    assert len(twilio.requests_seen()) == 1



def test_an_account_twilio_does_not_know_is_a_one_line_404(engine, twilio):
    account, elsewhere = make_account(engine), new_sid(ACCOUNT)
    key, secret = "SK" + new_sid(CALL)[2:], new_auth_token()
    twilio.add_account(elsewhere, new_auth_token())
    twilio.add_key(key, secret, elsewhere)  # a key of another account: Twilio knows no such account for it
    result = sync(twilio, *window_args(account.sid), env={"TWILIO_API_KEY": key, "TWILIO_API_SECRET": secret})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"summaries calls: Twilio answered 404: The requested resource /2010-04-01/Accounts/"
                             f"{account.sid}/Calls.json was not found (code 20404); nothing was stored\n")

def test_an_error_midway_keeps_the_committed_batches_and_a_rerun_resumes(engine, twilio):
    account = make_account(engine)
    twilio.add_account(account.sid, account.auth_token)
    for i in range(2500):
        twilio.add_call(account.sid, START + dt.timedelta(seconds=97 * i))
    twilio.fail_page = (2, 503)  # the third page of 1000

    failed = sync(twilio, *window_args(account.sid), "--batch-size", "500")
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert failed.stderr == ("summaries calls: Twilio answered 503: An internal server error has occurred (code "
                             "20500); stopped after 2000 calls read: the 2000 calls of the batches already committed "
                             "stay (2000 of them new or changed), and running the same command again resumes\n")
    assert rows(engine, "SELECT count(*) FROM calls") == [(2000,)]

    twilio.fail_page = None
    resumed = sync(twilio, *window_args(account.sid), "--batch-size", "500")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == (f"2500 calls read from Twilio for {account.sid}: 500 stored (500 new, 0 changed), "
                              "2000 already there unchanged, 0 skipped\n")
    assert rows(engine, "SELECT count(*) FROM calls") == [(2500,)]


@pytest.mark.parametrize("args, env, message", [
    (("--since", "2024-3-05"), {}, "--since '2024-3-05' is not a date (YYYY-MM-DD)"),
    (("--since", "2024-03-05", "--until", "2024-02-30"), {}, "--until '2024-02-30' is not a date (YYYY-MM-DD)"),
    (("--since", "2024-03-05", "--until", "2024-03-04"), {}, "--until 2024-03-04 is before --since 2024-03-05"),
    (("--since", "2024-03-05", "--batch-size", "0"), {}, "--batch-size must be 1 or more"),
    (("--since", "2024-03-05", "--max-pages", "0"), {}, "--max-pages must be 1 or more"),
    (("--since", "2024-03-05", "--page-timeout", "0"), {}, "--page-timeout must be seconds, more than 0"),
    (("--since", "2024-03-05", "--page-timeout", "nan"), {}, "--page-timeout must be seconds, more than 0"),
    (("--since", "2024-03-05"), {"TWILIO_API_BASE_URL": "ftp://api.twilio.com"}, "TWILIO_API_BASE_URL must be"),
    (("--since", "2024-03-05", "--account", "AC" + "0" * 32), {}, f"account AC{'0' * 32} does not exist"),
])
def test_bad_arguments_are_one_line_errors(engine, twilio, args, env, message):
    account = make_account(engine)
    twilio.add_account(account.sid, account.auth_token)
    account_args = () if "--account" in args else ("--account", account.sid)
    result = sync(twilio, *account_args, *args, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert twilio.requests_seen() == []


def test_an_unreachable_twilio_is_a_one_line_error(engine, twilio):
    account = make_account(engine)
    port = free_port()  # nothing listens there
    result = sync(twilio, *window_args(account.sid), env={"TWILIO_API_BASE_URL": f"http://127.0.0.1:{port}"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr == (f"summaries calls: cannot reach Twilio at http://127.0.0.1:{port}: [Errno 111] "
                             "Connection refused; nothing was stored\n")


def with_calls(engine, twilio: TwilioCallsApi, count: int):
    """An account here and at the stand-in, with `count` calls in the window: pages of 1000."""
    account = make_account(engine)
    twilio.add_account(account.sid, account.auth_token)
    for i in range(count):
        twilio.add_call(account.sid, START + dt.timedelta(seconds=97 * i))
    return account


def kept(read: int) -> str:
    return (f"; stopped after {read} calls read: the {read} calls of the batches already committed stay ({read} of "
            "them new or changed), and running the same command again resumes\n")


def netloc(api: TwilioCallsApi) -> str:
    return urlsplit(api.base_url).netloc


@pytest.mark.parametrize("field, link", [
    # What the library follows verbatim, credentials and all.
    pytest.param("meta.next_page_url", "{elsewhere}{path}", id="meta-next-page-url"),
    pytest.param("next_page_uri", "{elsewhere}{path}", id="next-page-uri-absolute"),
    pytest.param("next_page_uri", "//{elsewhere_host}{path}", id="next-page-uri-scheme-relative"),
    # urlsplit reads the host after the @; requests connects to the one before the backslash.
    pytest.param("next_page_uri", "http://{elsewhere_host}\\@{twilio_host}{path}", id="backslash-before-at"),
    pytest.param("next_page_uri", "http://{twilio_host}@{elsewhere_host}{path}", id="twilio-as-user-info"),
])
def test_a_next_page_on_another_host_is_not_asked_for_and_the_credentials_stay(engine, twilio, elsewhere, field, link):
    account = with_calls(engine, twilio, 3)
    elsewhere.add_account(account.sid, account.auth_token)  # it would take them, and answer an empty list
    target = link.format(elsewhere=elsewhere.base_url, elsewhere_host=netloc(elsewhere), twilio_host=netloc(twilio),
                         path=f"/2010-04-01/Accounts/{account.sid}/Calls.json?Page=1")

    def tamper(page: int, body: dict) -> dict:
        if field == "meta.next_page_url":
            body["meta"] = {"key": "calls", "next_page_url": target}
        else:
            body["next_page_uri"] = target
        return body

    twilio.tamper = tamper
    result = sync(twilio, *window_args(account.sid), "--batch-size", "1")
    assert elsewhere.requests_seen() == []
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"summaries calls: Twilio's page 2 is at {urljoin(twilio.base_url, target)}, not on "
                             f"{twilio.base_url}: not asked for, and no credentials were sent there" + kept(3))
    assert rows(engine, "SELECT count(*) FROM calls") == [(3,)]
    assert len(twilio.requests_seen()) == 1


@pytest.mark.parametrize("field, absolute", [("meta.next_page_url", False), ("meta.next_page_url", True),
                                             ("next_page_uri", True)])
def test_a_next_page_on_twilios_origin_is_followed_whether_linked_by_path_or_by_url(engine, twilio, field, absolute):
    account = with_calls(engine, twilio, 1500)

    def tamper(page: int, body: dict) -> dict:
        link = body["next_page_uri"]
        if link and absolute:
            link = twilio.base_url + link
        if field == "meta.next_page_url":
            body["meta"] = {"key": "calls", "next_page_url": link}
            body["next_page_uri"] = "/ignored, as the library ignores it"
        else:
            body["next_page_uri"] = link
        return body

    twilio.tamper = tamper
    result = sync(twilio, *window_args(account.sid))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"1500 calls read from Twilio for {account.sid}: 1500 stored (1500 new, 0 changed), "
                             "0 already there unchanged, 0 skipped\n")
    assert len(twilio.requests_seen()) == 2


@pytest.mark.parametrize("back_to, number", [("itself", 2), ("the first page", 1)])
def test_a_page_linking_back_to_a_page_already_read_ends_the_run(engine, twilio, back_to, number):
    account = with_calls(engine, twilio, 1500)
    uris = []  # each page's own address, as the client asked for it

    def tamper(page: int, body: dict) -> dict:
        uris.append(body["uri"])
        if page == 1:  # the second, and last, page
            body["next_page_uri"] = uris[number - 1]
        return body

    twilio.tamper = tamper
    result = sync(twilio, *window_args(account.sid), "--batch-size", "500")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"summaries calls: Twilio's page 2 links back to page {number} ({twilio.base_url}"
                             f"{uris[number - 1]}): the list loops, not followed" + kept(1500))
    assert len(twilio.requests_seen()) == 2  # never a third request
    assert rows(engine, "SELECT count(*) FROM calls") == [(1500,)]


def test_a_list_without_end_stops_at_max_pages_and_a_list_that_ends_there_does_not(engine, twilio):
    account = with_calls(engine, twilio, 3)
    path = f"/2010-04-01/Accounts/{account.sid}/Calls.json"
    # Always one more page (empty: the stand-in knows no such token), each at a new address.
    twilio.tamper = lambda page, body: {**body, "next_page_uri": f"{path}?Page={page + 1}&PageToken=PA{page + 1}"}
    endless = sync(twilio, *window_args(account.sid), "--batch-size", "1", "--max-pages", "5")
    assert endless.returncode == 2 and "Traceback" not in endless.stderr
    assert endless.stderr == ("summaries calls: Twilio's page 5 links to another: stopped at --max-pages 5 (5000 "
                              "calls at most); a narrower window (--since, --until) or a higher --max-pages reads the "
                              "rest; stopped after 3 calls read: the 3 calls of the batches already committed stay "
                              "(3 of them new or changed)\n")
    assert len(twilio.requests_seen()) == 5
    assert rows(engine, "SELECT count(*) FROM calls") == [(3,)]

    twilio.tamper = None
    ending = sync(twilio, *window_args(account.sid), "--max-pages", "1")
    assert ending.returncode == 0, ending.stderr
    assert ending.stdout == (f"3 calls read from Twilio for {account.sid}: 0 stored (0 new, 0 changed), 3 already "
                             "there unchanged, 0 skipped\n")


def test_a_page_dripping_a_byte_at_a_time_is_cut_at_the_page_timeout(engine, twilio):
    account = with_calls(engine, twilio, 1)
    twilio.drip_s = 0.05  # the answer, about 1.4 kB, would take over a minute
    started = time.monotonic()
    result = sync(twilio, *window_args(account.sid), "--page-timeout", "1")
    assert time.monotonic() - started < 10
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == ("summaries calls: Twilio's page 1 was not read whole within 1 s (--page-timeout); "
                             "nothing was stored\n")
    assert rows(engine, "SELECT count(*) FROM calls") == [(0,)]


def test_a_page_over_the_size_limit_is_not_read_whole(engine, twilio):
    account = with_calls(engine, twilio, 1)
    twilio.tamper = lambda page, body: {**body, "padding": "x" * MAX_PAGE_BYTES}
    result = sync(twilio, *window_args(account.sid))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"summaries calls: Twilio's page 1 is over {MAX_PAGE_BYTES // 2**20} MB; nothing was "
                             "stored\n")


_GONE = object()


def edit(*path_and_value) -> Callable[[dict], object]:
    """The page with the value at the path replaced (or, _GONE, removed)."""
    *path, value = path_and_value

    def edited(body: dict) -> dict:
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        if value is _GONE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        return body

    return edited


@pytest.mark.parametrize("change, what", [
    pytest.param(lambda body: b"<html>Service Unavailable</html>", "not JSON (Expecting value: line 1 column 1 "
                 "(char 0))", id="not-json"),
    pytest.param(lambda body: b"[" * 100_000, "not JSON (maximum recursion depth exceeded", id="nested-too-deep"),
    pytest.param(lambda body: body["calls"], "the body is an array, not an object", id="a-list-body"),
    pytest.param(edit("calls", _GONE), "calls is missing", id="no-calls"),
    pytest.param(edit("calls", {}), "calls is an object, not an array", id="calls-an-object"),
    pytest.param(edit("meta", None), "meta is null, not an object", id="meta-null"),
    pytest.param(edit("meta", {"key": "records"}), "records is missing", id="meta-key-naming-nothing"),
    pytest.param(edit("meta", {"key": ["calls"]}), "meta.key is an array, not a string", id="meta-key-an-array"),
    pytest.param(edit("calls", 6, "CA" + "0" * 32), "calls[6] is a string, not an object", id="a-call-a-string"),
    pytest.param(edit("calls", 6, "sid", 12345), "calls[6].sid is a number, not a string", id="sid-a-number"),
    pytest.param(edit("calls", 6, "account_sid", _GONE), "calls[6].account_sid is missing", id="no-account-sid"),
    pytest.param(edit("calls", 6, "start_time", 1710000000), "calls[6].start_time is a number, not a string",
                 id="start-time-a-number"),
    pytest.param(edit("calls", 6, "start_time", "Tue, 32 Mar 2024 25:00:00 +0000"), "calls[6].start_time "
                 "'Tue, 32 Mar 2024 25:00:00 +0000' is not a time", id="start-time-out-of-range"),
    pytest.param(edit("next_page_uri", 3), "next_page_uri is a number, not a string", id="next-page-uri-a-number"),
])
def test_a_malformed_page_is_one_line_naming_what_and_the_pages_before_it_stay(engine, twilio, change, what):
    account = with_calls(engine, twilio, 1500)
    twilio.tamper = lambda page, body: change(body) if page == 1 else body  # the second page
    result = sync(twilio, *window_args(account.sid), "--batch-size", "500")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"summaries calls: Twilio's page 2 is malformed: {what}"), result.stderr
    assert result.stderr.endswith(kept(1000))
    assert rows(engine, "SELECT count(*) FROM calls") == [(1000,)]


def test_on_a_terminal_a_progress_line_is_rewritten_in_place_and_cleared(engine, twilio):
    account = make_account(engine)
    twilio.add_account(account.sid, account.auth_token)
    for i in range(1500):
        twilio.add_call(account.sid, START + dt.timedelta(seconds=61 * i))
    controller, terminal = pty.openpty()
    captured = []
    reader = threading.Thread(target=_drain, args=(controller, captured), daemon=True)
    reader.start()
    try:
        result = sync(twilio, *window_args(account.sid), "--batch-size", "1000", stdout=subprocess.PIPE,
                      stderr=terminal)
    finally:
        os.close(terminal)
    reader.join(10)
    shown = b"".join(captured).decode()
    assert result.returncode == 0
    assert result.stdout == (f"1500 calls read from Twilio for {account.sid}: 1500 stored (1500 new, 0 changed), "
                             "0 already there unchanged, 0 skipped\n")
    updates = [part.removeprefix("\x1b[K") for part in shown.split("\r") if part]
    assert updates[0] == "0 calls read, 0 stored"
    assert "1000 calls read, 1000 stored" in updates and "1500 calls read, 1500 stored" in updates
    assert updates[-1] == "" and "\n" not in shown  # cleared, for the summary line to stand alone


def _drain(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        into.append(chunk)
    os.close(fd)
