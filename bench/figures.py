"""Each function measures one row of the table: ours and what it is measured against, in the same run."""

from __future__ import annotations

import base64
import datetime as dt
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench import processes
from bench.dataset import Dataset
from bench.receiver import Receiver
from shared.platform.db import lift_statement_timeout
from shared.platform.queue import enqueue_callback, enqueue_summary, get_redis
from tests import direct_aggregates as aggregates
from worker import rollups

WEB_WORKERS = 2  # one per core (4 measured no better here); the same for the API and the bare app


@dataclass
class Row:
    figure: str
    ours: str
    against: str
    ratio: str
    target: str
    met: bool | None  # None: nothing to meet
    notes: str = ""  # printed under the table (a row's own breakdown, e.g. the console's pages)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def summary_sql(engine: Engine, data: Dataset, direct_runs: int = 3, rollup_runs: int = 30) -> Row:
    end = dt.date.today()
    start = end - dt.timedelta(days=365)
    timings = {}
    with Session(engine) as session:
        # The direct aggregates over 10M rows take seconds each: beyond a request's statement timeout.
        lift_statement_timeout(session.connection())
        for name, compute, runs in (("direct", aggregates.compute, direct_runs), ("rollups", rollups.compute,
                                                                                 rollup_runs)):
            compute(session, data.big.sid, False, start, end)  # warm the cache, as a busy server has it
            samples = []
            for _ in range(runs):
                began = time.perf_counter()
                result = compute(session, data.big.sid, False, start, end)
                samples.append(time.perf_counter() - began)
            timings[name] = (statistics.median(samples), result)
    (direct_s, direct), (rollup_s, rollup) = timings["direct"], timings["rollups"]
    assert direct == rollup, "the rollups disagree with the direct aggregates"
    ratio = direct_s / rollup_s
    return Row(f"one-year summary, {data.big_calls / 1e6:g}M calls / {direct.call_feedback_count / 1e6:.1f}M feedback,"
               " worker SQL time", f"rollups {_ms(rollup_s)}", f"direct aggregates {_ms(direct_s)}", f"{ratio:.0f}×",
               "≥ 50× faster, ≤ 20 ms", ratio >= 50 and rollup_s <= 0.020)


def _wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, int]:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec:")))
    errors = sum(int(line.split()[-1]) for line in out.splitlines() if line.strip().startswith("Non-2xx"))
    return rate, errors


def _post_script(work: Path, account, body: str) -> Path:
    auth = base64.b64encode(f"{account.sid}:{account.auth_token}".encode()).decode()
    script = work / "create.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = "{body}"\n'
                      f'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
                      f'wrk.headers["Authorization"] = "Basic {auth}"\n')
    return script


