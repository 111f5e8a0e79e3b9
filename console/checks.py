"""The console's own settings, checked as it starts: one line and exit 2, as check_or_exit does."""

from __future__ import annotations

import sys

from shared.platform.config import Settings


def check_console_settings(settings: Settings) -> None:
    problem = None
    if settings.console_trusted_user_header and not settings.console_trusted_proxies:
        problem = ("CONSOLE_TRUSTED_USER_HEADER is set but CONSOLE_TRUSTED_PROXIES is not: the header would be "
                   "believed from no one; name the proxies' addresses (CIDRs)")
    elif settings.console_trusted_proxies and not settings.console_trusted_user_header:
        problem = "CONSOLE_TRUSTED_PROXIES is set but CONSOLE_TRUSTED_USER_HEADER is not"
    if settings.console_session_idle_s > settings.console_session_max_s:
        problem = "CONSOLE_SESSION_IDLE_S is longer than CONSOLE_SESSION_MAX_S"
    if problem:
        print(f"summaries console: configuration: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(2)
