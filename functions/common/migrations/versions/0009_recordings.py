"""recordings: whether a meeting keeps its audio, and every audio chunk kept (the audio itself is
in the recording storage, functions/recordings/)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Meetings from before recordings existed kept none.
    op.add_column('meetings', sa.Column('recording', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table('recorded_chunks',
    sa.Column('meeting_pk', sa.Uuid(), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('chunk_seq', sa.Integer(), nullable=False),
    sa.Column('start_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('object_key', sa.Text(), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['meeting_pk'], ['meetings.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('meeting_pk', 'session_id', 'chunk_seq')
    )


def downgrade() -> None:
    op.drop_table('recorded_chunks')
    op.drop_column('meetings', 'recording')