class PeakRss:
    """Samples the resident memory of a child's processes while a measurement runs."""

    def __init__(self, child: processes.Child):
        self.child, self.peak_mb, self._stop = child, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for mb in self.child.peak_rss_mb().values():
                self.peak_mb = max(self.peak_mb, mb)
            time.sleep(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def creates_per_second(engine: Engine, data: Dataset, work: Path, seconds: int) -> tuple[Row, float]:
    account = data.small[0]
    path = f"/2010-04-01/Accounts/{account.sid}/Calls/FeedbackSummary.json"
    script = _post_script(work, account, "StartDate=2024-01-01&EndDate=2024-01-31")
    results = {}
    peak_api_mb = 0.0
    for name, app in (("api", "api.wsgi:application"), ("bare", "bench.bare_wsgi:application")):
        child, base = processes.gunicorn(app, work, workers=WEB_WORKERS, name=f"gunicorn-{name}")
        try:
            sampler = PeakRss(child)
            results[name] = _wrk(base + path, script, seconds, 16)
            if name == "api":
                peak_api_mb = sampler.stop()
            else:
                sampler.stop()
        finally:
            child.stop()
    (ours, errors), (bare, _) = results["api"], results["bare"]
    with engine.begin() as connection:  # the bench's summaries are not for computing
        connection.execute(text("DELETE FROM feedback_summaries WHERE account_sid = :a"), {"a": account.sid})
    get_redis().delete("summaries")
    ratio = ours / bare
    row = Row(f"summary creates per second (auth, validate, insert, enqueue) under gunicorn, {WEB_WORKERS} processes",
              f"{ours:,.0f}/s ({errors} errors)", f"bare WSGI 201: {bare:,.0f}/s", f"{ratio:.2f}", "≥ 0.3 of it",
              ratio >= 0.3 and errors == 0)
    return row, peak_api_mb


def _signed_events_script(work: Path, url: str, account, count: int) -> tuple[Path, list[str]]:
    """A wrk script that posts `count` distinct, validly signed call status callbacks (an `initiated`
    event each, new calls: the insert path), the threads taking turns through them."""
    from email.utils import format_datetime
    from urllib.parse import urlencode

    from shared.accounts.sids import CALL, new_sid
    from shared.signing import signature

    token, sids, bodies, signatures = account.auth_token, [], [], []
    at = format_datetime(dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    for _ in range(count):
        sid = new_sid(CALL)
        form = {"AccountSid": account.sid, "CallSid": sid, "CallStatus": "initiated", "Timestamp": at,
                "SequenceNumber": "0", "ApiVersion": "2010-04-01", "Direction": "outbound-api",
                "From": "+15005550006", "To": "+15005550001", "CallbackSource": "call-progress-events"}
        sids.append(sid)
        bodies.append(urlencode(form))
        signatures.append(signature(token, url, form))
    requests_file = work / "status-callbacks.txt"  # signature, then body, a line each
    requests_file.write_text("".join(f"{sig}\n{body}\n" for sig, body in zip(signatures, bodies)))
    script = work / "status-callbacks.lua"
    script.write_text(
        "local threads = 0\n"
        "function setup(thread) thread:set('id', threads); threads = threads + 1 end\n"
        "function init(args)\n"
        f"  signatures, bodies, next_index = {{}}, {{}}, id\n"
        f"  local file = io.open('{requests_file}')\n"
        "  while true do\n"
        "    local sig, body = file:read('*l'), file:read('*l')\n"
        "    if not body then break end\n"
        "    signatures[#signatures + 1], bodies[#bodies + 1] = sig, body\n"
        "  end\n"
        "  file:close()\n"
        "end\n"
        "function request()\n"
        "  local i = (next_index % #bodies) + 1\n"
        "  next_index = next_index + 2\n"
        "  return wrk.format('POST', nil, {['Content-Type'] = 'application/x-www-form-urlencoded',\n"
        "                                  ['X-Twilio-Signature'] = signatures[i]}, bodies[i])\n"
        "end\n")
    return script, sids


def _wait(predicate, timeout_s: float, interval_s: float = 0.02) -> float:
    began = time.perf_counter()
    while not predicate():
        if time.perf_counter() - began > timeout_s:
            raise TimeoutError("the bench waited too long; see the logs in the work directory")
        time.sleep(interval_s)
    return time.perf_counter() - began


def _ping(app_name: str, timeout_s: float = 30) -> None:
    """Wait until a worker of this Celery app answers a ping."""
    from celery import Celery

    from shared.platform.config import get_settings
    from shared.platform.queue import broker_url

    app = Celery(broker=broker_url(get_settings()))
    _wait(lambda: bool(app.control.ping(timeout=0.5)), timeout_s, 0.2)
    app.close()


def _queued_summaries(engine: Engine, data: Dataset, n: int) -> list[str]:
    with engine.begin() as connection:
        rows = connection.execute(text(
            "INSERT INTO feedback_summaries (sid, account_sid, start_date, end_date, include_subaccounts) "
            "SELECT 'FS' || md5(random()::text || g), (CAST(:accounts AS text[]))[1 + g % cardinality(CAST(:accounts AS text[]))], "
            "current_date - 30, current_date, false FROM generate_series(1, :n) g RETURNING sid"),
            {"accounts": [a.sid for a in data.small], "n": n})
        return [sid for (sid,) in rows]


def _completed(engine: Engine, sids: list[str]) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM feedback_summaries WHERE sid = ANY(:s) AND "
                                       "status = 'completed'"), {"s": sids}).scalar()


