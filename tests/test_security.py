"""Security: the access matrix, the OpenAPI document against real responses, limits, the create rate
limit across processes, and auth tokens at rest (hashed and encrypted, rotatable)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
from pathlib import Path

import pytest
import schemathesis
from sqlalchemy import text

from api.factory import create_app
from shared.signing import signature
from shared.platform.config import Settings, get_settings
from tests.support import FORM, WsgiClient, feedback_path, make_account, make_calls, snapshot, summaries_path

CALLERS = ("owner", "parent", "subaccount", "sibling", "unrelated", "wrong token", "no credentials",
           "malformed credentials")
OPERATIONS = ("create", "fetch", "delete", "feedback fetch", "feedback post", "annotation fetch", "annotation update")


@pytest.fixture
def world(engine, redis_client):
    parent = make_account(engine, name="parent")
    child = make_account(engine, parent, name="child")
    sibling = make_account(engine, parent, name="sibling")
    unrelated = make_account(engine, name="unrelated")
    return {"parent": parent, "child": child, "sibling": sibling, "unrelated": unrelated}


def _auth(world, owner_name: str, caller: str):
    owner = world[owner_name]
    accounts = {"owner": owner, "parent": world["parent"] if owner_name == "child" else None,
                "subaccount": world["child"] if owner_name == "parent" else None,
                "sibling": world["sibling"], "unrelated": world["unrelated"]}
    if caller in accounts:
        account = accounts[caller]
        return None if account is None else (account.sid, account.auth_token)
    return {"wrong token": (owner.sid, "0" * 32), "no credentials": None,
            "malformed credentials": "Basic " + base64.b64encode(b"garbage").decode()}[caller]


def _expected(owner_name: str, caller: str) -> int | None:
    """None: success. A parent acts on its subaccount; nobody else acts on another account."""
    if caller in ("wrong token", "no credentials", "malformed credentials"):
        return 401
    if caller == "owner" or (caller == "parent" and owner_name == "child"):
        return None
    return 404


# Every relation that exists: a top-level account has no parent, a subaccount no subaccount.
PAIRS = [(owner, caller) for owner in ("parent", "child") for caller in CALLERS
         if (owner, caller) not in (("parent", "parent"), ("child", "subaccount"))]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("owner_name, caller", PAIRS)
def test_access_matrix(client, engine, redis_client, world, owner_name, caller, operation):
    owner = world[owner_name]
    created = client.post(summaries_path(owner.sid), form=FORM, auth=(owner.sid, owner.auth_token)).json["sid"]
    call_sid = make_calls(engine, owner, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)])[0]
    client.post(feedback_path(owner.sid, call_sid), form={"QualityScore": "4"}, auth=(owner.sid, owner.auth_token))
    redis_client.flushdb()
    before = snapshot(engine, redis_client)
    verb, path, form = {
        "create": ("POST", summaries_path(owner.sid), FORM),
        "fetch": ("GET", summaries_path(owner.sid, created), None),
        "delete": ("DELETE", summaries_path(owner.sid, created), None),
        "feedback fetch": ("GET", feedback_path(owner.sid, call_sid), None),
        "feedback post": ("POST", feedback_path(owner.sid, call_sid), {"QualityScore": "2"}),
        # No account in the path: the call's own account is the one the caller must act on.
        "annotation fetch": ("GET", f"/v1/Voice/{call_sid}/Annotation", None),
        "annotation update": ("POST", f"/v1/Voice/{call_sid}/Annotation", {"CallScore": "2"}),
    }[operation]
    response = client.request(verb, path, form=form, auth=_auth(world, owner_name, caller))
    expected = _expected(owner_name, caller)
    if expected is None:
        assert response.status in (200, 201, 204), response.body
        if response.body:
            assert response.json["account_sid"] == owner.sid
        return
    assert (response.status, response.json["code"]) == (expected, {401: 20003, 404: 20404}[expected])
    assert set(response.json) == {"code", "message", "more_info", "status"}
    # Nothing in the answer but what the caller sent: no SID beyond those in its own request path.
    sids = re.compile(r"(?:AC|FS|CA)[0-9a-f]{32}")
    assert set(sids.findall(response.body.decode())) <= set(sids.findall(path))
    after = snapshot(engine, redis_client)
    if operation == "annotation update" and expected == 404:
        # Counted before its call is looked up (a call not known yet is recorded), as a Feedback post for
        # another account's call is: the caller's own rate-limit windows, and nothing else.
        after["redis"] = [key for key in after["redis"] if not key.startswith(b"LIMITS:LIMITER/feedback/")]
    assert after == before


# --- the OpenAPI document -------------------------------------------------------------------------

@pytest.fixture
def openapi(app):
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


def test_real_responses_validate_against_the_openapi_document(openapi, client, engine, world):
    owner, stranger = world["child"], world["unrelated"]
    call_sid = make_calls(engine, owner, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)])[0]
    summary = "/2010-04-01/Accounts/{AccountSid}/Calls/FeedbackSummary.json"
    one = "/2010-04-01/Accounts/{AccountSid}/Calls/FeedbackSummary/{Sid}.json"
    feedback = "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Feedback.json"
    good, bad = _basic(owner), _basic(stranger)
    form = "application/x-www-form-urlencoded"
    checked = []

    def check(path, method, expected, media_type=None, **parts):
        case = openapi[path][method].Case(media_type=media_type, **parts)
        response = case.call()
        assert response.status_code == expected, response.text
        case.validate_response(response)
        checked.append((method, path, expected))
        return response

    created = check(summary, "POST", 201, form, path_parameters={"AccountSid": owner.sid}, body=FORM,
                    headers={"Authorization": good}).json()
    check(summary, "POST", 400, form, path_parameters={"AccountSid": owner.sid}, body={"StartDate": "x"},
          headers={"Authorization": good})
    check(summary, "POST", 401, form, path_parameters={"AccountSid": owner.sid}, body=FORM)
    check(summary, "POST", 404, form, path_parameters={"AccountSid": owner.sid}, body=FORM,
          headers={"Authorization": bad})
    check(summary, "POST", 413, form, path_parameters={"AccountSid": owner.sid},
          body={"StartDate": "2024-01-01", "EndDate": "2024-01-31", "Pad": "x" * get_settings().max_body_bytes},
          headers={"Authorization": good})
    check(one, "GET", 200, path_parameters={"AccountSid": owner.sid, "Sid": created["sid"]},
          headers={"Authorization": good})
    check(one, "GET", 404, path_parameters={"AccountSid": owner.sid, "Sid": "FS" + "0" * 32},
          headers={"Authorization": good})
    check(feedback, "POST", 200, form, path_parameters={"AccountSid": owner.sid, "CallSid": call_sid},
          body={"QualityScore": 3, "Issue": ["dropped-call"]}, headers={"Authorization": good})
    check(feedback, "GET", 200, path_parameters={"AccountSid": owner.sid, "CallSid": call_sid},
          headers={"Authorization": good})
    check(feedback, "POST", 400, form, path_parameters={"AccountSid": owner.sid, "CallSid": call_sid},
          body={"QualityScore": 9}, headers={"Authorization": good})
    check(one, "DELETE", 204, path_parameters={"AccountSid": owner.sid, "Sid": created["sid"]},
          headers={"Authorization": good})
    annotation = "/v1/Voice/{CallSid}/Annotation"
    check(annotation, "POST", 200, form, path_parameters={"CallSid": call_sid}, headers={"Authorization": good},
          body={"CallScore": "2", "QualityIssues": "latency, echo", "Spam": "True", "AnsweredBy": "human",
                "ConnectivityIssue": "caller_id", "Comment": "c", "Incident": "i"})
    check(annotation, "GET", 200, path_parameters={"CallSid": call_sid}, headers={"Authorization": good})
    check(annotation, "GET", 200, path_parameters={"CallSid": make_calls(engine, owner, [dt.datetime(2024, 1, 3)])[0]},
          headers={"Authorization": good})  # a call without an annotation: every field null
    check(annotation, "POST", 400, form, path_parameters={"CallSid": call_sid}, body={"CallScore": "6"},
          headers={"Authorization": good})
    check(annotation, "POST", 401, form, path_parameters={"CallSid": call_sid}, body={"CallScore": "2"})
    check(annotation, "GET", 404, path_parameters={"CallSid": call_sid}, headers={"Authorization": bad})
    status_form = {"AccountSid": owner.sid, "CallSid": "CA" + "5" * 32, "CallStatus": "initiated",
                   "Timestamp": "Tue, 02 Jan 2024 10:00:00 +0000"}
    signed = signature(owner.auth_token, "http://localhost/twilio/voice/status", status_form)
    check("/twilio/voice/status", "POST", 204, form, body=status_form, headers={"X-Twilio-Signature": signed})
    check("/twilio/voice/status", "POST", 403, form, body=status_form, headers={"X-Twilio-Signature": "forged"})
    check("/healthz", "GET", 200)
    check("/readyz", "GET", 200)
    assert len(checked) == 21


def _basic(account) -> str:
    return "Basic " + base64.b64encode(f"{account.sid}:{account.auth_token}".encode()).decode()


# --- limits ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("what, request_kwargs, status, words", [
    ("a long path", dict(method="GET", path="/2010-04-01/Accounts/" + "A" * 3000), 400, "too long"),
    ("a long query string", dict(method="GET", path="/healthz", query="x=" + "1" * 5000), 400, "too long"),
    ("a huge Authorization header", dict(method="GET", path="/2010-04-01/Accounts/{ac}/Calls/FeedbackSummary/"
                                                             "FS00000000000000000000000000000000.json",
                                          auth="Basic " + "A" * 10_000), 401, "malformed"),
])
def test_oversized_requests_get_a_clear_twilio_error(client, world, what, request_kwargs, status, words):
    kwargs = dict(request_kwargs)
    kwargs["path"] = kwargs["path"].format(ac=world["parent"].sid)
    response = client.request(kwargs.pop("method"), kwargs.pop("path"), **kwargs)
    assert response.status == status and words in response.json["message"], what


def test_dates_far_in_the_past_or_future_and_huge_callbacks_are_400(client, world):
    parent = world["parent"]
    for form in ({"StartDate": "0001-01-01", "EndDate": "2024-01-01"}, {"StartDate": "2024-01-01", "EndDate": "9999-12-31"},
                 {**FORM, "StatusCallback": "https://example.com/" + "x" * 100_000}):
        response = client.post(summaries_path(parent.sid), form=form, auth=(parent.sid, parent.auth_token))
        assert response.status in (400, 413) and response.json["code"] == 20001


# --- the create rate limit ------------------------------------------------------------------------

def test_the_create_rate_limit_holds_across_processes_and_answers_429_with_retry_after(engine, redis_client, world,
                                                                                      monkeypatch):
    monkeypatch.setenv("CREATE_RATE_LIMIT", "3/minute")
    settings = Settings.from_env()
    first, second = WsgiClient(create_app(settings)), WsgiClient(create_app(settings))  # two API processes
    parent, other = world["parent"], world["unrelated"]
    statuses = [c.post(summaries_path(parent.sid), form=FORM, auth=(parent.sid, parent.auth_token)).status
                for c in (first, second, first)]
    assert statuses == [201, 201, 201]
    before = snapshot(engine)
    limited = second.post(summaries_path(parent.sid), form=FORM, auth=(parent.sid, parent.auth_token))
    assert (limited.status, limited.json["code"]) == (429, 20429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert snapshot(engine) == before
    assert first.post(summaries_path(other.sid), form=FORM, auth=(other.sid, other.auth_token)).status == 201


# --- auth tokens at rest --------------------------------------------------------------------------

def test_no_token_is_stored_in_plaintext(engine, world):
    with engine.connect() as connection:
        dump = json.dumps([list(map(str, row)) for row in connection.execute(text("SELECT * FROM accounts"))])
    for account in world.values():
        assert account.auth_token not in dump
        assert re.fullmatch(r"[0-9a-f]{32}", account.auth_token)


def test_a_token_is_rotated_through_a_secondary_that_works_until_promoted(client, engine, world):
    from sqlalchemy.orm import Session

    from cli import accounts

    parent = world["parent"]
    old = parent.auth_token
    with Session(engine) as session:
        new = accounts.rotate_token(session, parent.sid)
        session.commit()
    path = summaries_path(parent.sid, "FS" + "0" * 32)
    assert client.get(path, auth=(parent.sid, old)).status == 404  # both authenticate (404: no such summary)
    assert client.get(path, auth=(parent.sid, new)).status == 404
    with Session(engine) as session:
        accounts.promote_token(session, parent.sid)
        session.commit()
    assert client.get(path, auth=(parent.sid, old)).status == 401
    assert client.get(path, auth=(parent.sid, new)).status == 404
    with Session(engine) as session:
        from shared.models import Account

        assert session.get(Account, parent.sid).auth_token == new  # the signing key of callbacks from now on


@pytest.mark.slow
def test_tokens_are_rotated_from_the_command_line(engine, world):
    from tests.processes import summaries_cli as summaries

    sid = world["unrelated"].sid
    assert summaries("accounts", "promote-token", sid).returncode == 2  # nothing to promote yet
    rotated = json.loads(summaries("accounts", "rotate-token", sid, "--json").stdout)
    assert re.fullmatch(r"[0-9a-f]{32}", rotated["secondary_token"])
    assert "secondary token promoted" in summaries("accounts", "promote-token", sid).stdout


@pytest.mark.slow
def test_the_server_banner_carries_no_version(service_urls, tmp_path):
    import urllib.request

    from tests.processes import gunicorn

    process, base_url = gunicorn(tmp_path)
    try:
        with urllib.request.urlopen(base_url + "/healthz") as response:
            server = response.headers.get("Server", "")
    finally:
        process.stop()
    assert not re.search(r"\d", server), server


@pytest.mark.slow
def test_two_gunicorn_masters_on_one_machine_share_no_control_socket(service_urls, tmp_path):
    """gunicorn 27 opens a control socket at one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn):
    a second master (the console, another checkout) took it from the first. Ours open none."""
    from tests.processes import console_server, gunicorn

    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(home)}
    for name in ("a", "b", "console"):
        (tmp_path / name).mkdir()
    # Two APIs (two checkouts) and the console beside them (the Procfile's web and console).
    masters = [*(gunicorn(tmp_path / name, env=env) for name in ("a", "b")), console_server(tmp_path / "console", env)]
    try:
        assert not list(home.rglob("*.ctl")), list(home.rglob("*"))
        for process, _ in masters:
            assert "Control socket" not in process.output()
    finally:
        for process, _ in masters:
            process.stop()


@pytest.mark.slow
def test_metrics_port_equal_to_the_apis_own_port_is_refused_in_one_line(service_urls):
    import os
    import subprocess

    from cli import processes
    from tests.processes import ROOT
    from tests.support import free_port

    port = free_port()
    result = subprocess.run(processes.python_m(processes.web(f"127.0.0.1:{port}", 1)), cwd=ROOT, timeout=60,
                            env={**os.environ, "METRICS_PORT": str(port)}, capture_output=True, text=True)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("summaries ")]
    assert result.returncode != 0 and lines == [
        f"summaries web: configuration: METRICS_PORT {port} is the API's own port; choose another"], result.stderr


@pytest.mark.slow
def test_a_reload_keeps_the_api_and_its_metrics_listener(service_urls, tmp_path):
    """SIGHUP, gunicorn's reload: with METRICS_PORT the bind list changed from two to one, gunicorn
    closed both listeners, failed to open them again and the master exited (found by review)."""
    import signal
    import urllib.request

    from cli import processes
    from tests.processes import Process, wait_for
    from tests.support import free_port

    public, metrics = free_port(), free_port()
    process = Process("gunicorn-reload", processes.python_m(processes.web(f"127.0.0.1:{public}", 1)), tmp_path,
                      {"METRICS_PORT": str(metrics)})

    def answers(port: int, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(lambda: answers(public, "/healthz") and answers(metrics, "/metrics"), 30, 0.2, "both listeners")
        process.popen.send_signal(signal.SIGHUP)
        wait_for(lambda: "Hang up" in process.output() or "Handling signal: hup" in process.output(), 10, 0.1,
                 "the reload")
        time.sleep(3)  # the new workers booted, the old ones gone
        assert process.popen.poll() is None, process.output()[-2000:]
        assert answers(public, "/healthz") and answers(metrics, "/metrics"), process.output()[-2000:]
        assert "Address already in use" not in process.output()
    finally:
        process.stop()


@pytest.mark.slow
def test_metrics_stay_off_a_unix_socket_whatever_the_host_header_says(service_urls, tmp_path):
    """The documented set-up behind a proxy: the API on a unix socket, METRICS_PORT for the scraper.
    A request on the public socket naming the metrics port in `Host:` gets no /metrics (gunicorn
    makes SERVER_PORT from that header there); the metrics listener, on loopback TCP, does."""
    import http.client
    import socket

    from cli import processes
    from tests.processes import Process, wait_for
    from tests.support import free_port

    metrics_port, path = free_port(), str(tmp_path / "api.sock")
    process = Process("gunicorn-unix", processes.python_m(processes.web(f"unix:{path}", 1)), tmp_path,
                      {"METRICS_PORT": str(metrics_port)})

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(5)
            self.sock.connect(path)

    def get(connection, target: str, host: str) -> tuple[int, bytes]:
        connection.request("GET", target, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read()

    def metrics_answer() -> bool:
        try:
            return get(http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=5), "/healthz",
                       "localhost")[0] == 200
        except OSError:
            return False

    try:
        wait_for(metrics_answer, 30, 0.2, "the metrics listener")
        public = UnixConnection("localhost")
        for host in (f"anything:{metrics_port}", f"127.0.0.1:{metrics_port}", "localhost"):
            status, body = get(public, "/metrics", host)
            assert status == 404 and b"cfs_" not in body, (host, status)
        assert get(public, "/healthz", f"x:{metrics_port}")[0] == 200
        status, body = get(http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=5), "/metrics", "localhost")
        assert status == 200 and b"cfs_" in body
        assert not (tmp_path / str(metrics_port)).exists() and not Path(str(metrics_port)).exists()
    finally:
        process.stop()



def test_the_encryption_key_is_rotated_by_reencrypting(engine, world, monkeypatch, service_urls):
    from cryptography.fernet import Fernet
    from sqlalchemy.orm import Session

    from cli import accounts
    from shared.accounts import secrets
    from shared.models import Account
    from tests.support import reset_caches

    def reread_keys():
        reset_caches()

    old_keys = b",".join(secrets._keys()).decode()
    new_key = Fernet.generate_key().decode()
    token = world["parent"].auth_token
    monkeypatch.setenv("AUTH_TOKEN_KEYS", f"{new_key},{old_keys}")
    reread_keys()
    try:
        with Session(engine) as session:
            assert accounts.reencrypt_all(session) == 4
            session.commit()
        monkeypatch.setenv("AUTH_TOKEN_KEYS", new_key)  # the old key retired
        reread_keys()
        with Session(engine) as session:
            assert session.get(Account, world["parent"].sid).auth_token == token
    finally:  # the run's own key again for the other tests (each starts from empty tables)
        monkeypatch.setenv("AUTH_TOKEN_KEYS", old_keys)
        reread_keys()
