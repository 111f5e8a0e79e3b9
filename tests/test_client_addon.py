"""clients/python, the add-on that gives twilio 8.x and 9.x clients the Feedback Summary resource back,
against the API under gunicorn over a real socket: with twilio 8.13.0 in this process (held to the
library's own `client.calls.feedback_summaries`: same attributes, same exceptions), and with the
newest twilio 9.x in the second virtualenv that `make test` builds (.venv-twilio9), through a script
that prints what it saw as JSON."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import inspect
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from tests.processes import ROOT, running, stopped
from tests.receiver import QuietHandler, serve
from tests.support import add_feedback, make_account, make_calls

ADDON_DIR = ROOT / "clients" / "python"
ADDON_SOURCE = ADDON_DIR / "twilio_feedback_summaries.py"
TWILIO9_PYTHON = ROOT / ".venv-twilio9" / "bin" / "python"
SUMMARY_SID = re.compile(r"FS[0-9a-f]{32}")

sys.path.insert(0, str(ADDON_DIR))  # the add-on as a user of twilio 8.x would have it, from the checkout
import twilio_feedback_summaries  # noqa: E402
from twilio_feedback_summaries import feedback_summaries  # noqa: E402

pytestmark = pytest.mark.slow  # gunicorn, as a process; a script in a second interpreter



@pytest.fixture
def completed_sid(server, account, engine):
    """A completed summary with numbers and issues: created through the API, computed by the worker's
    task in this process."""
    from worker.summaries import compute_summary  # the Celery app reads the test services at import

    calls = make_calls(engine, account, [dt.datetime(2024, 1, day, 12) for day in range(1, 8)])
    for call_sid, score, issues in zip(calls, (1, 2, 4, 5, 5), (["dropped-call", "imperfect-audio"],
                                                                ["imperfect-audio"], [], [], [])):
        add_feedback(engine, call_sid, account, score, issues, dt.datetime(2024, 1, 10, 9))
    sid = library(account, server).create(start_date=dt.date(2024, 1, 1), end_date=dt.date(2024, 1, 31)).sid
    compute_summary.apply(args=[sid])
    return sid


def twilio_client(account, base_url: str, **kwargs) -> Client:
    client = Client(account.sid, account.auth_token, **kwargs)
    client.api.base_url = base_url
    return client


def library(account, base_url: str):
    """twilio 8.13.0's own resource, the reference the add-on is held to."""
    return twilio_client(account, base_url).calls.feedback_summaries


def as_json(summary) -> dict:
    """A summary's public attributes, each as [type name, JSON value]; also run in the script below."""
    shown = {}
    for name, value in sorted(vars(summary).items()):
        if not name.startswith("_"):
            plain = value.isoformat() if hasattr(value, "isoformat") else \
                str(value) if type(value).__name__ == "Decimal" else value
            shown[name] = [type(value).__name__, plain]
    return shown


def error_of(call) -> dict | None:
    try:
        call()
    except TwilioRestException as error:
        return {"status": error.status, "code": error.code, "msg": error.msg, "uri": error.uri,
                "method": error.method}
    return None


class RecordingHttpClient(TwilioHttpClient):
    """The library's own HTTP client, noting each request it sends."""

    def __init__(self):
        super().__init__()
        self.sent = []

    def request(self, method, url, params=None, data=None, headers=None, **kwargs):
        self.sent.append({"method": method, "url": url, "data": data, "headers": dict(headers or {})})
        return super().request(method, url, params=params, data=data, headers=headers, **kwargs)


def test_the_addon_under_test_is_the_checkout_and_twilio_is_8():
    import twilio

    assert twilio.__version__ == "8.13.0"
    assert twilio_feedback_summaries.__file__ == str(ADDON_SOURCE)


