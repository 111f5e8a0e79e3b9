"""Callback logic in units: the retry policy, the signature against the official library's
validator, the SSRF address rules; the circuit breaker and slots on the test Redis (their rules are Lua)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
import socket
import threading
import time
from email.utils import format_datetime

import pytest
from twilio.request_validator import RequestValidator

from shared.callbacks import url as callback_url
from shared.callbacks.url import request_target
from shared.signing import signature
from worker import ssrf
from shared.callbacks.circuit import Admission, CircuitBreaker, Slots
from worker.retry_policy import Outcome, backoff_s, classify, next_delay_s, retry_after_s
from worker.ssrf import Deadline, ForbiddenAddress, is_forbidden

TOKEN = "12345678901234567890123456789012"
PARAMS = {"AccountSid": "AC" + "1" * 32, "Status": "completed", "Issues": '[{"description":"dropped-call"}]',
          "QualityScoreAverage": "", "CallCount": "12"}


@pytest.mark.parametrize("status, outcome", [
    (200, Outcome.DELIVERED), (204, Outcome.DELIVERED), (299, Outcome.DELIVERED),
    (None, Outcome.RETRY), (408, Outcome.RETRY), (429, Outcome.RETRY), (500, Outcome.RETRY), (503, Outcome.RETRY),
    (301, Outcome.FINAL), (302, Outcome.FINAL), (400, Outcome.FINAL), (401, Outcome.FINAL), (404, Outcome.FINAL),
    (410, Outcome.FINAL), (100, Outcome.FINAL),
])
def test_classify_follows_the_spec(status, outcome):
    assert classify(status) is outcome


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap_with_jitter_inside_each_step():
    rng = random.Random(7)
    for attempt, ceiling in [(1, 60), (2, 120), (3, 240), (9, 15360), (10, 21600), (40, 21600), (200, 21600)]:
        for _ in range(50):
            assert ceiling / 2 <= backoff_s(attempt, 60, 21600, rng) <= ceiling


def test_the_default_schedule_spreads_twelve_attempts_over_about_a_day():
    lowest = sum(backoff_s(n, 60, 21600, random.Random(0)) for n in range(1, 12))
    assert 10 * 3600 < lowest and sum(min(21600, 60 * 2 ** (n - 1)) for n in range(1, 12)) < 24 * 3600


def test_retry_after_as_seconds_or_a_date_and_capped():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert retry_after_s("120", now) == 120
    assert retry_after_s(format_datetime(now + dt.timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after_s("soon", now) is None and retry_after_s(None, now) is None
    assert next_delay_s(1, 120, 1, 60, random.Random(0)) == 60  # honoured up to the cap
    assert next_delay_s(1, 5, 1, 60, random.Random(0)) == 5  # longer than our backoff: the receiver's
    assert next_delay_s(3, 0, 10, 60, random.Random(0)) >= 20  # shorter: ours


def test_a_post_signature_is_accepted_by_the_official_validator():
    url = "https://example.com:8443/hooks/summary?tenant=7"
    target, form = request_target(url, "POST", PARAMS)
    assert (target, form) == (url, PARAMS)
    assert RequestValidator(TOKEN).validate(url, PARAMS, signature(TOKEN, url, PARAMS))
    assert not RequestValidator("0" * 32).validate(url, PARAMS, signature(TOKEN, url, PARAMS))
    assert not RequestValidator(TOKEN).validate(url, {**PARAMS, "CallCount": "13"}, signature(TOKEN, url, PARAMS))


def test_a_get_signature_covers_the_query_string_and_is_accepted():
    target, form = request_target("https://example.com/hook?tenant=7", "GET", PARAMS)
    assert form is None and target.startswith("https://example.com/hook?tenant=7&AccountSid=")
    assert RequestValidator(TOKEN).validate(target, {}, signature(TOKEN, target, None))
    assert request_target("https://example.com/hook", "GET", {"A": "1"})[0] == "https://example.com/hook?A=1"


@pytest.mark.parametrize("address, forbidden", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True), ("169.254.169.254", True),
    ("0.0.0.0", True), ("224.0.0.1", True), ("240.0.0.1", True), ("100.64.0.1", True), ("::1", True),
    ("fe80::1", True), ("fc00::1", True), ("::ffff:127.0.0.1", True), ("ff02::1", True),
    ("8.8.8.8", False), ("2606:4700:4700::1111", False), ("93.184.215.14", False),
])
def test_non_public_addresses_are_forbidden(address, forbidden):
    assert is_forbidden(address) is forbidden


def test_allowed_networks_open_exactly_those_networks():
    import ipaddress

    allowed = (ipaddress.ip_network("127.0.0.0/8"),)
    assert not is_forbidden("127.0.0.1", allowed) and is_forbidden("10.0.0.1", allowed)


def test_the_circuit_opens_after_consecutive_failures_and_a_success_closes_it(redis_client):
    breaker = CircuitBreaker(redis_client, threshold=3, cooldown_s=60, probe_lease_s=30)
    assert [breaker.record_failure("h") for _ in range(3)] == [False, False, True]
    assert 59 < breaker.wait_s("h") <= 60 and breaker.wait_s("other") == 0
    breaker.record_success("h")
    assert breaker.wait_s("h") == 0
    assert breaker.record_failure("h") is False  # the count started again


def test_half_open_lets_exactly_one_attempt_through_and_its_outcome_decides(redis_client):
    client = redis_client  # the circuit's rules are Lua: a real Redis runs them
    breaker = CircuitBreaker(client, threshold=2, cooldown_s=0.05, probe_lease_s=30)
    breaker.record_failure("acct:ip")
    assert breaker.record_failure("acct:ip") is True
    time.sleep(0.1)  # the cooldown (50 ms) is over: half-open
    waits = [breaker.wait_s("acct:ip") for _ in range(8)]
    assert waits[0] == 0 and all(w >= 1 for w in waits[1:])  # one probe; the other seven wait
    assert breaker.record_failure("acct:ip") is True  # the probe failed: open again at once
    assert breaker.wait_s("acct:ip") > 0
    time.sleep(0.1)
    assert breaker.wait_s("acct:ip") == 0
    breaker.record_success("acct:ip")  # the probe succeeded: closed for everyone
    assert [breaker.wait_s("acct:ip") for _ in range(3)] == [0, 0, 0]
    assert breaker.wait_s("other-account:ip") == 0  # per account and destination


def test_slots_of_a_dead_holder_free_themselves_and_a_full_key_is_named(redis_client):
    slots = Slots(redis_client, lease_s=0.3)
    limits = {"destination:203.0.113.7": 2, "account:AC1": 5}
    assert slots.acquire("a", limits) is None and slots.acquire("b", limits) is None
    assert slots.acquire("c", limits) == "destination:203.0.113.7"  # full: nothing taken for c
    assert redis_client.zcard("cfs:slots:account:AC1") == 2
    # a and b die holding their slots (never released); traffic keeps coming: the slots expire anyway.
    for _ in range(5):
        slots.acquire("probe", limits)
        slots.release("probe", list(limits))
    time.sleep(0.35)
    assert slots.acquire("d", limits) is None
    slots.release("d", list(limits))
    assert redis_client.zcard("cfs:slots:destination:203.0.113.7") == 0


def test_one_accounts_share_is_bounded_so_another_account_always_finds_a_slot(redis_client):
    slots = Slots(redis_client, lease_s=60)
    taken = [slots.acquire(f"a{i}", {"destination:198.51.100.1": 32, "account:ACslow": 4}) for i in range(30)]
    assert taken[:4] == [None] * 4 and set(taken[4:]) == {"account:ACslow"}
    assert slots.acquire("b", {"destination:198.51.100.2": 32, "account:ACfast": 4}) is None


@pytest.mark.parametrize("url, words", [
    ("https://example.com/hook#frag", "fragment"),
    ("https://example.com/hook?a=1#", "fragment"),
    ("http://*.x/hook", "cannot be requested"),
    ("http://" + "a" * 64 + ".example.com/", "cannot be requested"),
    ("http://bü*cher.x/hook", "cannot be requested"),
    ("http://exa mple.com/", "absolute http or https URL"),
    ("ftp://example.com/", "absolute http or https URL"),
    ("http://example.com:0/", "absolute http or https URL"),
    ("http://example.com:99999/", "absolute http or https URL"),
    ("https://" + "a" * 2100 + ".com", "at most 2048"),
])
def test_a_url_the_sender_cannot_use_is_refused_with_a_reason(url, words):
    assert words in (callback_url.problem(url) or ""), url


@pytest.mark.parametrize("url", ["https://example.com/hook", "http://example.com:8080/h?tenant=7&x=",
                                 "https://bücher.example/hook", "https://example.com/hook?", "http://[2001:db8::1]/h"])
def test_a_usable_url_is_accepted(url):
    assert callback_url.problem(url) is None


def test_a_trailing_question_mark_gets_no_second_one_and_the_signature_covers_the_wire_url():
    import requests

    target, _ = request_target("https://example.com/hook?", "GET", {"Issues": "[]", "A": "1"})
    assert target == "https://example.com/hook?Issues=%5B%5D&A=1"
    prepared = requests.Request("GET", target).prepare()
    assert "??" not in prepared.url and prepared.url == target
    post_url, form = request_target("https://example.com/hook?", "POST", {"A": "1"})
    wire = requests.Request("POST", post_url, data=form).prepare().url  # what the worker signs and sends
    assert RequestValidator("t" * 32).validate(wire, form, signature("t" * 32, wire, form))


@pytest.mark.parametrize("header", ["\u00b2", "\u0665", "Wed, 21 Oct 99999999999999999999 07:28:00 GMT",
                                    "Wed, 21 Oct 2015 25:99:00 GMT", "soon", "-5"])
def test_a_retry_after_no_one_can_read_is_ignored_never_an_error(header):
    assert retry_after_s(header, dt.datetime.now(dt.timezone.utc)) is None


def _admission(client, threshold=2, cooldown_s=0.05, lease_s=30):
    return Admission(CircuitBreaker(client, threshold, cooldown_s, lease_s), Slots(client, lease_s))


def test_admission_in_one_round_trip_lets_exactly_one_half_open_probe_through(redis_client):
    admission, limits = _admission(redis_client), {"destination:203.0.113.9": 64, "account:AC1": 64}
    assert admission.finish("acct:ip", "t0", list(limits), "failure") is False
    assert admission.finish("acct:ip", "t0", list(limits), "failure") is True  # the threshold: open
    assert admission.admit("cfs:m", "acct:ip", "t1", limits)[0] > 0  # open: wait
    assert admission.breaker.wait_s("acct:ip") > 0  # the same keys as CircuitBreaker's
    time.sleep(0.1)  # half-open
    answers = [admission.admit("cfs:m", "acct:ip", f"p{i}", limits) for i in range(8)]
    assert answers[0] == (0, None) and all(wait >= 1 for wait, _ in answers[1:])
    assert redis_client.zcard("cfs:slots:account:AC1") == 1  # only the probe took slots
    assert admission.finish("acct:ip", "p0", list(limits), "failure") is True  # the probe failed: open again
    time.sleep(0.1)
    assert admission.admit("cfs:m", "acct:ip", "q", limits) == (0, None)
    admission.finish("acct:ip", "q", list(limits), "success")  # closed for everyone
    assert [admission.admit("cfs:m", "acct:ip", f"r{i}", limits)[0] for i in range(3)] == [0, 0, 0]
    assert admission.admit("cfs:m", "other:ip", "s", limits) == (0, None)  # per account and destination


def test_admission_clears_the_marker_takes_every_slot_or_none_and_finish_gives_them_back(redis_client):
    admission = _admission(redis_client, threshold=5)
    limits = {"destination:198.51.100.3": 2, "account:AC2": 5}
    redis_client.set("cfs:inflight:callback:FSx", 1)
    assert admission.admit("cfs:inflight:callback:FSx", "AC2:198.51.100.3", "a", limits) == (0, None)
    assert not redis_client.exists("cfs:inflight:callback:FSx")
    assert admission.admit("m", "AC2:198.51.100.3", "b", limits) == (0, None)
    assert admission.admit("m", "AC2:198.51.100.3", "c", limits) == (0, "destination:198.51.100.3")
    assert redis_client.zcard("cfs:slots:account:AC2") == 2  # nothing taken for c
    for token, outcome in (("a", None), ("b", "failure")):
        admission.finish("AC2:198.51.100.3", token, list(limits), outcome)
    assert redis_client.zcard("cfs:slots:account:AC2") == 0 == redis_client.zcard("cfs:slots:destination:198.51.100.3")
    assert redis_client.get("cfs:circuit:failures:AC2:198.51.100.3") == b"1"  # None counted nothing


def test_slots_taken_by_admission_of_a_dead_holder_free_themselves(redis_client):
    admission = _admission(redis_client, threshold=5, lease_s=0.3)
    limits = {"destination:203.0.113.7": 1, "account:AC3": 5}
    assert admission.admit("m", "AC3:203.0.113.7", "dead", limits) == (0, None)  # never finished
    assert admission.admit("m", "AC3:203.0.113.7", "x", limits) == (0, "destination:203.0.113.7")
    time.sleep(0.35)
    assert admission.admit("m", "AC3:203.0.113.7", "y", limits) == (0, None)


class _KeepAliveServer:
    """Answers each request on a connection in turn from `replies` (each: body, drip seconds per byte);
    counts the connections accepted."""

    def __init__(self, replies):
        self.accepted, self.replies = 0, list(replies)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/h"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn):
        with conn, conn.makefile("rb") as reader:
            while self.replies:
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if not line:
                    return
                reader.read(length)
                body, drip_s = self.replies.pop(0)
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                    for byte in body:
                        conn.sendall(bytes([byte]))
                        time.sleep(drip_s)
                except OSError:
                    return

    def close(self):
        self.sock.close()


def _post(server, deadline_s=2.0):
    import requests

    prepared = requests.Request("POST", server.url, data={"a": "b"}).prepare()
    allowed = (ipaddress.ip_network("127.0.0.0/8"),)
    with Deadline(deadline_s) as deadline:
        try:
            response = ssrf.send(prepared, allowed, (1, 1))
            body = response.raw.read(1024)
            response.close()
        except Exception as error:  # noqa: BLE001
            return deadline, error
    return deadline, body


def test_a_kept_alive_connection_is_reused_and_still_cut_off_at_the_attempts_deadline():
    server = _KeepAliveServer([(b"ok", 0), (b"x" * 100, 0.2)])  # the second drips for 20 s
    try:
        result = []
        thread = threading.Thread(target=lambda: result.extend([_post(server), _post(server, 1.0)]))
        started = time.monotonic()
        thread.start()
        thread.join(10)
        (first_deadline, first), (second_deadline, _) = result
        assert first == b"ok" and not first_deadline.expired
        assert second_deadline.expired and time.monotonic() - started < 3
        assert server.accepted == 1  # the second request went on the first's connection
    finally:
        server.close()


def test_a_connection_idle_longer_than_the_keepalive_limit_is_replaced(monkeypatch):
    monkeypatch.setattr(ssrf, "KEEPALIVE_IDLE_S", 0.0)
    server = _KeepAliveServer([(b"ok", 0), (b"ok", 0), (b"ok", 0)])
    try:
        result = []
        thread = threading.Thread(target=lambda: result.extend([_post(server), _post(server)]))
        thread.start()
        thread.join(10)
        assert [body for _, body in result] == [b"ok", b"ok"] and server.accepted == 2
    finally:
        server.close()


def test_the_per_thread_sender_refuses_a_forbidden_peer_before_any_byte():
    import requests

    server = _KeepAliveServer([(b"ok", 0)])
    try:
        prepared = requests.Request("POST", server.url).prepare()
        with Deadline(2), pytest.raises(ForbiddenAddress):
            ssrf.send(prepared, (), (1, 1))  # loopback not allowed: refused on the connected socket
        time.sleep(0.1)
        assert server.replies == [(b"ok", 0)]  # no request reached it
    finally:
        server.close()


def test_a_delivery_that_keeps_finding_its_share_full_looks_again_less_and_less_often(service_urls, monkeypatch):
    """Each time in a row, the bound of the wait doubles (0.5 to 1.5 s, then up to 3, 6 ... 30 s):
    a family's long backlog no longer costs the workers a claim and a message per delivery a second."""
    import fakeredis

    from worker import callbacks

    client = fakeredis.FakeRedis()
    monkeypatch.setattr(callbacks.random, "uniform", lambda low, high: (low, high))
    bounds = [callbacks.busy_delay_s(client, "FSbusy") for _ in range(7)]
    assert bounds == [(0.5, 1.5), (0.5, 3.0), (0.5, 6.0), (0.5, 12.0), (0.5, 24.0), (0.5, 30.0), (0.5, 30.0)]
    assert callbacks.busy_delay_s(client, "FSother") == (0.5, 1.5)  # per delivery
    assert 0 < client.ttl("cfs:busy:FSbusy") <= callbacks.BUSY_MEMORY_S  # and forgotten after a while
