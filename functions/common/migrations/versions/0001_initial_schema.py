"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('user_id', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('max_bots', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('meetings',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.String(length=128), nullable=False),
    sa.Column('meeting_id', sa.String(length=256), nullable=False),
    sa.Column('title', sa.String(length=500), nullable=True),
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('meeting_url', sa.Text(), nullable=True),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('replay_speed', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('bot_name', sa.String(length=63), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('audio_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_meetings_user_created', 'meetings', ['user_id', 'created_at'], unique=False)
    op.create_index('uq_meetings_live', 'meetings', ['user_id', 'meeting_id'], unique=True, postgresql_where=sa.text("status IN ('requested', 'starting', 'joining', 'active', 'stopping')"))
    op.create_table('bot_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('meeting_pk', sa.Uuid(), nullable=False),
    sa.Column('bot_name', sa.String(length=63), nullable=False),
    sa.Column('launched_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('end_state', sa.String(length=16), nullable=True),
    sa.Column('end_reason', sa.Text(), nullable=True),
    sa.Column('chunks_sent', sa.Integer(), nullable=True),
    sa.Column('chunks_dropped', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['meeting_pk'], ['meetings.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_bot_sessions_meeting', 'bot_sessions', ['meeting_pk'], unique=False)
    op.create_table('meeting_status_history',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('meeting_pk', sa.Uuid(), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['meeting_pk'], ['meetings.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_status_history_meeting', 'meeting_status_history', ['meeting_pk'], unique=False)
    op.create_table('transcribed_chunks',
    sa.Column('meeting_pk', sa.Uuid(), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('chunk_seq', sa.Integer(), nullable=False),
    sa.Column('offset_s', sa.Float(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('segment_count', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('stored_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['meeting_pk'], ['meetings.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('meeting_pk', 'session_id', 'chunk_seq')
    )
    op.create_table('transcript_segments',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('meeting_pk', sa.Uuid(), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('chunk_seq', sa.Integer(), nullable=False),
    sa.Column('segment_index', sa.Integer(), nullable=False),
    sa.Column('start_s', sa.Float(), nullable=False),
    sa.Column('end_s', sa.Float(), nullable=False),
    sa.Column('start_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['meeting_pk'], ['meetings.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('meeting_pk', 'session_id', 'chunk_seq', 'segment_index', name='uq_segment_identity')
    )
    op.create_index('ix_segments_meeting_start', 'transcript_segments', ['meeting_pk', 'start_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_segments_meeting_start', table_name='transcript_segments')
    op.drop_table('transcript_segments')
    op.drop_table('transcribed_chunks')
    op.drop_index('ix_status_history_meeting', table_name='meeting_status_history')
    op.drop_table('meeting_status_history')
    op.drop_index('ix_bot_sessions_meeting', table_name='bot_sessions')
    op.drop_table('bot_sessions')
    op.drop_index('uq_meetings_live', table_name='meetings', postgresql_where=sa.text("status IN ('requested', 'starting', 'joining', 'active', 'stopping')"))
    op.drop_index('ix_meetings_user_created', table_name='meetings')
    op.drop_table('meetings')
    op.drop_table('users')
