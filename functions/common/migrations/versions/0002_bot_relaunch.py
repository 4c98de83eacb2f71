"""bot relaunch: where each bot session resumes the meeting's audio, how often its launch was asked for, whether the bot reported its end

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('bot_sessions', sa.Column('resume_from_s', sa.Float(), server_default='0', nullable=False))
    op.add_column('bot_sessions', sa.Column('launch_requests', sa.Integer(), server_default='1', nullable=False))
    op.add_column('bot_sessions', sa.Column('end_reported', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.drop_column('bot_sessions', 'end_reported')
    op.drop_column('bot_sessions', 'launch_requests')
    op.drop_column('bot_sessions', 'resume_from_s')
