"""The commands behind `summaries`, one function each; `up` lives in cli/up.py."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cli.accounts import create_account
from cli.imports import ImportFailed, import_calls, import_feedback
from cli.seed import seed as seed_account
from shared.errors import CommandError
from shared.models import Account
from shared.operator import actions, views
from shared.platform.config import get_settings
from shared.platform.db import database_url, error_line, get_engine
from shared.safe_text import safe
from shared.summaries.events import operator


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


def up(args: argparse.Namespace) -> int:
    from cli.up import run

    return run(args)


def migrate(args: argparse.Namespace) -> None:
    from alembic.util import CommandError as AlembicError
    from sqlalchemy.exc import SQLAlchemyError

    from cli.migrate import MigrationBlocked, upgrade
    from shared.platform.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)  # the retries and deferrals are logged
    # MIGRATION_DATABASE_URL: straight to PostgreSQL when DATABASE_URL is a PgBouncer (docs/pgbouncer.md).
    url = settings.migration_database_url or database_url(settings)
    try:
        deferred = upgrade(url, contract=args.contract, lock_timeout=args.lock_timeout)
    except (MigrationBlocked, ValueError, AlembicError) as error:
        raise CommandError(str(error)) from None
    except SQLAlchemyError as error:  # one line, as every command failure: its first line says what
        raise CommandError(error_line(error)) from None
    from cli.migrate import not_contracts

    stuck = not_contracts(deferred)
    if stuck:
        # This release's own revisions wait behind an earlier release's contract: its processes
        # would run against a schema without them (a status callback needs 0012's columns). Failing
        # here stops the deploy before any process is replaced; the running release is unharmed.
        raise CommandError(f"{', '.join(stuck)} wait behind the contract revision(s) "
                           f"{', '.join(r for r in deferred if r not in stuck)} of an earlier release, and this "
                           "release needs them: once no process of the release before runs, run `summaries migrate "
                           "--contract`, then deploy again")
    if deferred:
        print(f"migrations applied, except {', '.join(deferred)}: once no process of the previous release runs, "
              "apply them with `summaries migrate --contract`")
    else:
        print("migrations applied")


def health(args: argparse.Namespace) -> int:
    """Reads only this machine's heartbeat file: a probe must not depend on PostgreSQL or Redis."""
    from cli.processes import WORKERS
    from shared.platform import heartbeat

    name = WORKERS[args.process].node if args.process in WORKERS else args.process
    problem = heartbeat.problem(get_settings(), name, args.max_age)
    if problem:
        print(f"summaries health: {safe(problem)}", file=sys.stderr)
        return 1
    print(f"{name}: alive")
    return 0


def accounts(args: argparse.Namespace) -> None:
    if args.action == "create":
        _create_account(args)
    elif args.action == "reencrypt":
        from cli.accounts import reencrypt_all

        with Session(get_engine()) as session:
            count = reencrypt_all(session)
            session.commit()
        print(f"{count} accounts' tokens encrypted with the newest key")
    else:
        _token_action(args)


def console_users(args: argparse.Namespace) -> int:
    from shared.operator import users

    with Session(get_engine()) as session:
        if args.action == "list":
            found = users.listing(session)
            if args.json:
                print_json(found)
            for user in [] if args.json else found:
                sign_in = "password" if user["password"] else "single sign-on only"
                print(f"{safe(user['name']):<32} {user['role']:<9} {sign_in:<19} created {user['created']:%Y-%m-%d}")
            return 0
        if args.action == "unlock":
            dropped = users.unlock(session, args.name)
            session.commit()
            print(f"console user {safe(args.name)}: {dropped} counters of failed sign-ins forgotten")
            return 0
        if args.action == "delete":
            deleted = users.delete(session, args.name)
            session.commit()
            print(f"console user {safe(args.name)} deleted" if deleted else f"no console user {safe(args.name)}")
            return 0 if deleted else 1
        password = None if args.no_password else _read_password()
        users.create(session, args.name, args.role, password)
        session.commit()
    print(f"console user {args.name} created ({args.role})")
    return 0


