"""`summaries`: the operator's command line. Every command reaches the same database as the system."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from cli import processes

    parser = argparse.ArgumentParser(prog="summaries", description=__doc__)
    parser.add_argument("--data-dir", help="where the embedded PostgreSQL and Redis live (default: ./.data, "
                                           "or SUMMARIES_DATA_DIR)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the API, the workers, the scheduler and the console in the foreground")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=processes.WEB_PORT)
    up.add_argument("--console-port", type=int, default=processes.CONSOLE_PORT,
                    help=f"the operators' console's port, on --host (default {processes.CONSOLE_PORT})")
    up.add_argument("--web-processes", type=int, default=processes.WEB_PROCESSES)
    up.add_argument("--worker-concurrency", type=int, default=processes.WORKERS["worker"].concurrency)
    up.add_argument("--demo", action="store_true", help="create and seed a demo account once, and print a curl")

    migrate = commands.add_parser("migrate", help="apply the database migrations")
    migrate.add_argument("--contract", action="store_true",
                         help="also apply the contract revisions (they remove what the previous release still "
                              "uses): once the rollout is complete and no process of that release runs")
    migrate.add_argument("--lock-timeout", default="5s", metavar="DURATION",
                         help="how long a revision waits for a lock before it is tried again (default 5s)")

    health = commands.add_parser("health", help="exit 0 if a worker or the scheduler on this machine is alive (a "
                                                "liveness probe); 1 and the reason if not")
    health.add_argument("process", metavar="worker|callbacks|scheduler|NODE",
                        help="a Procfile process, or a worker's node name prefix (-n NODE@%%h)")
    health.add_argument("--max-age", type=float, default=60.0, metavar="SECONDS",
                        help="the oldest heartbeat still alive (default 60: a Redis restart does not fail it)")

    accounts = commands.add_parser("accounts", help="manage accounts").add_subparsers(dest="action", required=True)
    create = accounts.add_parser("create", help="create an account and print its SID and auth token; with --sid "
                                                "and --auth-token-stdin, the account as it is at Twilio")
    create.add_argument("--sid", metavar="AC...", help="the account's SID at Twilio (keeps its identity)")
    create.add_argument("--auth-token-stdin", action="store_true",
                        help="read the account's Twilio auth token from standard input (never from the command line)")
    create.add_argument("--parent", metavar="AC...", help="make it a subaccount of this account")
    create.add_argument("--name", help="friendly name")
    create.add_argument("--json", action="store_true", help="print JSON")
    for action, text in (("rotate-token", "create a secondary auth token (both work until it is promoted)"),
                         ("promote-token", "make the secondary token the primary; the old primary stops working"),
                         ("delete-secondary", "delete the secondary token")):
        token_command = accounts.add_parser(action, help=text)
        token_command.add_argument("sid", metavar="AC...")
        token_command.add_argument("--json", action="store_true")
    accounts.add_parser("reencrypt", help="encrypt every stored token again with the first key of AUTH_TOKEN_KEYS")

    for name, columns in (("calls", "sid,account_sid,start_time"),
                          ("feedback", "call_sid,quality_score,issues,date_created")):
        group = commands.add_parser(name, help=f"bulk-load {name}").add_subparsers(dest="action", required=True)
        load = group.add_parser("import", help=f"load a CSV file with header {columns}; all or nothing")
        load.add_argument("file", type=Path)
        if name == "calls":
            sync = group.add_parser("sync", help="backfill an account's calls from Twilio's Calls API "
                                                 "(TWILIO_API_BASE_URL); running it again adds nothing")
            sync.add_argument("--account", required=True, metavar="AC...", help="an account stored here, whose "
                              "credentials (or TWILIO_API_KEY/TWILIO_API_SECRET) read its calls")
            sync.add_argument("--since", required=True, metavar="YYYY-MM-DD",
                              help="calls that started on this day (UTC) or later")
            sync.add_argument("--until", metavar="YYYY-MM-DD", help="through the end of this day (UTC); default today")
            sync.add_argument("--batch-size", type=int, metavar="N",
                              help="calls stored per committed batch (default 10000)")
            sync.add_argument("--max-pages", type=int, metavar="N",
                              help="pages of 1000 calls read at most; a list longer than that stops the run "
                                   "as an error (default 10000)")
            sync.add_argument("--page-timeout", type=float, metavar="SECONDS",
                              help="the longest one page may take, all told (default 60)")
            held = group.add_parser("provisional", help="calls known only from a feedback post, which no status "
                                                        "callback or sync has confirmed (oldest first)")
            held.add_argument("--account", metavar="AC...", help="only this account's")
            held.add_argument("--remove", nargs="+", metavar="CA...",
                              help="remove these provisional calls, with their feedback, instead of listing")
            held.add_argument("--limit", type=int, default=100)
            held.add_argument("--json", action="store_true")
            shown = group.add_parser("show", help="a call, its feedback entry and its annotation: what the summaries "
                                                   "count for it, and why")
            shown.add_argument("sids", nargs="+", metavar="CA...")
            shown.add_argument("--json", action="store_true")

    status = commands.add_parser("status", help="queues, summaries by status, deliveries, workers")
    status.add_argument("--json", action="store_true")
    jobs = commands.add_parser("jobs", help="summaries, newest first")
    jobs.add_argument("--status", choices=["queued", "in-progress", "completed", "failed"])
    jobs.add_argument("--account", metavar="AC...")
    jobs.add_argument("--since", type=_since, help="created at or after this ISO time (UTC)")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true")
    show = commands.add_parser("show", help="the timeline of summaries: requests, status changes, callbacks")
    show.add_argument("sids", nargs="+", metavar="FS...")
    show.add_argument("--json", action="store_true")
    retry = commands.add_parser("retry", help="put failed summaries back in the queue")
    retry.add_argument("sids", nargs="+", metavar="FS...")
    retry.add_argument("--json", action="store_true")
    purge = commands.add_parser("purge", help="delete failed summaries older than some days")
    purge.add_argument("--failed", action="store_true", required=True, help="only failed summaries are purged")
    purge.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--json", action="store_true")

    callbacks = commands.add_parser("callbacks", help="status callback deliveries").add_subparsers(
        dest="action", required=True)
    listing = callbacks.add_parser("list", help="deliveries, newest first")
    listing.add_argument("--state", choices=["pending", "delivered", "failed"])
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    again = callbacks.add_parser("redeliver", help="send finished deliveries again (same event, same idempotency "
                                                   "token, a fresh budget of attempts)")
    again.add_argument("sids", nargs="*", metavar="FS...")
    again.add_argument("--state", choices=["delivered", "failed"], help="every delivery in this state")
    again.add_argument("--since", type=_since, help="with --state: updated at or after this ISO time (UTC)")
    again.add_argument("--host", help="with --state: only deliveries to this host")
    again.add_argument("--dry-run", action="store_true", help="show what would be sent; send nothing")
    again.add_argument("--rate", type=float, default=10.0, help="at most this many sends per second (default 10)")

    console_users = commands.add_parser("console-users", help="the operators' console's users").add_subparsers(
        dest="action", required=True)
    made = console_users.add_parser("create", help="create a console user; its password is read from standard "
                                                    "input (typed twice, unechoed, at a terminal)")
    made.add_argument("name")
    made.add_argument("--role", choices=["viewer", "operator"], required=True,
                      help="viewer: sees everything but secrets; operator: also acts")
    made.add_argument("--no-password", action="store_true",
                      help="signs in only through the single sign-on proxy (CONSOLE_TRUSTED_USER_HEADER)")
    listed = console_users.add_parser("list", help="the console's users and their roles")
    listed.add_argument("--json", action="store_true")
    gone = console_users.add_parser("delete", help="delete a console user; its sessions end at once")
    gone.add_argument("name")
    unlock = console_users.add_parser("unlock", help="forget a console user's failed sign-ins (lift its limit)")
    unlock.add_argument("name")

    seed = commands.add_parser("seed", help="add realistic synthetic calls and feedback to an account")
    seed.add_argument("--account", required=True, metavar="AC...")
    seed.add_argument("--calls", type=int, required=True)
    seed.add_argument("--days", type=int, default=30)
    return parser


def _since(raw: str):
    import datetime as dt

    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.data_dir:
        # Before anything reads the settings, which happens once per process.
        os.environ["SUMMARIES_DATA_DIR"] = str(Path(args.data_dir).absolute())
    from sqlalchemy.exc import OperationalError

    from cli import commands
    from shared.errors import ServiceError, SettingError
    from shared.safe_text import safe

    try:
        _join_embedded(args.command)
        return getattr(commands, args.command.replace("-", "_"))(args) or 0
    except ServiceError as error:
        # One line, whatever the message quotes (a file's row, Twilio's answer).
        what = "configuration: " if isinstance(error, SettingError) else ""
        print(f"summaries {args.command}: {what}{safe(error)}", file=sys.stderr)
        return 2
    except OperationalError as error:
        # The one failure an operator can act on without a traceback: say which database, and why.
        print(f"summaries {args.command}: {_database_failure(error)}", file=sys.stderr)
        return 2


def _database_failure(error) -> str:
    import psycopg.errors

    from shared.platform.db import error_line, statement_cancelled
    from shared.safe_text import safe

    reason = safe(error_line(error))
    if isinstance(error.orig, psycopg.errors.LockNotAvailable):
        return (f"the database cancelled a statement ({reason}): it waited too long for a lock another "
                "transaction holds (see pg_locks), and its transaction was rolled back. Run it again once that "
                "transaction is over")
    if statement_cancelled(error):
        return (f"the database cancelled a statement ({reason}): it waited too long, most likely for a lock "
                "another transaction holds (see pg_locks), and its transaction was rolled back. Run it again, or "
                "with a longer DATABASE_STATEMENT_TIMEOUT_MS")
    if "unsupported startup parameter" in reason:  # PgBouncer refusing the timeouts' `options`
        return (f"cannot reach the database: {reason}; behind PgBouncer set DATABASE_STATEMENT_TIMEOUT_MS=0 and "
                "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS=0 (docs/pgbouncer.md)")
    return f"cannot reach the database: {reason}"


def _join_embedded(command: str) -> None:
    """`summaries up` starts embedded servers when DATABASE_URL is unset (it is asked to); another
    command on the same machine uses the ones it runs, and never starts servers of its own."""
    from shared.platform import embedded
    from shared.platform.config import get_settings

    settings = get_settings()
    if command == "up" and not (settings.database_url and settings.redis_url):
        os.environ["SUMMARIES_EMBEDDED"] = "1"
    elif not settings.database_url and not settings.embedded and embedded.running(settings.data_dir):
        os.environ["SUMMARIES_EMBEDDED"] = "1"
    get_settings.cache_clear()


if __name__ == "__main__":
    sys.exit(main())
