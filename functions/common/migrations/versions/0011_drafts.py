"""drafts: the chunks whose drafts a meeting's feed shows, so each chunk's final transcript settles its own

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('meetings', sa.Column('drafts_shown', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                        server_default=sa.text("'[]'::jsonb")))


def downgrade() -> None:
    op.drop_column('meetings', 'drafts_shown')