def _read_password() -> str:
    """The console password from standard input: typed twice without echo at a terminal, else its first line."""
    if sys.stdin is None:
        raise CommandError("no standard input to read the password from (or --no-password)")
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the two passwords differ; nothing was created")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CommandError("standard input held no password (or --no-password)")
    return password


def _read_token() -> str:
    """The auth token from standard input: typed without echo at a terminal, else its first line."""
    if sys.stdin is None:
        raise CommandError("--auth-token-stdin: no standard input")
    token = getpass.getpass("auth token: ") if sys.stdin.isatty() else sys.stdin.readline()
    if not token.strip():
        raise CommandError("--auth-token-stdin: standard input held no token")
    return token.strip()


def _create_account(args: argparse.Namespace) -> None:
    if bool(args.sid) != args.auth_token_stdin:
        raise CommandError("an account keeps its Twilio identity with both --sid and --auth-token-stdin")
    token = _read_token() if args.auth_token_stdin else None
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            account = create_account(session, args.name, args.parent, sid=args.sid, auth_token=token)
            session.commit()
        except IntegrityError:  # created meanwhile by someone else
            raise CommandError(f"account {args.sid} already exists") from None
    # A token the operator gave is not printed back: it came through standard input to stay out of
    # terminals, logs and scrollback. A new one is printed once, as it exists nowhere else.
    shown = {} if token else {"auth_token": account.auth_token}
    if args.json:
        print_json({"sid": account.sid, **shown, "parent_sid": account.parent_sid,
                    "friendly_name": account.friendly_name})
    else:
        print(f"account_sid  {account.sid}" + (f"\nauth_token   {shown['auth_token']}" if shown else ""))


def _token_action(args: argparse.Namespace) -> None:
    from cli import accounts as tokens

    act, done = {"rotate-token": (tokens.rotate_token, None),
                 "promote-token": (tokens.promote_token, "secondary token promoted"),
                 "delete-secondary": (tokens.delete_secondary, "secondary token deleted")}[args.action]
    with Session(get_engine()) as session:
        secondary = act(session, args.sid)
        session.commit()
    if done:
        print(f"{args.sid}: {done}")
    elif args.json:
        print_json({"sid": args.sid, "secondary_token": secondary})
    else:
        print(f"secondary_token  {secondary}\nBoth tokens work until `summaries accounts promote-token {args.sid}`.")


def _import(args: argparse.Namespace, load) -> None:
    try:
        with get_engine().begin() as connection, args.file.open(newline="", encoding="utf-8-sig") as file:
            count = load(connection, file)
    except FileNotFoundError:
        raise CommandError(f"{args.file}: no such file") from None
    except UnicodeDecodeError as error:
        raise CommandError(f"{args.file} is not UTF-8 ({error.reason}); nothing was loaded") from None
    except ImportFailed as error:
        raise CommandError(f"{args.file}: {error}; nothing was loaded") from None
    print(f"{count} rows loaded from {args.file}")


def calls(args: argparse.Namespace) -> int | None:
    if args.action == "sync":
        from cli.sync import sync

        print(safe(sync(args.account, args.since, args.until, args.batch_size, args.max_pages, args.page_timeout)))
        return
    if args.action == "provisional":
        _provisional(args)
        return
    if args.action == "show":
        return _show_calls(args)
    _import(args, import_calls)


def _show_calls(args: argparse.Namespace) -> int:
    from cli.call_details import describe, lines

    with get_engine().connect() as connection:
        found = {sid: describe(connection, sid) for sid in args.sids}
    if args.json:
        print_json(found)
    else:
        for sid, details in found.items():
            print("\n".join(lines(details)) if details else f"{safe(sid)}: no such call")
    return 0 if all(found.values()) else 1


