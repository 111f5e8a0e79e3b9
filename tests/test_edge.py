"""The edge under hostile traffic, in process: odd bytes answer a Twilio-format 4xx (never a 500),
HEAD is answered wherever GET is, metric labels stay a closed set, and the create rate limit is
the caller's and spent only by real creates."""

from __future__ import annotations

import base64

import pytest

from api.factory import create_app
from shared.platform.config import Settings
from tests.support import FORM, WsgiClient, feedback_path, make_account, make_calls, snapshot, summaries_path




def auth(account) -> tuple[str, str]:
    return account.sid, account.auth_token


@pytest.mark.parametrize("header", [
    "Basic " + "é" * 20,  # not ASCII: b64decode raises ValueError, not binascii.Error
    "Basic \u00ff\u00fe",
    "Basic " + base64.b64encode("AC\u00e9:tök".encode("latin-1")).decode(),  # base64 of bytes that are not UTF-8
])
def test_a_non_ascii_or_non_utf8_authorization_header_is_401(client, engine, redis_client, account, header):
    before = snapshot(engine, redis_client)
    response = client.get(summaries_path(account.sid, "FS" + "0" * 32), auth=header)
    assert (response.status, response.json["code"]) == (401, 20003)
    assert snapshot(engine, redis_client) == before


@pytest.mark.parametrize("path", [
    lambda a: summaries_path(a.sid, "FS\x00" + "0" * 31),
    lambda a: summaries_path(a.sid, "\x00"),
    lambda a: feedback_path(a.sid, "CA\x00" + "0" * 31),
    lambda a: feedback_path(a.sid, "\x00"),
    lambda a: "/v1/Voice/CA\x00" + "0" * 31 + "/Annotation",
    lambda a: "/v1/Voice/\x00/Annotation",
    lambda a: f"/2010-04-01/Accounts/{a.sid}\x00/Calls/FeedbackSummary.json",
])
@pytest.mark.parametrize("method", ["GET", "DELETE", "POST"])
def test_a_nul_byte_in_a_sid_of_the_path_is_a_twilio_4xx(client, engine, redis_client, account, path, method):
    before = snapshot(engine, redis_client)
    response = client.request(method, path(account), auth=auth(account), form={"QualityScore": "3", **FORM})
    assert 400 <= response.status < 500 and response.json["status"] == response.status, response.body
    assert snapshot(engine, redis_client) == before


def test_head_is_answered_wherever_get_is_with_the_same_headers_and_no_body(client, engine, account):
    call_sid = make_calls(engine, account, [__import__("datetime").datetime(2024, 1, 2, tzinfo=__import__(
        "datetime").timezone.utc)])[0]
    assert client.post(feedback_path(account.sid, call_sid), form={"QualityScore": "4"}, auth=auth(account)).status == 200
    created = client.post(summaries_path(account.sid), form=FORM, auth=auth(account)).json["sid"]
    for path, authorization in ((summaries_path(account.sid, created), auth(account)),
                                (feedback_path(account.sid, call_sid), auth(account)),
                                (f"/v1/Voice/{call_sid}/Annotation", auth(account)),
                                ("/healthz", None), ("/openapi.json", None)):
        got, head = client.get(path, auth=authorization), client.request("HEAD", path, auth=authorization)
        assert head.status == got.status == 200 and head.body == b""
        same = {k: v for k, v in got.headers.items() if k != "Twilio-Request-Id"}
        assert {k: v for k, v in head.headers.items() if k != "Twilio-Request-Id"} == same
    # Where GET is not, HEAD is not either; and Allow names HEAD beside GET.
    refused = client.request("HEAD", summaries_path(account.sid), auth=auth(account))
    assert refused.status == 405 and refused.headers["Allow"] == "POST"
    assert client.request("PUT", summaries_path(account.sid, created), auth=auth(account)).headers["Allow"] == \
        "DELETE, GET, HEAD"
    assert client.request("HEAD", summaries_path(account.sid, created)).status == 401


