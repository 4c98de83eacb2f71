"""the live feed: each meeting's events in cursor order, and segments' speakers stored with them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('meetings', sa.Column('feed_seq', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('meetings', sa.Column('feed_start', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('transcript_segments', sa.Column('speaker', sa.String(length=200), nullable=True))
    op.create_table('meeting_events',
    sa.Column('meeting_pk', sa.Uuid(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['meeting_pk'], ['meetings.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('meeting_pk', 'seq')
    )
    _store_speakers()


def _store_speakers() -> None:
    """Speakers were worked out at every read until now: store them once for existing transcripts,
    by the rule of functions/meetings/speakers.py (most overlap; a tie to the earliest turn)."""
    op.execute("""
        UPDATE transcript_segments s SET speaker = (
            SELECT t.participant FROM speaker_turns t
            WHERE t.meeting_pk = s.meeting_pk AND t.start_at < s.end_at AND t.end_at > s.start_at
            GROUP BY t.participant
            ORDER BY sum(extract(epoch FROM least(t.end_at, s.end_at) - greatest(t.start_at, s.start_at))) DESC,
                     min(t.start_at), t.participant
            LIMIT 1)
        WHERE EXISTS (SELECT 1 FROM speaker_turns t WHERE t.meeting_pk = s.meeting_pk)
    """)


def downgrade() -> None:
    op.drop_table('meeting_events')
    op.drop_column('transcript_segments', 'speaker')
    op.drop_column('meetings', 'feed_start')
    op.drop_column('meetings', 'feed_seq')