def _provisional(args: argparse.Namespace) -> None:
    from shared.calls import provisional

    if args.remove:
        with get_engine().begin() as connection:
            removed = provisional.remove(connection, args.remove)
        kept = [sid for sid in args.remove if sid not in removed]
        if args.json:
            print_json({"removed": removed, "not_provisional": kept})
            return
        print(f"removed {len(removed)} provisional call(s) and their feedback" + (
            f"; not provisional (confirmed, or unknown), left alone: {safe(' '.join(kept))}" if kept else ""))
        return
    grace_s = get_settings().provisional_call_grace_s
    with get_engine().connect() as connection:
        held = provisional.listed(connection, grace_s, args.account, args.limit)
    if args.json:
        print_json([{"sid": call.sid, "account_sid": call.account_sid, "posted_at": call.posted_at.isoformat(),
                     "quality_score": call.quality_score, "claimed_by": call.claimed_by,
                     "expires_at": call.expires_at.isoformat() if call.expires_at else None} for call in held])
        return
    if not held:
        print("no provisional calls")
        return
    print(f"{'CALL':34}  {'ACCOUNT':34}  {'POSTED (UTC)':19}  SCORE  EXPIRES")
    for call in held:
        expires = call.expires_at.strftime("%Y-%m-%d %H:%M") if call.expires_at else "never: the account has no call source"
        if call.claimed_by:
            expires += f", then goes to {call.claimed_by}, whose status callback claimed it"
        print(f"{call.sid:34}  {call.account_sid:34}  {call.posted_at:%Y-%m-%d %H:%M:%S}  "
              f"{call.quality_score or '-':>5}  {expires}")


def feedback(args: argparse.Namespace) -> None:
    _import(args, import_feedback)


def seed(args: argparse.Namespace) -> None:
    if args.calls < 0 or args.days < 1:
        raise CommandError("--calls must be 0 or more and --days 1 or more")
    with get_engine().connect() as connection:
        if Session(connection).get(Account, args.account) is None:
            raise CommandError(f"account {args.account} does not exist")
        connection.rollback()
        seed_account(connection, args.account, args.calls, args.days)
    print(f"seeded {args.calls} calls over {args.days} days for {args.account}")


def callbacks(args: argparse.Namespace) -> None:
    if args.action == "list":
        rows = views.deliveries(args.state, args.limit)
        if args.json:
            print_json(rows)
            return
        print(f"{'summary':<34}  {'state':<9}  {'tries':>5}  {'last error':<24}  url")
        for row in rows:
            print(f"{row['summary_sid']:<34}  {row['state']:<9}  {row['attempts']:>5}  "
                  f"{safe((row['last_error'] or '')[:24]):<24}  {row['method']} {safe(row['url'])}")
        return
    plan = actions.plan_redelivery(actions.RedeliverySelection(tuple(args.sids), args.state, args.since, args.host))
    for sid in plan.missing:
        print(f"{safe(sid)}: no finished delivery (none, or still pending)")
    if args.dry_run:
        for planned in plan.deliveries:
            print(f"{_planned(planned, 'would send')}\n  " +
                  safe("&".join(f"{k}={v}" for k, v in sorted(planned.params.items()))))
        print(f"{len(plan.deliveries)} deliveries would be sent")
        return
    sent = 0
    for step in actions.redeliver(plan, operator(), get_settings(), args.rate):
        sent += step.sent
        print(_planned(step.delivery, "sending" if step.sent else "changed since the plan, left alone:"), flush=True)
    left = len(plan.deliveries) - sent
    print(f"{sent} deliveries sent again" + (f"; {left} left alone (changed since the plan)" if left else ""))