def test_twilio_8_create_with_an_idempotency_key_fetch_delete(server, account):
    http = RecordingHttpClient()
    client = Client(account.sid, account.auth_token, http_client=http)
    summaries = feedback_summaries(client)
    client.api.base_url = server  # read at each request, so set after the resource was made as well
    params = dict(start_date=dt.date(2024, 1, 1), end_date="2024-01-31", include_subaccounts=True,
                  status_callback="https://example.com/done", status_callback_method="GET",
                  idempotency_key="january-2024")

    created = summaries.create(**params)
    assert SUMMARY_SID.fullmatch(created.sid) and created.account_sid == account.sid
    assert (created.status, created.include_subaccounts) == ("queued", True)
    assert (created.start_date, created.end_date) == (dt.date(2024, 1, 1), dt.date(2024, 1, 31))
    assert isinstance(created.date_created, dt.datetime) and created.date_created.tzinfo == dt.timezone.utc
    assert created.call_count is None and created.issues is None
    assert http.sent[0] == {
        "method": "POST", "url": f"{server}/2010-04-01/Accounts/{account.sid}/Calls/FeedbackSummary.json",
        "data": {"StartDate": "2024-01-01", "EndDate": "2024-01-31", "IncludeSubaccounts": "true",
                 "StatusCallback": "https://example.com/done", "StatusCallbackMethod": "GET"},
        "headers": {**http.sent[0]["headers"], "Idempotency-Key": "january-2024"},
    }
    assert summaries.create(**params).sid == created.sid  # the same key: the original summary

    fetched = summaries(created.sid).fetch()
    reference = library(account, server)(created.sid).fetch()
    assert as_json(fetched) == as_json(reference) == as_json(created.fetch())
    assert repr(fetched) == repr(reference)

    assert created.delete() is True
    missing = error_of(summaries(created.sid).fetch)
    assert (missing["status"], missing["code"]) == (404, 20404)
    assert missing["uri"] == f"/Accounts/{account.sid}/Calls/FeedbackSummary/{created.sid}.json"
    assert missing == error_of(library(account, server)(created.sid).fetch)  # exactly as the library raises
    assert error_of(summaries.get(created.sid).delete) == error_of(library(account, server)(created.sid).delete)
    assert {request["method"] for request in http.sent} == {"POST", "GET", "DELETE"}  # all by the client's http


def test_twilio_8_errors_raise_what_the_library_raises(server, account):
    summaries = feedback_summaries(twilio_client(account, server))
    bad_date = error_of(lambda: summaries.create(start_date="2024-02-30", end_date="2024-03-01"))
    assert (bad_date["status"], bad_date["code"], bad_date["method"]) == (400, 20001, "POST")
    assert "StartDate" in bad_date["msg"]
    assert bad_date == error_of(lambda: library(account, server).create(start_date="2024-02-30",
                                                                        end_date="2024-03-01"))
    reversed_dates = error_of(lambda: summaries.create(start_date=dt.date(2024, 2, 1), end_date=dt.date(2024, 1, 1)))
    assert (reversed_dates["status"], reversed_dates["code"]) == (400, 20001) and "EndDate" in reversed_dates["msg"]

    wrong_token = feedback_summaries(twilio_client(SimpleNamespace(sid=account.sid, auth_token="0" * 32), server))
    unauthorized = error_of(wrong_token("FS" + "0" * 32).fetch)
    assert (unauthorized["status"], unauthorized["code"]) == (401, 20003)


def test_twilio_8_a_completed_summary_reads_as_the_library_reads_it(server, account, completed_sid):
    summary = feedback_summaries(twilio_client(account, server))(completed_sid).fetch()
    assert (summary.status, summary.call_count, summary.call_feedback_count) == ("completed", 7, 5)
    assert (float(summary.quality_score_average), float(summary.quality_score_median)) == (3.4, 4.0)
    assert [issue["description"] for issue in summary.issues] == ["imperfect-audio", "dropped-call"]
    assert as_json(summary) == as_json(library(account, server)(completed_sid).fetch())


