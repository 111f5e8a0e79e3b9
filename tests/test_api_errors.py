"""The error matrix: every wire and access rule of the SPEC, its status, code, message and headers,
and that a refused request wrote nothing (no row, no message in Redis)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from api.app import App, Services
from shared.platform.config import get_settings
from tests.support import FORM, WsgiClient, feedback_path, free_port, make_account, make_calls, snapshot, summaries_path

MORE_INFO = "https://www.twilio.com/docs/errors/{}"


def assert_error(response, status: int, code: int, *message_parts: str) -> dict:
    assert response.status == status, response.body
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json
    assert set(body) == {"code", "message", "more_info", "status"}
    assert (body["status"], body["code"], body["more_info"]) == (status, code, MORE_INFO.format(code))
    for part in message_parts:
        assert part in body["message"], body["message"]
    assert "Traceback" not in body["message"]
    return body


@pytest.fixture
def world(engine):
    """A parent with two subaccounts, an unrelated account, a call each, and a summary each."""
    parent = make_account(engine, name="parent")
    child = make_account(engine, parent, name="child")
    sibling = make_account(engine, parent, name="sibling")
    stranger = make_account(engine, name="stranger")
    return {"parent": parent, "child": child, "sibling": sibling, "stranger": stranger}


def creds(account):
    return (account.sid, account.auth_token)


def create_summary(client, account, as_=None):
    response = client.post(summaries_path(account.sid), form=FORM, auth=creds(as_ or account))
    assert response.status == 201
    return response.json["sid"]


# --- 400: every create parameter rule -------------------------------------------------------------

BAD_CREATE_FORMS = [
    ({"EndDate": "2024-01-31"}, "StartDate"),
    ({"StartDate": "2024-01-01"}, "EndDate"),
    ({"StartDate": " ", "EndDate": "2024-01-31"}, "StartDate"),
    ({**FORM, "StartDate": "2024-1-1"}, "StartDate"),
    ({**FORM, "StartDate": "2024-02-30"}, "StartDate"),
    ({**FORM, "StartDate": "20240101"}, "StartDate"),
    ({**FORM, "EndDate": "yesterday"}, "EndDate"),
    ({**FORM, "EndDate": "2024-01-31T00:00:00Z"}, "EndDate"),
    ({"StartDate": "2024-02-01", "EndDate": "2024-01-31"}, "EndDate"),
    ({"StartDate": "0001-01-01", "EndDate": "2024-01-31"}, "StartDate"),
    ({"StartDate": "2024-01-01", "EndDate": "9999-12-31"}, "EndDate"),
    ({**FORM, "IncludeSubaccounts": "maybe"}, "IncludeSubaccounts"),
    ({**FORM, "IncludeSubaccounts": "2"}, "IncludeSubaccounts"),
    ({**FORM, "StatusCallbackMethod": "PUT"}, "StatusCallbackMethod"),
    ({**FORM, "StatusCallbackMethod": "DELETE"}, "StatusCallbackMethod"),
    ({**FORM, "StatusCallbackMethod": "po\u017ft"}, "StatusCallbackMethod"),  # its upper() is "POST"
    ({**FORM, "StatusCallbackMethod": "\nGET"}, "StatusCallbackMethod"),  # only spaces and tabs are trimmed
    ({**FORM, "StatusCallback": "not a url"}, "StatusCallback"),
    ({**FORM, "StatusCallback": "ftp://example.com/x"}, "StatusCallback"),
    ({**FORM, "StatusCallback": "/relative/path"}, "StatusCallback"),
    ({**FORM, "StatusCallback": "http://example.com:99999/x"}, "StatusCallback"),
    ({**FORM, "StatusCallback": "https://example.com/" + "a" * 2048}, "StatusCallback"),
    ({**FORM, "StatusCallback": "https://exa mple.com/"}, "StatusCallback"),
    ({"StartDate": ["2024-01-01", "2024-01-02"], "EndDate": "2024-01-31"}, "StartDate"),
    ({**FORM, "IncludeSubaccounts": ["true", "false"]}, "IncludeSubaccounts"),
]


@pytest.mark.parametrize("form, parameter", BAD_CREATE_FORMS)
def test_create_with_a_bad_parameter_is_400_naming_it_and_writes_nothing(client, world, engine, redis_client,
                                                                         form, parameter):
    parent = world["parent"]
    before = snapshot(engine, redis_client)
    response = client.post(summaries_path(parent.sid), form=form, auth=creds(parent))
    assert_error(response, 400, 20001, parameter)
    assert snapshot(engine, redis_client) == before


@pytest.mark.parametrize("body, content_type, message", [
    (b"StartDate=2024-01-01&EndDate=2024-01-31&Bad=\xff\xfe", "application/x-www-form-urlencoded", "UTF-8"),
    (b"StartDate=%FF&EndDate=2024-01-31", "application/x-www-form-urlencoded", "UTF-8"),
    ("&".join(f"p{i}=1" for i in range(101)).encode(), "application/x-www-form-urlencoded", "more than 100"),
    (b'{"StartDate": "2024-01-01"}', "application/json", "Content-Type"),
    (b"<xml/>", "text/xml", "Content-Type"),
])
def test_a_body_that_is_not_a_strict_utf8_form_is_400_and_writes_nothing(client, world, engine, redis_client,
                                                                          body, content_type, message):
    parent = world["parent"]
    before = snapshot(engine, redis_client)
    response = client.post(summaries_path(parent.sid), body=body, auth=creds(parent),
                           headers={"Content-Type": content_type})
    assert_error(response, 400, 20001, message)
    assert snapshot(engine, redis_client) == before


def test_a_malformed_content_length_is_400(client, world):
    parent = world["parent"]
    response = client.post(summaries_path(parent.sid), body=b"StartDate=2024-01-01", auth=creds(parent),
                           headers={"Content-Length": "ten"})
    assert_error(response, 400, 20001, "Content-Length")


@pytest.mark.parametrize("key", ["", "   ", "k" * 256, "tab\tinside"])
def test_a_bad_idempotency_key_is_400_and_writes_nothing(client, world, engine, redis_client, key):
    parent = world["parent"]
    before = snapshot(engine, redis_client)
    response = client.post(summaries_path(parent.sid), form=FORM, auth=creds(parent),
                           headers={"Idempotency-Key": key})
    assert_error(response, 400, 20001, "Idempotency-Key")
    assert snapshot(engine, redis_client) == before


# --- 413 ------------------------------------------------------------------------------------------

def test_a_body_over_the_cap_is_413_with_code_20001_and_is_not_read(client, world, engine, redis_client):
    parent = world["parent"]
    cap = get_settings().max_body_bytes
    before = snapshot(engine, redis_client)

    class Unreadable:
        def read(self, *args):
            raise AssertionError("a body over the cap must not be read")

    response = client.post(summaries_path(parent.sid), stream=Unreadable(), auth=creds(parent),
                           headers={"Content-Length": str(cap + 1)})
    assert_error(response, 413, 20001, str(cap))
    assert snapshot(engine, redis_client) == before


def test_a_chunked_body_over_the_cap_is_413(client, world):
    parent = world["parent"]
    cap = get_settings().max_body_bytes
    response = client.post(summaries_path(parent.sid), body=b"StartDate=" + b"1" * cap, auth=creds(parent),
                           headers={"Content-Length": "", "Transfer-Encoding": "chunked",
                                    "Content-Type": "application/x-www-form-urlencoded"})
    assert_error(response, 413, 20001)


# --- 401 ------------------------------------------------------------------------------------------

def _unauthorized_headers(world):
    parent, stranger = world["parent"], world["stranger"]
    encode = lambda raw: "Basic " + base64.b64encode(raw).decode()  # noqa: E731
    return {
        "no credentials": None,
        "bearer scheme": "Bearer abc",
        "not base64": "Basic !!!not-base64!!!",
        "no colon": encode(parent.sid.encode()),
        "not utf-8": encode(b"AC\xff:\xfe"),
        "wrong token": encode(f"{parent.sid}:{'0' * 32}".encode()),
        "empty token": encode(f"{parent.sid}:".encode()),
        "another account's token": encode(f"{parent.sid}:{stranger.auth_token}".encode()),
        "unknown account": encode(f"AC{'1' * 32}:{parent.auth_token}".encode()),
        "not an account sid": encode(f"admin:{parent.auth_token}".encode()),
    }


@pytest.mark.parametrize("case", ["no credentials", "bearer scheme", "not base64", "no colon", "not utf-8",
                                  "wrong token", "empty token", "another account's token", "unknown account",
                                  "not an account sid"])
@pytest.mark.parametrize("method", ["create", "fetch", "delete", "feedback fetch", "feedback post"])
def test_bad_credentials_are_401_with_www_authenticate_and_write_nothing(client, world, engine, redis_client,
                                                                         case, method):
    parent = world["parent"]
    summary_sid = create_summary(client, parent)
    call_sid = make_calls(engine, parent, [dt.datetime(2024, 1, 2)])[0]
    redis_client.flushdb()
    before = snapshot(engine, redis_client)
    auth = _unauthorized_headers(world)[case]
    requests = {
        "create": ("POST", summaries_path(parent.sid), FORM),
        "fetch": ("GET", summaries_path(parent.sid, summary_sid), None),
        "delete": ("DELETE", summaries_path(parent.sid, summary_sid), None),
        "feedback fetch": ("GET", feedback_path(parent.sid, call_sid), None),
        "feedback post": ("POST", feedback_path(parent.sid, call_sid), {"QualityScore": "5"}),
    }
    verb, path, form = requests[method]
    response = client.request(verb, path, form=form, auth=auth)
    assert_error(response, 401, 20003, "Authentication")
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert snapshot(engine, redis_client) == before


# --- 404: the access rules; existence is never revealed -------------------------------------------

def test_a_subaccount_cannot_reach_its_parent_sibling_or_a_stranger(client, world, engine, redis_client):
    parent, child, sibling, stranger = (world[k] for k in ("parent", "child", "sibling", "stranger"))
    summaries = {name: create_summary(client, world[name]) for name in ("parent", "sibling", "stranger")}
    redis_client.flushdb()
    before = snapshot(engine, redis_client)
    for owner in (parent, sibling, stranger):
        sid = summaries[owner.friendly_name]
        for verb, path, form in (("POST", summaries_path(owner.sid), FORM),
                                 ("GET", summaries_path(owner.sid, sid), None),
                                 ("DELETE", summaries_path(owner.sid, sid), None)):
            response = client.request(verb, path, form=form, auth=creds(child))
            assert_error(response, 404, 20404, path)
    assert snapshot(engine, redis_client) == before


def test_a_parent_cannot_reach_an_unrelated_account(client, world, engine, redis_client):
    parent, stranger = world["parent"], world["stranger"]
    sid = create_summary(client, stranger)
    redis_client.flushdb()
    before = snapshot(engine, redis_client)
    assert_error(client.post(summaries_path(stranger.sid), form=FORM, auth=creds(parent)), 404, 20404)
    assert_error(client.get(summaries_path(stranger.sid, sid), auth=creds(parent)), 404, 20404)
    assert_error(client.delete(summaries_path(stranger.sid, sid), auth=creds(parent)), 404, 20404)
    assert snapshot(engine, redis_client) == before


def test_a_parent_acts_on_its_subaccounts_path(client, world):
    parent, child = world["parent"], world["child"]
    created = client.post(summaries_path(child.sid), form=FORM, auth=creds(parent))
    assert created.status == 201 and created.json["account_sid"] == child.sid
    sid = created.json["sid"]
    assert client.get(summaries_path(child.sid, sid), auth=creds(child)).status == 200
    assert client.get(summaries_path(child.sid, sid), auth=creds(parent)).status == 200
    assert client.delete(summaries_path(child.sid, sid), auth=creds(parent)).status == 204


def test_a_summary_is_only_found_under_its_own_accounts_path(client, world):
    """The parent may read its child's path, but the child's summary is not under the parent's path."""
    parent, child = world["parent"], world["child"]
    sid = create_summary(client, child)
    assert_error(client.get(summaries_path(parent.sid, sid), auth=creds(parent)), 404, 20404)