def _planned(planned, action: str) -> str:
    return (f"{planned.summary_sid}: {action} {planned.method} {safe(planned.url)} ({planned.state} after "
            f"{planned.attempts} attempts; token {planned.idempotency_token})")


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _age(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


def status(args: argparse.Namespace) -> None:
    found = views.status()
    if args.json:
        print_json(found)
        return
    print("queues" + ("" if found["queues"] is not None else f"  Redis {found['redis']}: depths unknown"))
    for name, queue in (found["queues"] or {}).items():
        print(f"  {name:<10} {queue['depth']:>7} waiting   oldest {_age(queue['oldest_age_s'])}")
    summaries = found["summaries"]
    print("summaries")
    for name in ("queued", "in-progress", "completed", "failed"):
        print(f"  {name:<12} {summaries[name]:>7}")
    print(f"  oldest queued {_age(summaries['oldest_queued_age_s'])}, expired leases {summaries['expired_leases']}")
    print("deliveries")
    for name, count in found["deliveries"].items():
        print(f"  {name:<12} {count:>7}")
    if found["workers"] is None:
        print("workers  unknown without Redis")
        return
    print("workers" + ("" if found["workers"] else "  none answered a ping"))
    for worker in found["workers"]:
        running = ", ".join(f"{t['task']} {t['sid']}" for t in worker["running"]) or "idle"
        print(f"  {safe(worker['name']):<40} {safe(running)}")


def jobs(args: argparse.Namespace) -> None:
    rows = views.jobs(args.status, args.account, args.since, args.limit)
    if args.json:
        print_json(rows)
        return
    print(f"{'summary':<34}  {'status':<11}  {'created':<19}  {'tries':>5}  {'callback':<9}  reason / worker")
    for row in rows:
        note = row["failure_reason"] or row["claimed_by"] or ""
        print(f"{row['sid']:<34}  {row['status']:<11}  {_when(row['date_created']):<19}  {row['attempts']:>5}  "
              f"{row['callback'] or '-':<9}  {safe(note[:60])}")


def show(args: argparse.Namespace) -> int:
    found = {sid: views.show(sid) for sid in args.sids}
    if args.json:
        print_json(found)
        return 0 if all(found.values()) else 1
    for sid, summary in found.items():
        if summary is None:
            print(f"{sid}: no such summary")
            continue
        print(f"{sid}  {summary['status']}  account {summary['account_sid']}  window {summary['window']}"
              f"{'  with subaccounts' if summary['include_subaccounts'] else ''}")
        print(f"  request id {summary['request_id']}")
        if summary["failure_reason"]:
            print(f"  failure    {safe(summary['failure_reason'])}")
        if summary["callback"]:
            callback = summary["callback"]
            print(f"  callback   {callback['method']} {safe(callback['url'])}: {callback['state']} after "
                  f"{callback['attempts']} attempts")
        for entry in summary["timeline"]:
            extra = {k: v for k, v in entry.items() if k not in ("at", "what", "by") and v is not None}
            # A receiver's answer and error, a worker's or operator's name: shown, never obeyed.
            by = f" by {safe(entry['by'])}" if entry.get("by") else ""
            details = "  " + ", ".join(f"{k}={safe(v)}" for k, v in extra.items()) if extra else ""
            print(f"  {_when(entry['at'])}  {entry['what']}{by}{details}")
    return 0 if all(found.values()) else 1


def retry(args: argparse.Namespace) -> None:
    outcome = actions.retry(args.sids, operator())
    if args.json:
        print_json(outcome)
        return
    for sid, what in outcome.items():
        print(f"{sid}: {what}")


def purge(args: argparse.Namespace) -> None:
    sids = actions.purgeable(args.older_than)
    if not args.yes:
        if not sids:
            print("nothing to purge")
            return
        answer = input(f"delete {len(sids)} failed summaries older than {args.older_than:g} days? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CommandError("nothing was deleted")
    deleted = actions.purge(sids, operator()) if sids else 0
    if args.json:
        print_json({"deleted": deleted})
    else:
        print(f"deleted {deleted} failed summaries")
