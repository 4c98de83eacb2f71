"""audio transcribed per user and UTC day (AUDIO_MINUTES_PER_USER_PER_DAY), counted from the
transcripts already stored

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audio_usage',
    sa.Column('user_id', sa.String(length=128), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'day')
    )
    # What was transcribed before the table existed counts too (chunks given up on were not transcribed).
    op.execute("""
        INSERT INTO audio_usage (user_id, day, seconds)
        SELECT m.user_id, (c.stored_at AT TIME ZONE 'UTC')::date, sum(c.duration_s)
        FROM transcribed_chunks c JOIN meetings m ON m.id = c.meeting_pk
        WHERE c.error IS NULL
        GROUP BY 1, 2
    """)


def downgrade() -> None:
    op.drop_table('audio_usage')