def test_twilio_8_subaccounts(server, account, engine):
    child = make_account(engine, account)
    as_child = feedback_summaries(twilio_client(account, server, account_sid=child.sid))
    assert as_child.create(start_date="2024-01-01", end_date="2024-01-01").account_sid == child.sid
    named = feedback_summaries(twilio_client(account, server), account_sid=child.sid)
    created = named.create(start_date="2024-01-01", end_date="2024-01-02")
    assert created.account_sid == child.sid and named(created.sid).fetch().sid == created.sid


SCRIPT = inspect.getsource(as_json) + '''
import datetime as dt
import json
import sys

import twilio
import twilio_feedback_summaries
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from twilio_feedback_summaries import feedback_summaries


def error_of(call):
    try:
        call()
    except TwilioRestException as error:
        return {"class": type(error).__module__ + "." + type(error).__qualname__, "status": error.status,
                "code": error.code, "msg": error.msg, "uri": error.uri, "method": error.method}
    return None


base_url, completed_sid = sys.argv[1:3]
client = Client()  # TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN from the environment
client.api.base_url = base_url
summaries = feedback_summaries(client)
params = dict(start_date=dt.date(2024, 1, 1), end_date="2024-01-31", include_subaccounts=True,
              status_callback="https://example.com/done", status_callback_method="GET", idempotency_key="run-1")
created = summaries.create(**params)
replayed = summaries.create(**params)
fetched = summaries(created.sid).fetch()
print(json.dumps({
    "twilio": twilio.__version__,
    "module": twilio_feedback_summaries.__file__,
    "created": as_json(created),
    "replayed_sid": replayed.sid,
    "fetched": as_json(fetched),
    "deleted": summaries(created.sid).delete(),
    "after_delete": error_of(summaries(created.sid).fetch),
    "bad_date": error_of(lambda: summaries.create(start_date="2024-02-30", end_date="2024-03-01")),
    "completed": as_json(summaries(completed_sid).fetch()),
}))
'''


