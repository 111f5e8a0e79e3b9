"""Accounts, calls, call feedback, feedback summaries and idempotency keys.

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 10:25:27.346518
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.migrations.rolling import set_lock_timeout

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    set_lock_timeout()
    op.create_table('accounts',
    sa.Column('sid', sa.String(length=34), nullable=False),
    sa.Column('parent_sid', sa.String(length=34), nullable=True),
    sa.Column('friendly_name', sa.Text(), nullable=False),
    sa.Column('auth_token', sa.String(length=32), nullable=False),
    sa.Column('date_created', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('parent_sid IS NULL OR parent_sid <> sid', name='not_own_parent'),
    sa.ForeignKeyConstraint(['parent_sid'], ['accounts.sid'], ),
    sa.PrimaryKeyConstraint('sid')
    )
    op.create_index(op.f('ix_accounts_parent_sid'), 'accounts', ['parent_sid'], unique=False)
    op.create_table('calls',
    sa.Column('sid', sa.String(length=34), nullable=False),
    sa.Column('account_sid', sa.String(length=34), nullable=False),
    sa.Column('start_time', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_sid'], ['accounts.sid'], ),
    sa.PrimaryKeyConstraint('sid')
    )
    op.create_index('calls_account_start_time', 'calls', ['account_sid', 'start_time'], unique=False)
    op.create_table('feedback_summaries',
    sa.Column('sid', sa.String(length=34), nullable=False),
    sa.Column('account_sid', sa.String(length=34), nullable=False),
    sa.Column('start_date', sa.Date(), nullable=False),
    sa.Column('end_date', sa.Date(), nullable=False),
    sa.Column('include_subaccounts', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='queued', nullable=False),
    sa.Column('status_callback', sa.Text(), nullable=True),
    sa.Column('status_callback_method', sa.String(length=4), server_default='POST', nullable=False),
    sa.Column('call_count', sa.Integer(), nullable=True),
    sa.Column('call_feedback_count', sa.Integer(), nullable=True),
    sa.Column('quality_score_average', sa.Numeric(precision=6, scale=4), nullable=True),
    sa.Column('quality_score_median', sa.Numeric(precision=6, scale=4), nullable=True),
    sa.Column('quality_score_standard_deviation', sa.Numeric(precision=6, scale=4), nullable=True),
    sa.Column('issues', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('claimed_by', sa.Text(), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('date_created', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('date_updated', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('queued','in-progress','completed','failed')", name='known_status'),
    sa.CheckConstraint("status_callback_method IN ('GET', 'POST')", name='callback_method'),
    sa.CheckConstraint('end_date >= start_date', name='ordered_dates'),
    sa.ForeignKeyConstraint(['account_sid'], ['accounts.sid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sid')
    )
    op.create_index('feedback_summaries_account_created', 'feedback_summaries', ['account_sid', 'date_created'], unique=False)
    op.create_index('feedback_summaries_unfinished', 'feedback_summaries', ['status', 'date_updated'], unique=False, postgresql_where=sa.text("status IN ('queued', 'in-progress')"))
    op.create_table('call_feedback',
    sa.Column('call_sid', sa.String(length=34), nullable=False),
    sa.Column('account_sid', sa.String(length=34), nullable=False),
    sa.Column('quality_score', sa.SmallInteger(), nullable=False),
    sa.Column('issues', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
    sa.Column('date_created', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('date_updated', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("issues <@ ARRAY['audio-latency','digits-not-captured','dropped-call','imperfect-audio','incorrect-caller-id','one-way-audio','post-dial-delay','unsolicited-call']::text[]", name='known_issues'),
    sa.CheckConstraint('quality_score BETWEEN 1 AND 5', name='quality_score_range'),
    sa.ForeignKeyConstraint(['account_sid'], ['accounts.sid'], ),
    sa.ForeignKeyConstraint(['call_sid'], ['calls.sid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('call_sid')
    )
    op.create_index('call_feedback_account_date_created', 'call_feedback', ['account_sid', 'date_created'], unique=False, postgresql_include=['quality_score', 'issues'])
    op.create_table('idempotency_keys',
    sa.Column('account_sid', sa.String(length=34), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('summary_sid', sa.String(length=34), nullable=False),
    sa.Column('date_created', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['account_sid'], ['accounts.sid'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['summary_sid'], ['feedback_summaries.sid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_sid', 'key')
    )
    op.create_index(op.f('ix_idempotency_keys_summary_sid'), 'idempotency_keys', ['summary_sid'], unique=False)


def downgrade() -> None:
    set_lock_timeout()
    op.drop_index(op.f('ix_idempotency_keys_summary_sid'), table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_index('call_feedback_account_date_created', table_name='call_feedback', postgresql_include=['quality_score', 'issues'])
    op.drop_table('call_feedback')
    op.drop_index('feedback_summaries_unfinished', table_name='feedback_summaries', postgresql_where=sa.text("status IN ('queued', 'in-progress')"))
    op.drop_index('feedback_summaries_account_created', table_name='feedback_summaries')
    op.drop_table('feedback_summaries')
    op.drop_index('calls_account_start_time', table_name='calls')
    op.drop_table('calls')
    op.drop_index(op.f('ix_accounts_parent_sid'), table_name='accounts')
    op.drop_table('accounts')
