"""The two log formats: JSON lines for machines, and for a person at a terminal (LOG_FORMAT=text)
one short line per event without the routine lines."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import warnings

import pytest

from shared.platform import logs


@pytest.fixture
def emitted(monkeypatch):
    """Configure logging in a format; what the root logger then writes to stderr."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)

    def configure(log_format: str) -> io.StringIO:
        stream = io.StringIO()
        # Here, not in the fixture: pytest's capture sets sys.stderr again as the test starts.
        monkeypatch.setattr("sys.stderr", stream)
        logs.configure_logging("INFO", log_format)
        return stream

    yield configure
    root.handlers[:], root.level = saved
    logging.captureWarnings(False)


def test_json_is_one_object_per_line_with_the_context(emitted):
    stream = emitted("json")
    with logs.bind(summary_sid="FS1"):
        logging.getLogger("worker.summaries").info("summary completed", extra={"account_sid": "AC1"})
    record = json.loads(stream.getvalue())
    assert (record["message"], record["level"], record["summary_sid"], record["account_sid"]) == \
           ("summary completed", "INFO", "FS1", "AC1")


def test_text_is_one_short_line_with_the_fields_after_the_message(emitted):
    stream = emitted("text")
    with logs.bind(summary_sid="FS1"):
        logging.getLogger("worker.summaries").info("summary completed", extra={"account_sid": "AC1"})
        logging.getLogger("worker.callbacks").warning("a message\nof two lines", extra={"request_id": "RQ1"})
        logging.getLogger("api.app").info("request", extra={"request_id": "RQ2", "status": 201})
    first, second, third = stream.getvalue().splitlines()
    assert first[:9].count(":") == 2 and first[9:] == "summary completed account_sid=AC1 summary_sid=FS1"
    # A warning names its request (the client's Twilio-Request-Id); an ordinary request line does not.
    assert second[9:] == "WARNING a message of two lines request_id=RQ1 summary_sid=FS1"
    assert third[9:] == "request status=201 summary_sid=FS1"


def test_text_leaves_out_the_routine_lines_and_keeps_their_failures(emitted):
    stream = emitted("text")
    logging.getLogger("celery.app.trace").info("Task summaries.fold_rollups[x] succeeded in 0.003s: 0",
                                               extra={"data": {"name": "summaries.fold_rollups"}})
    logging.getLogger("celery.worker.strategy").info("Task summaries.compute[x] received")
    logging.getLogger("celery.beat").info("Scheduler: Sending due task fold-rollups (summaries.fold_rollups)")
    logging.getLogger("api.app").info("request", extra={"route": "/healthz", "status": 200})
    logging.getLogger("celery.app.trace").error("Task summaries.compute[x] raised unexpected: boom")
    logging.getLogger("api.app").info("request", extra={"route": "/2010-04-01/x", "status": 201})
    logging.getLogger("celery.beat").info("beat: Starting...")
    lines = [line[9:] for line in stream.getvalue().splitlines()]
    assert lines == ["ERROR Task summaries.compute[x] raised unexpected: boom",
                     "request route=/2010-04-01/x status=201", "beat: Starting..."]


def test_text_makes_a_library_warning_one_log_line(emitted):
    stream = emitted("text")
    warnings.warn("deprecated\nsomething", DeprecationWarning, stacklevel=1)
    (line,) = stream.getvalue().splitlines()
    assert "WARNING" in line and "DeprecationWarning: deprecated something" in line


def test_gunicorn_gets_the_same_format():
    assert logs.gunicorn_logconfig("INFO", "json")["formatters"]["ours"]["log_format"] == "json"
    text = logs.gunicorn_logconfig("INFO", "text")
    assert text["handlers"]["stderr"]["filters"] == ["routine"]
    logging.config.dictConfig({**text, "root": {"level": "INFO", "handlers": []}, "loggers": {}})


def test_the_readme_shows_the_banner_summaries_up_prints():
    """The quick start's block is a real run's output: its banner is what cli/up.py prints today."""
    import re
    import types
    from pathlib import Path

    from cli.up import _banner

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme[readme.index("Call Feedback Summaries is up at"):]
    block = block[:block.index("The logs follow.") + len("The logs follow.")]
    sid, token = re.search(r"demo account  (AC\w+)\n  auth token    (\w+)", block).groups()
    password = re.search(r"sign in as    demo, password (\S+) ", block).group(1)
    demo = types.SimpleNamespace(account=types.SimpleNamespace(sid=sid, auth_token=token), operator_password=password)
    printed = _banner("http://127.0.0.1:8080", "http://127.0.0.1:8081", demo).strip()

    def undated(text: str) -> str:
        return re.sub(r"\d{4}-\d\d-\d\d", "YYYY-MM-DD", text)

    assert undated(block) == undated(printed)


def test_a_text_line_spells_out_a_fields_newline_and_escape_codes():
    """A field may hold what a client sent (the console's request path): it cannot forge a line of its own."""
    import logging

    from shared.platform.logs import TextFormatter

    record = logging.LogRecord("console.app", logging.INFO, __file__, 1, "request", None, None)
    record.path = "/x\n19:99:99 WARNING operator purged 999\x1b[2J"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line and "\\x0a19:99:99" in line
