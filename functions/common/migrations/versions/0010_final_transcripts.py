"""final transcripts: one long-form pass over a meeting's recording once it completed, its
attempts and its segments (apart from the live ones, which stay)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('final_transcripts',
    sa.Column('meeting_pk', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('job_name', sa.String(length=63), nullable=True),
    sa.Column('engine', sa.String(length=32), nullable=True),
    sa.Column('model', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('audio_seconds', sa.Float(), nullable=True),
    sa.Column('cpu_seconds', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['meeting_pk'], ['meetings.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('meeting_pk')
    )
    op.create_table('final_segments',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('meeting_pk', sa.Uuid(), nullable=False),
    sa.Column('segment_index', sa.Integer(), nullable=False),
    sa.Column('start_s', sa.Float(), nullable=False),
    sa.Column('end_s', sa.Float(), nullable=False),
    sa.Column('start_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=False),
    sa.Column('speaker', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['meeting_pk'], ['final_transcripts.meeting_pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('meeting_pk', 'segment_index', name='uq_final_segment')
    )


def downgrade() -> None:
    op.drop_table('final_segments')
    op.drop_table('final_transcripts')
