"""The console in process: sign-in, sessions and CSRF, roles, each page, each action, and what it
shows from outside (as text). The browser tests (tests/test_console_browser.py) drive the same
pages in Chromium."""

from __future__ import annotations

import pytest

from tests.console_client import ConsoleClient, make_user
from tests.support import summary_in


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


def test_every_page_renders_for_a_signed_in_operator(operator, engine, account):
    sid = summary_in(engine, account, "failed")
    for path in ("/", "/?range=7d", "/summaries", "/summaries?status=failed", f"/summaries/{sid}", "/deliveries",
                 "/destinations", "/accounts", f"/accounts/{account.sid}", "/purge", "/purge?days=1"):
        page = operator.get(path)
        assert page.status == 200, (path, page.body[:2000])
