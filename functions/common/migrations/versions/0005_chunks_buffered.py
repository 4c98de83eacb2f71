"""a live bot's delivery: chunks it holds, not yet delivered (from its heartbeats)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('bot_sessions', sa.Column('chunks_buffered', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column('bot_sessions', 'chunks_buffered')
