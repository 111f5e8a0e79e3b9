"""Call annotations (issue 24): Twilio's Voice Insights annotation of a call, one per call.

An annotation with a `call_score` is its call's feedback entry: the API writes that `call_feedback`
row in the annotation's own transaction (shared/calls/annotations.py), so the rollups follow through
0007's triggers and nothing here touches them. Like feedback, an annotation belongs to its call's
account: a trigger on `calls` drops the annotations a move leaves under another account (0008's for
feedback), and the voice status ingest carries them along in the parent-to-subaccount case before
the move, as it does feedback.

The enums are frozen here, as 0003 froze the feedback issues: the migration must not change when
the application's lists do. Creating the table and the trigger takes a brief lock on `calls`.

A release before this one never writes annotations. Its status callbacks, during a rolling deploy,
move a provisional call to a subaccount with its feedback but without its annotation, which the
trigger then drops (the feedback entry the annotation wrote stays with the call).

Revision ID: 0011
Revises: 0010
"""

from alembic import op

from shared.migrations.rolling import set_lock_timeout

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ANSWERED_BY = ("human", "machine")
CONNECTIVITY_ISSUES = ("no_connectivity_issue", "invalid_number", "caller_id", "dropped_call", "number_reachability")
QUALITY_ISSUES = ("no_quality_issue", "low_volume", "choppy_robotic", "echo", "dtmf", "latency", "owa", "static_noise")
TEXT_MAX_CHARS = 100


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def upgrade() -> None:
    set_lock_timeout()
    op.execute(f"""
CREATE TABLE call_annotations (
    call_sid varchar(34) PRIMARY KEY REFERENCES calls (sid) ON DELETE CASCADE,
    account_sid varchar(34) NOT NULL REFERENCES accounts (sid),
    answered_by varchar(16) CONSTRAINT known_answered_by CHECK (answered_by IN ({_listed(ANSWERED_BY)})),
    connectivity_issue varchar(32)
        CONSTRAINT known_connectivity_issue CHECK (connectivity_issue IN ({_listed(CONNECTIVITY_ISSUES)})),
    quality_issues text[]
        CONSTRAINT known_quality_issues CHECK (quality_issues <@ ARRAY[{_listed(QUALITY_ISSUES)}]::text[]),
    spam boolean,
    call_score smallint CONSTRAINT call_score_range CHECK (call_score BETWEEN 1 AND 5),
    comment text CONSTRAINT comment_length CHECK (char_length(comment) <= {TEXT_MAX_CHARS}),
    incident text CONSTRAINT incident_length CHECK (char_length(incident) <= {TEXT_MAX_CHARS}),
    date_created timestamptz NOT NULL DEFAULT now(),
    date_updated timestamptz NOT NULL DEFAULT now()
)""")
    op.execute("""
CREATE FUNCTION calls_drop_moved_annotation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM call_annotations WHERE call_sid = NEW.sid AND account_sid <> NEW.account_sid;
  RETURN NULL;
END $$""")
    op.execute("CREATE TRIGGER calls_annotation_follows_owner AFTER UPDATE ON calls FOR EACH ROW "
               "WHEN (OLD.account_sid IS DISTINCT FROM NEW.account_sid) EXECUTE FUNCTION calls_drop_moved_annotation()")


def downgrade() -> None:
    set_lock_timeout()
    op.execute("DROP TRIGGER calls_annotation_follows_owner ON calls")
    op.execute("DROP FUNCTION calls_drop_moved_annotation()")
    op.execute("DROP TABLE call_annotations")