def test_made_up_methods_are_one_metric_label_and_metrics_stay_small(client, engine, redis_client):
    for i in range(300):
        assert client.request(f"X{i:04d}", "/healthz").status == 405
        assert client.request(f"Y{i:04d}", f"/made/up/{i}").status == 404
    body = client.get("/metrics").body.decode()
    assert 'method="other"' in body and "X0001" not in body and "Y0299" not in body and "/made/up" not in body
    assert len(body) < 200_000


def test_metrics_can_be_served_on_a_port_of_their_own(engine, redis_client, monkeypatch):
    monkeypatch.setenv("METRICS_PORT", "9464")
    app = WsgiClient(create_app(Settings.from_env()))

    class Listener:  # the connection's socket, as gunicorn gives it in environ["gunicorn.socket"]
        def __init__(self, name):
            self.name = name

        def getsockname(self):
            return self.name

    def on(port: str, path: str, host: str | None = None):
        name = ("127.0.0.1", int(port)) if port.isdigit() else port
        # SERVER_PORT says the metrics port, as gunicorn makes it from `Host:` on a unix socket: ignored.
        extra = {"gunicorn.socket": Listener(name), "SERVER_PORT": "9464", "HTTP_HOST": host or "x:9464"}
        original = app.app

        def with_listener(environ, start_response):
            return original({**environ, **extra}, start_response)

        return WsgiClient(with_listener).get(path)

    assert on("8080", "/metrics").status == 404
    assert on("8080", "/healthz").status == 200
    assert on("9464", "/metrics").status == 200 and b"cfs_" in on("9464", "/metrics").body
    assert on("9464", "/healthz").status == 200
    assert on("9464", "/openapi.json").status == 404  # the API is not on the metrics port
    assert on("/run/summaries.sock", "/metrics").status == 404  # a unix socket: never the metrics listener
    assert on("/run/summaries.sock", "/healthz").status == 200


@pytest.mark.parametrize("first_bind, expected", [
    ("0.0.0.0:8080", "0.0.0.0:9464"), ("127.0.0.1:8080", "127.0.0.1:9464"), ("[::1]:8080", "[::1]:9464"),
    ("unix:/run/summaries.sock", "127.0.0.1:9464"), ("fd://3", "127.0.0.1:9464"), ("localhost", "localhost:9464"),
    ("tcp://0.0.0.0:8080", "0.0.0.0:9464")])
def test_the_metrics_listener_is_tcp_whatever_the_api_binds(service_urls, first_bind, expected):
    from api.gunicorn_conf import metrics_bind

    assert metrics_bind(first_bind, 9464) == expected


def test_a_parents_rate_limit_covers_its_subaccounts_paths(engine, redis_client, monkeypatch):
    monkeypatch.setenv("CREATE_RATE_LIMIT", "3/minute")
    client = WsgiClient(create_app(Settings.from_env()))
    parent = make_account(engine)
    subs = [make_account(engine, parent) for _ in range(3)]
    statuses = [client.post(summaries_path(target.sid), form=FORM, auth=auth(parent)).status
                for target in [parent, *subs]]
    assert statuses == [201, 201, 201, 429]
    # A subaccount acting with its own credentials has its own limit.
    assert client.post(summaries_path(subs[0].sid), form=FORM, auth=auth(subs[0])).status == 201


def test_idempotent_replays_do_not_use_up_the_rate_limit(engine, redis_client, monkeypatch):
    monkeypatch.setenv("CREATE_RATE_LIMIT", "3/minute")
    client = WsgiClient(create_app(Settings.from_env()))
    account = make_account(engine)
    first = client.post(summaries_path(account.sid), form=FORM, auth=auth(account), headers={"Idempotency-Key": "k"})
    assert first.status == 201
    replays = [client.post(summaries_path(account.sid), form=FORM, auth=auth(account),
                           headers={"Idempotency-Key": "k"}) for _ in range(30)]
    assert {r.status for r in replays} == {201} and {r.json["sid"] for r in replays} == {first.json["sid"]}
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in replays)
    # Two real creates are still left in the window.
    assert [client.post(summaries_path(account.sid), form=FORM, auth=auth(account)).status for _ in range(3)] == \
        [201, 201, 429]