def test_another_accounts_summary_and_a_missing_one_answer_the_same(client, world):
    parent, stranger = world["parent"], world["stranger"]
    theirs = create_summary(client, stranger)
    missing = "FS" + "0" * 32
    a = client.get(summaries_path(parent.sid, theirs), auth=creds(parent))
    b = client.get(summaries_path(parent.sid, missing), auth=creds(parent))
    assert (a.status, a.json["code"]) == (b.status, b.json["code"]) == (404, 20404)
    assert a.json["message"].replace(theirs, missing) == b.json["message"]


@pytest.mark.parametrize("path", [
    "/", "/2010-04-01/Accounts", "/2010-04-01/Accounts/{ac}/Calls.json",
    "/2010-04-01/Accounts/{ac}/Calls/FeedbackSummary", "/2010-04-01/Accounts/{ac}/Calls/FeedbackSummary/",
    "/2010-04-01/Accounts/{ac}/Calls/FeedbackSummary/FS{zeros}.json",
    "/2010-04-01/Accounts/{ac}/Calls/FeedbackSummary/not-a-sid.json",
    "/2010-04-01/Accounts/{ac}/Calls/CA{zeros}/Feedback.json",
    "/2010-04-01/Accounts/AC{zeros}/Calls/FeedbackSummary/FS{zeros}.json",
    "/2010-04-01/Accounts/not-an-account/Calls/FeedbackSummary/FS{zeros}.json",
    "/2015-01-01/Accounts/{ac}/Calls/FeedbackSummary.json",
])
def test_unknown_paths_and_resources_are_404(client, world, path):
    parent = world["parent"]
    path = path.format(ac=parent.sid, zeros="0" * 32)
    assert_error(client.get(path, auth=creds(parent)), 404, 20404)