def summaries_per_second(engine: Engine, data: Dataset, work: Path, n: int) -> tuple[Row, float]:
    worker = processes.celery_worker("worker.celery_app", "summaries", work, "bench-summaries", 2)
    try:
        _ping("worker")
        sids = _queued_summaries(engine, data, n)
        sampler = PeakRss(worker)
        began = time.perf_counter()
        for sid in sids:
            enqueue_summary(sid)
        _wait(lambda: _completed(engine, sids) == n, 600, 0.05)
        ours = n / (time.perf_counter() - began)
        peak_worker_mb = sampler.stop()
    finally:
        worker.stop()
    from bench.noop_app import DONE_KEY, noop

    redis = get_redis()
    redis.delete(DONE_KEY)
    noop_worker = processes.celery_worker("bench.noop_app", "bench-noop", work, "bench-noop", 2)
    try:
        _ping("noop")
        began = time.perf_counter()
        for _ in range(n):
            noop.apply_async(args=[time.time()])
        _wait(lambda: redis.llen(DONE_KEY) >= n, 600, 0.05)
        baseline = n / (time.perf_counter() - began)
    finally:
        noop_worker.stop()
    ratio = ours / baseline
    return Row("summaries completed per second, small accounts (2 prefork processes)", f"{ours:,.0f}/s",
               f"Celery no-op tasks: {baseline:,.0f}/s", f"{ratio:.2f}", "≥ 0.3 of it", ratio >= 0.3), peak_worker_mb


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def end_to_end_latency(engine: Engine, data: Dataset, work: Path, seconds: int, rate: int = 20) -> Row:
    receiver = Receiver()
    env = {"CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8"}
    children = [processes.celery_worker("worker.celery_app", "summaries", work, "e2e-summaries", 2, env=env),
                processes.celery_worker("worker.celery_app", "callbacks", work, "e2e-callbacks", 16, "threads", env)]
    web, base = processes.gunicorn("api.wsgi:application", work, 2, "gunicorn-e2e")
    children.append(web)
    account = data.small[1]
    session = requests.Session()
    session.auth = (account.sid, account.auth_token)
    url = f"{base}/2010-04-01/Accounts/{account.sid}/Calls/FeedbackSummary.json"
    form = {"StartDate": "2024-01-01", "EndDate": "2024-01-31", "StatusCallback": receiver.url}
    sent: dict[str, float] = {}

    def create():
        began = time.time()
        sent[session.post(url, data=form, timeout=10).json()["sid"]] = began

    try:
        _ping("e2e")
        with ThreadPoolExecutor(8) as pool:
            for i in range(2 * rate):  # warm-up: every process opens its connections first
                pool.submit(create)
                time.sleep(1 / rate)
            _wait(lambda: receiver.count() >= len(sent), 60, 0.05)
            sent.clear()
            for i in range(seconds * rate):
                pool.submit(create)
                time.sleep(1 / rate)
        _wait(lambda: all(sid in receiver.arrivals for sid in list(sent)), 60, 0.05)
        ours = [receiver.arrivals[sid] - at for sid, at in sent.items()]
    finally:
        for child in children:
            child.stop()
        receiver.close()
    from bench.noop_app import DONE_KEY, noop

    redis = get_redis()
    redis.delete(DONE_KEY)
    noop_worker = processes.celery_worker("bench.noop_app", "bench-noop", work, "bench-noop-rt", 2)
    baseline = []
    try:
        _ping("noop")
        for i in range((seconds + 2) * rate):
            noop.apply_async(args=[time.time()])
            _, value = redis.blpop([DONE_KEY], timeout=10)
            sent_at, _ran_at = map(float, value.decode().split(":"))
            if i >= 2 * rate:  # the same warm-up
                baseline.append(time.time() - sent_at)
            time.sleep(1 / rate)
    finally:
        noop_worker.stop()
    p50, p99 = _percentile(ours, 50), _percentile(ours, 99)
    return Row(f"POST → callback received, p50 / p99 at {rate} creates/s ({len(ours)} summaries)",
               f"{_ms(p50)} / {_ms(p99)}", f"Celery no-op round trip: {_ms(_percentile(baseline, 50))} / "
               f"{_ms(_percentile(baseline, 99))}", f"{p50 / _percentile(baseline, 50):.1f}× the round trip (p50)",
               "p50 ≤ 50 ms, p99 ≤ 250 ms", p50 <= 0.050 and p99 <= 0.250)


def _pending_deliveries(engine: Engine, data: Dataset, n: int, url: str) -> list[str]:
    sids = _queued_summaries(engine, data, n)
    with engine.begin() as connection:
        connection.execute(text("UPDATE feedback_summaries SET status = 'completed', call_count = 0, "
                                "call_feedback_count = 0, issues = '[]' WHERE sid = ANY(:s)"), {"s": sids})
        connection.execute(text(
            "INSERT INTO callback_deliveries (summary_sid, account_sid, url, host, method, params, "
            "idempotency_token, attempt_limit) SELECT sid, account_sid, :url, '127.0.0.1', 'POST', "
            "jsonb_build_object('FeedbackSummarySid', sid, 'Status', 'completed'), md5(sid), 3 "
            "FROM feedback_summaries WHERE sid = ANY(:s)"), {"s": sids, "url": url})
    return sids


def callbacks_per_second(engine: Engine, data: Dataset, work: Path, n: int, concurrency: int = 64,
                         worker_processes: int = 4) -> Row:
    receiver = Receiver(delay_s=0.1)
    try:
        capacity_script = work / "receiver.lua"
        capacity_script.write_text('wrk.method = "POST"\nwrk.body = "FeedbackSummarySid=x"\n'
                                   'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n')
        capacity, _ = _wrk(receiver.url, capacity_script, 5, concurrency)
        receiver.arrivals.clear()
        sids = _pending_deliveries(engine, data, n, receiver.url)
        env = {"CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8", "CALLBACK_MAX_IN_FLIGHT_PER_HOST": str(concurrency)}
        # One threads-pool process per core, as the Procfile's callbacks process is meant to be scaled.
        workers = [processes.celery_worker("worker.celery_app", "callbacks", work, f"bench-callbacks-{i}",
                                           concurrency // worker_processes, "threads", env)
                   for i in range(worker_processes)]
        try:
            _ping("callbacks")
            began = time.perf_counter()
            for sid in sids:
                enqueue_callback(sid)
            _wait(lambda: receiver.count() >= n, 600, 0.05)
            ours = n / (time.perf_counter() - began)
        finally:
            for worker in workers:
                worker.stop()
    finally:
        receiver.close()
    return Row(f"callbacks delivered per second to a receiver that takes 100 ms ({worker_processes} processes × "
               f"{concurrency // worker_processes} threads)",
               f"{ours:,.0f}/s", f"receiver capacity at {concurrency} connections: {capacity:,.0f}/s",
               f"{ours / capacity:.2f}", "≥ 200/s", ours >= 200)
