"""meeting platforms: the awaiting_admission status, the run's bot options, participants, speaker turns, a failed join's screenshot

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# At most one live bot per user and meeting id: the live statuses of the happy path, before and after awaiting_admission.
LIVE_BEFORE = "status IN ('requested', 'starting', 'joining', 'active', 'stopping')"
LIVE_AFTER = "status IN ('requested', 'starting', 'joining', 'awaiting_admission', 'active', 'stopping')"


def upgrade() -> None:
    # awaiting_admission is 18 characters: every column holding a meeting status widens.
    op.drop_index('uq_meetings_live', table_name='meetings', postgresql_where=sa.text(LIVE_BEFORE))
    op.alter_column('meetings', 'status', existing_type=sa.String(length=16), type_=sa.String(length=32), existing_nullable=False)
    op.alter_column('meeting_status_history', 'from_status', existing_type=sa.String(length=16), type_=sa.String(length=32), existing_nullable=True)
    op.alter_column('meeting_status_history', 'to_status', existing_type=sa.String(length=16), type_=sa.String(length=32), existing_nullable=False)
    op.create_index('uq_meetings_live', 'meetings', ['user_id', 'meeting_id'], unique=True, postgresql_where=sa.text(LIVE_AFTER))
    op.add_column('meetings', sa.Column('bot_options', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column('meetings', sa.Column('participants', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False))
    op.add_column('bot_sessions', sa.Column('failure_screenshot', sa.LargeBinary(), nullable=True))
    op.create_table('speaker_turns',
    sa.Column('meeting_pk', sa.Uuid(), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('participant', sa.String(length=200), nullable=False),
    sa.Column('start_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['meeting_pk'], ['meetings.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('meeting_pk', 'session_id', 'participant', 'start_at')
    )
    op.create_index('ix_speaker_turns_meeting_start', 'speaker_turns', ['meeting_pk', 'start_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_speaker_turns_meeting_start', table_name='speaker_turns')
    op.drop_table('speaker_turns')
    op.drop_column('bot_sessions', 'failure_screenshot')
    op.drop_column('meetings', 'participants')
    op.drop_column('meetings', 'bot_options')
    # A meeting waiting for admission cannot be told apart once the status is gone: it is joining.
    op.execute("UPDATE meetings SET status = 'joining' WHERE status = 'awaiting_admission'")
    op.execute("UPDATE meeting_status_history SET from_status = 'joining' WHERE from_status = 'awaiting_admission'")
    op.execute("UPDATE meeting_status_history SET to_status = 'joining' WHERE to_status = 'awaiting_admission'")
    op.drop_index('uq_meetings_live', table_name='meetings', postgresql_where=sa.text(LIVE_AFTER))
    op.alter_column('meeting_status_history', 'to_status', existing_type=sa.String(length=32), type_=sa.String(length=16), existing_nullable=False)
    op.alter_column('meeting_status_history', 'from_status', existing_type=sa.String(length=32), type_=sa.String(length=16), existing_nullable=True)
    op.alter_column('meetings', 'status', existing_type=sa.String(length=32), type_=sa.String(length=16), existing_nullable=False)
    op.create_index('uq_meetings_live', 'meetings', ['user_id', 'meeting_id'], unique=True, postgresql_where=sa.text(LIVE_BEFORE))
