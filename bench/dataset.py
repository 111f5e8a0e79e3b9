"""The bench's data, built once and reused: a big account (a year of calls, one in five rated) and a
set of small accounts. Found again by name, so a second run starts measuring at once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from cli.accounts import create_account
from cli.seed import seed
from shared.models import Account


@dataclass(frozen=True)
class Dataset:
    big: Account
    big_calls: int
    medium: Account  # a tenth of big: how memory behaves as data grows tenfold
    small: list[Account]


def _account(engine: Engine, name: str) -> tuple[Account, bool]:
    with Session(engine, expire_on_commit=False) as session:
        found = session.scalar(select(Account).where(Account.friendly_name == name))
        if found is not None:
            return found, False
        account = create_account(session, name)
        session.commit()
        return account, True


def calls_of(engine: Engine, account_sid: str) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT coalesce(sum(calls), 0) FROM (SELECT calls FROM daily_calls "
                                       "WHERE account_sid = :a UNION ALL SELECT calls FROM calls_rollup_deltas "
                                       "WHERE account_sid = :a) r"),
                                  {"a": account_sid}).scalar()


def _seeded(engine: Engine, name: str, calls: int, log) -> Account:
    account, _ = _account(engine, name)
    have = calls_of(engine, account.sid)
    if have < calls:
        log(f"seeding {calls - have:,} calls over 365 days for {name!r} (once; reused next time)...")
        with engine.connect() as connection:
            seed(connection, account.sid, calls - have, 365)
    return account


def ensure(engine: Engine, big_calls: int, small_accounts: int, log=print) -> Dataset:
    big = _seeded(engine, f"bench big {big_calls}", big_calls, log)
    medium = _seeded(engine, f"bench medium {big_calls // 10}", big_calls // 10, log)
    small = []
    for i in range(small_accounts):
        account, created = _account(engine, f"bench small {i}")
        if created:
            with engine.connect() as connection:
                seed(connection, account.sid, 200, 30)
        small.append(account)
    return Dataset(big, big_calls, medium, small)