def run_python(python, script: str, args: list[str], account, tmp_path, pythonpath: str | None,
               env: dict | None = None):
    """`script` run by `python` with the account's credentials in the environment (and no edge, region,
    proxy setting or PYTHONPATH of this process's), plus `env`; what it printed, as JSON."""
    dropped = ("PYTHONPATH", "TWILIO_EDGE", "TWILIO_REGION", *PROXY_VARIABLES)
    environ = {name: value for name, value in os.environ.items() if name not in dropped}
    environ.update(TWILIO_ACCOUNT_SID=account.sid, TWILIO_AUTH_TOKEN=account.auth_token, **(env or {}))
    if pythonpath:
        environ["PYTHONPATH"] = pythonpath
    done = subprocess.run([str(python), "-c", script, *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def twilio_python(major: int) -> tuple[Path | str, str | None]:
    """The interpreter with twilio `major` and the add-on, and the PYTHONPATH it needs for the add-on."""
    if major == 8:
        return sys.executable, str(ADDON_DIR)
    if not TWILIO9_PYTHON.exists():
        pytest.fail(f"{TWILIO9_PYTHON} is missing: run `make test`, which builds .venv-twilio9 "
                    "(the newest twilio 9.x and clients/python)")
    return TWILIO9_PYTHON, None


def check_installed(result: dict) -> None:
    installed = open(result["module"], "rb").read()
    assert installed == ADDON_SOURCE.read_bytes(), \
        f"{result['module']} is not the current {ADDON_SOURCE}: run `make test` to reinstall it"


def run_script(python, account, server, completed_sid, tmp_path, pythonpath: str | None) -> dict:
    return run_python(python, SCRIPT, [server, completed_sid], account, tmp_path, pythonpath)


@pytest.mark.parametrize("major", [8, 9])
def test_the_same_script_with_twilio_8_and_the_newest_9(server, account, completed_sid, tmp_path, major):
    python, pythonpath = twilio_python(major)
    result = run_script(python, account, server, completed_sid, tmp_path, pythonpath)
    check_installed(result)
    assert result["twilio"].split(".")[0] == str(major)

    created = result["created"]
    sid = created["sid"][1]
    assert SUMMARY_SID.fullmatch(sid)
    assert created["status"] == ["str", "queued"] and created["account_sid"] == ["str", account.sid]
    assert created["start_date"] == ["date", "2024-01-01"] and created["end_date"] == ["date", "2024-01-31"]
    assert created["include_subaccounts"] == ["bool", True] and created["date_created"][0] == "datetime"
    assert result["replayed_sid"] == sid
    assert result["fetched"] == created
    assert result["deleted"] is True
    assert result["after_delete"] == {
        "class": "twilio.base.exceptions.TwilioRestException", "status": 404, "code": 20404, "method": "GET",
        "uri": f"/Accounts/{account.sid}/Calls/FeedbackSummary/{sid}.json",
        "msg": result["after_delete"]["msg"],
    }
    assert result["after_delete"]["msg"].startswith("Unable to fetch record: ")
    bad_date = result["bad_date"]
    assert (bad_date["class"], bad_date["status"], bad_date["code"]) == \
        ("twilio.base.exceptions.TwilioRestException", 400, 20001) and "StartDate" in bad_date["msg"]
    # Field for field, type for type, what twilio 8.13.0's own resource reads.
    assert result["completed"] == json.loads(json.dumps(as_json(library(account, server)(completed_sid).fetch())))


# Edge and region. twilio's ClientBase.request (8.13.0 and 9.x) passes every URL through get_hostname,
# which, once the client has an edge or a region (`Client(edge=…, region=…)`, else TWILIO_EDGE and
# TWILIO_REGION from the environment, or `client.edge`/`client.region` set later), rebuilds its host as
# first label, edge, region, last two labels: summaries.example.test becomes summaries.dublin.ie1.example.test,
# 127.0.0.1:8080 becomes 127.ie1.0.1:8080. The request, and the account's credentials with it, would go
# there. A real HTTP server stands in front of the service as the twilio client's HTTP proxy (http_proxy:
# the library's TwilioHttpClient, through requests, honours it), so it sees every request with the host it
# was sent to, whether or not that host exists.

SERVICE_HOST = "summaries.example.test"  # a reserved name, never resolved: the front answers for it
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY")
EDGE_CASES = [
    {"environ": {"TWILIO_EDGE": "dublin"}},
    {"environ": {"TWILIO_REGION": "ie1"}},
    {"environ": {"TWILIO_EDGE": "dublin", "TWILIO_REGION": "ie1"}},
    {"attributes": {"edge": "sydney"}},
    {"attributes": {"region": "au1"}},
    {"arguments": {"edge": "frankfurt", "region": "de1"}},
]


class Front:
    """A real HTTP server on a loopback port, the twilio client's HTTP proxy: it notes each request's
    addressed host (the request target's and the Host header's) and Authorization, forwards a request for
    one of the service's names (SERVICE_HOST, or the front's own address) to the API under gunicorn, and
    answers any other with 502, forwarding nothing."""

    def __init__(self, upstream: str):
        self.seen: list[dict] = []
        self._lock = threading.Lock()
        front = self

        class Handler(QuietHandler):
            def _handle(self):
                target = urlsplit(self.path)  # absolute-form through a proxy: http://host/path?query
                host = self.headers.get("Host", "")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with front._lock:
                    front.seen.append({"host": host, "target": target.netloc or host, "method": self.command,
                                       "authorization": self.headers.get("Authorization")})
                if host in front.service_hosts and target.netloc in ("", host):
                    status, headers, payload = front.forward(self.command, target, self.headers, body)
                else:
                    status, headers, payload = 502, [("Content-Type", "application/json")], \
                        b'{"message": "not the service", "code": 20502}'
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _handle

        self._server, self.url = serve(Handler)
        self.service_hosts = {SERVICE_HOST, urlsplit(self.url).netloc}
        self._upstream = urlsplit(upstream).netloc

    def forward(self, method: str, target, headers, body: bytes):
        hop = ("host", "connection", "proxy-connection", "keep-alive")
        connection = http.client.HTTPConnection(self._upstream, timeout=30)
        try:
            connection.request(method, target.path + (f"?{target.query}" if target.query else ""), body or None,
                               {name: value for name, value in headers.items() if name.lower() not in hop})
            answer = connection.getresponse()
            payload = answer.read()
        finally:
            connection.close()
        kept = [(name, value) for name, value in answer.getheaders()
                if name.lower() not in (*hop, "content-length", "transfer-encoding", "date", "server")]
        return answer.status, kept, payload

    def hosts(self) -> set[tuple[str, str]]:
        return {(seen["target"], seen["host"]) for seen in self.seen}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def front(server):
    front = running(Front(server))
    yield front
    front.stop()
    stopped(front)


@pytest.fixture
def through_front(front, monkeypatch):
    """This process's requests go through the front (and no edge or region comes from outside)."""
    for name in ("TWILIO_EDGE", "TWILIO_REGION", *PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", front.url)
    monkeypatch.setenv("HTTP_PROXY", front.url)
    return front


def basic(account) -> str:
    return "Basic " + base64.b64encode(f"{account.sid}:{account.auth_token}".encode()).decode()


EDGE_SCRIPT = '''
import datetime as dt
import json
import os
import sys

import twilio
import twilio_feedback_summaries
from twilio.rest import Client
from twilio_feedback_summaries import feedback_summaries

base_url, cases = sys.argv[1], json.loads(sys.argv[2])
outcomes = []
for case in cases:
    for name in ("TWILIO_EDGE", "TWILIO_REGION"):
        os.environ.pop(name, None)
    os.environ.update(case.get("environ", {}))
    client = Client(**case.get("arguments", {}))  # TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN from the environment
    for name, value in case.get("attributes", {}).items():
        setattr(client, name, value)
    client.api.base_url = base_url
    outcome = {"edge_region": [client.edge, client.region]}
    try:
        summaries = feedback_summaries(client)
        created = summaries.create(start_date=dt.date(2024, 1, 1), end_date="2024-01-31")
        outcome["fetched"] = summaries(created.sid).fetch().sid == created.sid
        outcome["deleted"] = summaries(created.sid).delete()
    except Exception as error:
        outcome["error"] = repr(error)
    outcome["after"] = [client.edge, client.region, client.api.base_url]
    outcomes.append(outcome)
print(json.dumps({"twilio": twilio.__version__, "module": twilio_feedback_summaries.__file__,
                  "outcomes": outcomes}))
'''


@pytest.mark.parametrize("major", [8, 9])
@pytest.mark.parametrize("named", [True, False], ids=["by-name", "by-address"])
def test_edge_and_region_never_move_the_addons_requests(front, account, tmp_path, major, named):
    base_url = f"http://{SERVICE_HOST}" if named else front.url
    python, pythonpath = twilio_python(major)
    result = run_python(python, EDGE_SCRIPT, [base_url, json.dumps(EDGE_CASES)], account, tmp_path, pythonpath,
                        {"http_proxy": front.url, "HTTP_PROXY": front.url})
    check_installed(result)
    assert result["twilio"].split(".")[0] == str(major)

    netloc = urlsplit(base_url).netloc
    # Every request went to the service's host, none to a rewritten one, and carried the account's credentials.
    assert front.hosts() == {(netloc, netloc)}
    assert {seen["authorization"] for seen in front.seen} == {basic(account)}
    assert len(front.seen) == 3 * len(EDGE_CASES)  # create, fetch, delete: nothing else was sent
    for case, outcome in zip(EDGE_CASES, result["outcomes"]):
        assert "error" not in outcome, (case, outcome)
        assert outcome["fetched"] is True and outcome["deleted"] is True, (case, outcome)
        # The user's client is left as it was: its own requests to Twilio keep their edge and region.
        assert outcome["edge_region"] != [None, None]
        assert outcome["after"] == [*outcome["edge_region"], base_url], (case, outcome)


def test_a_client_left_with_an_edge_would_send_the_credentials_elsewhere(through_front, account, monkeypatch):
    """What the add-on and the documentation guard against, seen by the front (which is thereby shown to
    see it): twilio 8.13.0's own resource, with TWILIO_REGION set, goes to a rewritten host even when the
    client was built with edge=None and region=None (the library falls back to the environment)."""
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    client = twilio_client(account, through_front.url, edge=None, region=None)
    assert client.region == "ie1"
    failed = error_of(lambda: client.calls.feedback_summaries.create(start_date="2024-01-01", end_date="2024-01-31"))
    assert failed["status"] == 502
    port = urlsplit(through_front.url).port
    assert through_front.hosts() == {(f"127.ie1.0.1:{port}", f"127.ie1.0.1:{port}")}
    assert through_front.seen[0]["authorization"] == basic(account)


def test_the_addon_refuses_a_url_rewritten_by_any_other_means(through_front, account):
    """Should a twilio release (or a Client subclass) change the URL some other way than through edge and
    region, the add-on refuses to send the request rather than send the credentials to another host."""

    class Relocating(Client):
        def get_hostname(self, uri):
            return uri.replace("127.0.0.1", "127.0.0.2")

    client = Relocating(account.sid, account.auth_token)
    client.api.base_url = through_front.url
    with pytest.raises(TwilioException, match="127.0.0.2") as refused:
        feedback_summaries(client).create(start_date="2024-01-01", end_date="2024-01-31")
    assert through_front.url in str(refused.value)
    assert through_front.seen == []


def python_block(document: Path, marker: str) -> str:
    """The ```python block of `document` that contains `marker`."""
    blocks = re.findall(r"```python\n(.*?)```", document.read_text(), re.S)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"{len(found)} python blocks of {document} contain {marker!r}"
    return found[0]


def test_the_documented_clients_keep_to_the_service_under_edge_and_region(through_front, account, engine,
                                                                           monkeypatch):
    """The README's and docs/migration.md's client code, as printed (the service's URL replaced by the
    front's), run with twilio 8.13.0 and TWILIO_EDGE and TWILIO_REGION set: no request goes elsewhere
    (the annotations' included, which go through the library's own host rewriting)."""
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    call_sid = make_calls(engine, account, [dt.datetime(2024, 1, 2, 12)])[0]

    def run(document: str, *markers: str) -> dict:
        names = {"Client": Client, "account_sid": account.sid, "auth_token": account.auth_token,
                 "call_sid": call_sid}
        for marker in markers:
            code = python_block(ROOT / document, marker)
            for printed, here in (("http://127.0.0.1:8080", through_front.url),
                                  ("https://summaries.example.com", f"http://{SERVICE_HOST}")):
                code = code.replace(printed, here)
            assert "base_url = " not in code or through_front.url in code or SERVICE_HOST in code, code
            exec(compile(code, f"{document}: {marker}", "exec"), names)
        return names

    run("README.md", "client.api.base_url")  # create, fetch, feedback
    run("docs/migration.md", "client.calls.feedback_summaries.create")  # create, feedback
    add_on = run("docs/migration.md", "feedback_summaries(client)", "http_client.request")  # 3, and feedback
    assert add_on["response"].status_code == 200
    annotating = run("docs/migration.md", "service.insights.base_url")  # 2 updates, a fetch; create, fetch
    assert annotating["annotation"].fetch().comment == "called the customer back"  # and one more fetch

    assert through_front.hosts() <= {(name, name) for name in through_front.service_hosts}
    assert len(through_front.seen) == 15
    assert {seen["authorization"] for seen in through_front.seen} == {basic(account)}
