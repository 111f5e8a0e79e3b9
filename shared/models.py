"""The tables. Every piece of state a job needs to survive a restart lives here, not in Redis."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.callbacks.state import DeliveryState
from shared.summaries.status import SummaryStatus

# The issue types of the SPEC, in the order Twilio documents them alphabetically.
FEEDBACK_ISSUES = (
    "audio-latency",
    "digits-not-captured",
    "dropped-call",
    "imperfect-audio",
    "incorrect-caller-id",
    "one-way-audio",
    "post-dial-delay",
    "unsolicited-call",
)
_ISSUES_SQL = ",".join(f"'{issue}'" for issue in FEEDBACK_ISSUES)
# Voice Insights call annotations, as Twilio's reference lists their values (its `unknown_*` values
# are what Twilio answers for a value newer than the schema, not something to send).
ANSWERED_BY = ("human", "machine")
CONNECTIVITY_ISSUES = ("no_connectivity_issue", "invalid_number", "caller_id", "dropped_call", "number_reachability")
QUALITY_ISSUES = ("no_quality_issue", "low_volume", "choppy_robotic", "echo", "dtmf", "latency", "owa", "static_noise")
ANNOTATION_TEXT_MAX_CHARS = 100  # Comment, Incident
_STATUSES_SQL = ",".join(f"'{status.value}'" for status in SummaryStatus)

Sid = String(34)
Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    # Server defaults (now(), 'queued') come back with RETURNING on insert, so a fresh row is complete.
    __mapper_args__ = {"eager_defaults": True}


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("parent_sid IS NULL OR parent_sid <> sid", name="not_own_parent"),)

    sid: Mapped[str] = mapped_column(Sid, primary_key=True)
    # One level only, as at Twilio: the CLI refuses a parent that itself has a parent.
    parent_sid: Mapped[str | None] = mapped_column(Sid, ForeignKey("accounts.sid"), index=True)
    friendly_name: Mapped[str] = mapped_column(Text)
    # Never in plaintext: a hash to check it, a ciphertext to sign callbacks with (shared/secrets.py).
    auth_token_hash: Mapped[str] = mapped_column(String(64))
    auth_token_encrypted: Mapped[str] = mapped_column(Text)
    # Twilio's secondary token: valid alongside the primary until promoted or deleted.
    secondary_token_hash: Mapped[str | None] = mapped_column(String(64))
    secondary_token_encrypted: Mapped[str | None] = mapped_column(Text)
    date_created: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    @property
    def auth_token(self) -> str:
        from shared.accounts.secrets import decrypt

        return decrypt(self.auth_token_encrypted)

    @auth_token.setter
    def auth_token(self, token: str) -> None:
        from shared.accounts.secrets import encrypt, token_hash

        self.auth_token_hash, self.auth_token_encrypted = token_hash(token), encrypt(token)

    @property
    def secondary_token(self) -> str | None:
        from shared.accounts.secrets import decrypt

        return decrypt(self.secondary_token_encrypted) if self.secondary_token_encrypted else None

    @secondary_token.setter
    def secondary_token(self, token: str | None) -> None:
        from shared.accounts.secrets import encrypt, token_hash

        self.secondary_token_hash = token_hash(token) if token else None
        self.secondary_token_encrypted = encrypt(token) if token else None


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        Index("calls_account_start_time", "account_sid", "start_time"),
        # The few provisional calls, for their expiry (shared/calls/provisional.py; migration 0010).
        Index("calls_provisional_start_time", "start_time", postgresql_where=text("provisional")),
    )

    sid: Mapped[str] = mapped_column(Sid, primary_key=True)
    account_sid: Mapped[str] = mapped_column(Sid, ForeignKey("accounts.sid"))
    start_time: Mapped[dt.datetime] = mapped_column(Timestamp)
    # Known only from a feedback post so far (start_time: when it was posted); Twilio's status
    # callback or a sync confirms it, and may move it to the account Twilio says owns it (0006).
    provisional: Mapped[bool] = mapped_column(server_default=text("false"))
    # Another account whose signed status event named this provisional call, and the call's start
    # by that event: the call goes to it if its grace ends unconfirmed (0012).
    claimed_by: Mapped[str | None] = mapped_column(Sid, ForeignKey("accounts.sid", ondelete="SET NULL"))
    claimed_start_time: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class CallFeedback(Base):
    """At most one entry per call; posting again replaces it and moves date_updated only."""

    __tablename__ = "call_feedback"
    __table_args__ = (
        CheckConstraint("quality_score BETWEEN 1 AND 5", name="quality_score_range"),
        CheckConstraint(f"issues <@ ARRAY[{_ISSUES_SQL}]::text[]", name="known_issues"),
        # Covers the summary's aggregates: scores and issues are read from the index alone.
        Index(
            "call_feedback_account_date_created",
            "account_sid",
            "date_created",
            postgresql_include=["quality_score", "issues"],
        ),
    )

    call_sid: Mapped[str] = mapped_column(Sid, ForeignKey("calls.sid", ondelete="CASCADE"), primary_key=True)
    # Copied from the call so that a summary filters feedback by account without a join.
    account_sid: Mapped[str] = mapped_column(Sid, ForeignKey("accounts.sid"))
    quality_score: Mapped[int] = mapped_column(SmallInteger)
    issues: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'::text[]"))
    date_created: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    date_updated: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


def _sql_list(values: tuple[str, ...]) -> str:
    return ",".join(f"'{value}'" for value in values)


class CallAnnotation(Base):
    """A call's Voice Insights annotation, one per call (migration 0011). With a call_score it is also
    the call's feedback entry, written in the same transaction (shared/calls/annotations.py)."""

    __tablename__ = "call_annotations"
    __table_args__ = (
        CheckConstraint(f"answered_by IN ({_sql_list(ANSWERED_BY)})", name="known_answered_by"),
        CheckConstraint(f"connectivity_issue IN ({_sql_list(CONNECTIVITY_ISSUES)})", name="known_connectivity_issue"),
        CheckConstraint(f"quality_issues <@ ARRAY[{_sql_list(QUALITY_ISSUES)}]::text[]", name="known_quality_issues"),
        CheckConstraint("call_score BETWEEN 1 AND 5", name="call_score_range"),
        CheckConstraint(f"char_length(comment) <= {ANNOTATION_TEXT_MAX_CHARS}", name="comment_length"),
        CheckConstraint(f"char_length(incident) <= {ANNOTATION_TEXT_MAX_CHARS}", name="incident_length"),
    )

    call_sid: Mapped[str] = mapped_column(Sid, ForeignKey("calls.sid", ondelete="CASCADE"), primary_key=True)
    # The call's account, as for feedback: a move to another account drops it (0011's trigger).
    account_sid: Mapped[str] = mapped_column(Sid, ForeignKey("accounts.sid"))
    answered_by: Mapped[str | None] = mapped_column(String(16))
    connectivity_issue: Mapped[str | None] = mapped_column(String(32))
    quality_issues: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    spam: Mapped[bool | None]
    call_score: Mapped[int | None] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    incident: Mapped[str | None] = mapped_column(Text)
    date_created: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    date_updated: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class FeedbackSummary(Base):
    __tablename__ = "feedback_summaries"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUSES_SQL})", name="known_status"),
        CheckConstraint("end_date >= start_date", name="ordered_dates"),
        CheckConstraint("status_callback_method IN ('GET', 'POST')", name="callback_method"),
        Index("feedback_summaries_account_created", "account_sid", "date_created"),
        # The sweeper's scan: only unfinished summaries, which stay few.
        Index(
            "feedback_summaries_unfinished",
            "status",
            "date_updated",
            postgresql_where=text("status IN ('queued', 'in-progress')"),
        ),
    )

    sid: Mapped[str] = mapped_column(Sid, primary_key=True)
    account_sid: Mapped[str] = mapped_column(Sid, ForeignKey("accounts.sid", ondelete="CASCADE"))
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date] = mapped_column(Date)
    include_subaccounts: Mapped[bool]
    status: Mapped[str] = mapped_column(String(16), server_default=SummaryStatus.QUEUED.value)
    status_callback: Mapped[str | None] = mapped_column(Text)
    status_callback_method: Mapped[str] = mapped_column(String(4), server_default="POST")
    call_count: Mapped[int | None]
    call_feedback_count: Mapped[int | None]
    quality_score_average: Mapped[Decimal | None] = mapped_column(Numeric(6, 4))
    quality_score_median: Mapped[Decimal | None] = mapped_column(Numeric(6, 4))
    quality_score_standard_deviation: Mapped[Decimal | None] = mapped_column(Numeric(6, 4))
    issues: Mapped[list[dict] | None] = mapped_column(JSONB)
    # Operator-facing bookkeeping, never part of the API representation.
    request_id: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    attempts: Mapped[int] = mapped_column(server_default="0")
    date_created: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    date_updated: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class IdempotencyKey(Base):
    """An `Idempotency-Key` seen on a create, kept for the idempotency window."""

    __tablename__ = "idempotency_keys"

    account_sid: Mapped[str] = mapped_column(Sid, ForeignKey("accounts.sid", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # A hash of the create parameters: the same key with other parameters is refused.
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    # Deleting the summary forgets the key: the next request with it creates a new summary.
    summary_sid: Mapped[str] = mapped_column(
        Sid, ForeignKey("feedback_summaries.sid", ondelete="CASCADE"), index=True
    )
    date_created: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class CallbackDelivery(Base):
    """The StatusCallback of one summary: written in the transaction that finished the summary (an
    outbox), so no event is lost between the database and Redis. Dropped with its summary."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (
        CheckConstraint(f"state IN ({','.join(repr(s.value) for s in DeliveryState)})", name="known_state"),
        CheckConstraint("method IN ('GET', 'POST')", name="delivery_method"),
        # The sweeper's scan for due deliveries: pending ones only, which stay few.
        Index("callback_deliveries_due", "next_attempt_at", postgresql_where=text("state = 'pending'")),
        Index("callback_deliveries_state_updated", "state", "date_updated"),
    )

    summary_sid: Mapped[str] = mapped_column(
        Sid, ForeignKey("feedback_summaries.sid", ondelete="CASCADE"), primary_key=True
    )
    account_sid: Mapped[str] = mapped_column(Sid, ForeignKey("accounts.sid", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(4))
    # The event, fixed when the summary finished: every attempt and redelivery sends these bytes.
    params: Mapped[dict] = mapped_column(JSONB)
    idempotency_token: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), server_default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(server_default="0")
    # Attempts allowed so far: CALLBACK_MAX_ATTEMPTS, raised by that much on each redelivery.
    attempt_limit: Mapped[int]
    next_attempt_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    leased_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(Text)
    redeliveries: Mapped[int] = mapped_column(server_default="0")
    delivered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    date_created: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    date_updated: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class CallbackAttempt(Base):
    """One request to the callback URL, as it went: the operator's record of what the receiver saw."""

    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    summary_sid: Mapped[str] = mapped_column(
        Sid, ForeignKey("callback_deliveries.summary_sid", ondelete="CASCADE"), index=True
    )
    number: Mapped[int]
    attempted_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    outcome: Mapped[str] = mapped_column(String(16))  # delivered, retry, failed
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int]
    response_excerpt: Mapped[str | None] = mapped_column(Text)  # the first kilobyte of the body


def issue_column(issue: str) -> str:
    """daily_feedback's column for an issue type: audio-latency -> issue_audio_latency."""
    return "issue_" + issue.replace("-", "_")


class DailyCalls(Base):
    """Calls per account per UTC day of start_time, as of the last fold: with the pending rows of
    calls_rollup_deltas, exact (triggers on `calls`, migrations 0003 and 0007)."""

    __tablename__ = "daily_calls"

    account_sid: Mapped[str] = mapped_column(Sid, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, server_default="0")


class DailyFeedback(Base):
    """Feedback entries per account per UTC day they were given: how many of each score, and how
    many reported each issue, as of the last fold: with the pending rows of feedback_rollup_deltas,
    exact (triggers on `call_feedback`, migrations 0003 and 0007)."""

    __tablename__ = "daily_feedback"

    account_sid: Mapped[str] = mapped_column(Sid, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)


for _score in range(1, 6):
    setattr(DailyFeedback, f"score_{_score}", mapped_column(f"score_{_score}", BigInteger, server_default="0",
                                                            nullable=False))
for _issue in FEEDBACK_ISSUES:
    setattr(DailyFeedback, issue_column(_issue), mapped_column(issue_column(_issue), BigInteger, server_default="0",
                                                               nullable=False))

# Append-only, no key and no index (migration 0007): a row per changed call (±1 on its account and
# day) or feedback entry (its scores and issues), written by triggers, folded into the daily rows
# by worker/folding.py. No row is shared between writers, so none waits for another's commit.
calls_rollup_deltas = Table(
    "calls_rollup_deltas", Base.metadata,
    Column("account_sid", Sid, nullable=False),
    Column("day", Date, nullable=False),
    Column("calls", Integer, nullable=False),
)
feedback_rollup_deltas = Table(
    "feedback_rollup_deltas", Base.metadata,
    Column("account_sid", Sid, nullable=False),
    Column("day", Date, nullable=False),
    # The entry after the write (NULL for a delete) and before it (NULL for an insert); a replacement
    # on the same account and day is one row with both.
    Column("quality_score", SmallInteger),
    Column("issues", ARRAY(Text)),
    Column("old_quality_score", SmallInteger),
    Column("old_issues", ARRAY(Text)),
)


class SummaryEvent(Base):
    """A summary's history for operators: created, claimed, taken over, completed, failed, and every
    operator action, each with its time and who (a request id, a worker, an operator)."""

    __tablename__ = "summary_events"
    __table_args__ = (Index("summary_events_summary_at", "summary_sid", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    summary_sid: Mapped[str] = mapped_column(Sid, ForeignKey("feedback_summaries.sid", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict | None] = mapped_column(JSONB)


class ConsoleUser(Base):
    """Someone who signs in to the operators' console (migration 0014): not a Twilio account. Written
    by shared/operator/users.py only."""

    __tablename__ = "console_users"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    role: Mapped[str] = mapped_column(Text)  # viewer | operator
    # scrypt, salted (shared/operator/users.py); NULL: signs in through the trusted proxy's header only.
    password_hash: Mapped[str | None] = mapped_column(Text)
    # Carried by each session cookie; replaced to end every session of the user (sign-out).
    session_key: Mapped[str] = mapped_column(Text, server_default=text("gen_random_uuid()::text"))
    date_created: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class AccountActivity(Base):
    """When each account's last voice status callback arrived (migration 0014), for the console; written
    at most once a minute per account by the API (api/voice_status.py)."""

    __tablename__ = "account_activity"

    account_sid: Mapped[str] = mapped_column(Sid, ForeignKey("accounts.sid", ondelete="CASCADE"), primary_key=True)
    last_voice_status_at: Mapped[dt.datetime] = mapped_column(Timestamp)