def test_feedback_of_a_call_without_feedback_or_of_another_account_is_404(client, world, engine):
    parent, child, stranger = world["parent"], world["child"], world["stranger"]
    own, childs, strangers = (make_calls(engine, a, [dt.datetime(2024, 1, 2)])[0] for a in (parent, child, stranger))
    assert_error(client.get(feedback_path(parent.sid, own), auth=creds(parent)), 404, 20404)
    assert_error(client.post(feedback_path(parent.sid, strangers), form={"QualityScore": "5"}, auth=creds(parent)),
                 404, 20404)
    # A call lives under its own account's path only, even for the parent.
    assert_error(client.post(feedback_path(parent.sid, childs), form={"QualityScore": "5"}, auth=creds(parent)),
                 404, 20404)
    assert client.post(feedback_path(child.sid, childs), form={"QualityScore": "5"}, auth=creds(parent)).status == 200
    assert_error(client.get(feedback_path(child.sid, own), auth=creds(child)), 404, 20404)


# --- 405 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, allow", [
    ("GET", "/2010-04-01/Accounts/{ac}/Calls/FeedbackSummary.json", "POST"),
    ("PUT", "/2010-04-01/Accounts/{ac}/Calls/FeedbackSummary.json", "POST"),
    ("POST", "/2010-04-01/Accounts/{ac}/Calls/FeedbackSummary/FS{zeros}.json", "DELETE, GET, HEAD"),
    ("PATCH", "/2010-04-01/Accounts/{ac}/Calls/FeedbackSummary/FS{zeros}.json", "DELETE, GET, HEAD"),
    ("DELETE", "/2010-04-01/Accounts/{ac}/Calls/CA{zeros}/Feedback.json", "GET, HEAD, POST"),
    ("POST", "/healthz", "GET, HEAD"),
])
def test_a_known_path_with_another_method_is_405_with_allow(client, world, engine, redis_client, method, path, allow):
    parent = world["parent"]
    before = snapshot(engine, redis_client)
    response = client.request(method, path.format(ac=parent.sid, zeros="0" * 32), auth=creds(parent))
    assert_error(response, 405, 20004)
    assert response.headers["Allow"] == allow
    assert snapshot(engine, redis_client) == before


# --- 503 and 500 ----------------------------------------------------------------------------------

def _app_with_database(url: str, client) -> App:
    engine = create_engine(url, connect_args={"connect_timeout": 1}, pool_pre_ping=False)
    services = client.app.services
    return App(Services(settings=services.settings, sessions=sessionmaker(engine),
                        enqueue_summary=services.enqueue_summary, ping_redis=services.ping_redis))


def test_a_database_that_cannot_be_reached_is_503_not_500(client, world):
    parent = world["parent"]
    down = WsgiClient(_app_with_database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none", client))
    refused = down.post(summaries_path(parent.sid), form=FORM, auth=creds(parent))
    assert_error(refused, 503, 20503)
    assert refused.headers["Retry-After"] == "5"
    assert_error(down.get("/readyz"), 503, 20503, "PostgreSQL")
    assert down.get("/healthz").status == 200


def test_readyz_stays_ready_without_redis_and_names_it_degraded(client, world):
    """The API keeps accepting summaries while Redis is down (the sweeper sends them later): a load
    balancer must not drop it, so readiness is PostgreSQL's alone."""
    services = client.app.services

    def refuse():
        raise ConnectionError("refused")

    down = WsgiClient(App(Services(settings=services.settings, sessions=services.sessions,
                                   enqueue_summary=lambda sid: False, ping_redis=refuse)))
    ready = down.get("/readyz")
    assert ready.status == 200 and ready.json == {"status": "degraded", "postgresql": "ok", "redis": "unreachable"}
    parent = world["parent"]
    created = down.post(summaries_path(parent.sid), form=FORM, auth=creds(parent))
    assert created.status == 201 and created.json["status"] == "queued"
    assert client.get("/readyz").json == {"status": "ok", "postgresql": "ok", "redis": "ok"}


def test_metrics_answer_while_redis_is_down_without_its_gauges(client, world, monkeypatch):
    import redis

    from shared.platform import queue

    parent = world["parent"]
    assert client.post(summaries_path(parent.sid), form=FORM, auth=creds(parent)).status == 201
    dead = redis.Redis(port=free_port(), socket_connect_timeout=1, socket_timeout=1)
    monkeypatch.setattr(queue, "get_redis", lambda: dead)
    scrape = client.get("/metrics")
    assert scrape.status == 200
    body = scrape.body.decode()
    assert 'cfs_dependency_up{dependency="redis"} 0.0' in body
    assert 'cfs_dependency_up{dependency="postgresql"} 1.0' in body
    assert "cfs_queue_depth" not in body  # left out, not reported as an empty queue
    assert 'cfs_summaries{status="queued"}' in body and "cfs_http_requests_total" in body
    monkeypatch.undo()
    assert 'cfs_dependency_up{dependency="redis"} 1.0' in client.get("/metrics").body.decode()


def test_an_unexpected_error_is_a_generic_500_without_traceback(client, world, monkeypatch, caplog):
    import api.summaries

    def explode(request, account, Sid):
        raise RuntimeError("secret internals at /srv/app.py line 42")

    monkeypatch.setattr(api.summaries, "fetch", explode)
    from api.factory import create_app

    parent = world["parent"]
    response = type(client)(create_app()).get(summaries_path(parent.sid, "FS" + "0" * 32), auth=creds(parent))
    body = assert_error(response, 500, 20500)
    assert "secret" not in response.body.decode() and "Traceback" not in response.body.decode()
    assert body["message"] == "Internal Server Error"
    assert "secret internals" in caplog.text  # kept for operators, in the log


def test_every_response_is_never_cached_and_never_sniffed(client, world):
    parent = world["parent"]
    for response in (client.get("/healthz"), client.get("/nope"),
                     client.post(summaries_path(parent.sid), form=FORM, auth=creds(parent))):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "Server" not in response.headers
