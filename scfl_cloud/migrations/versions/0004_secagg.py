"""Secure aggregation with dropout recovery: per-round state and relayed messages.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secagg_rounds",
        sa.Column("round_id", sa.Integer(), sa.ForeignKey("rounds.round_id"), primary_key=True),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("expected", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("stage_started_at", sa.Float(), nullable=False),
        sa.Column("stage_timeout_s", sa.Float(), nullable=False),
        sa.Column("roster", sa.JSON(), nullable=True),
        sa.Column("cohort", sa.JSON(), nullable=True),
        sa.Column("survivors", sa.JSON(), nullable=True),
        sa.Column("unmasked_at", sa.Float(), nullable=True),
        sa.Column("failure", sa.String(512), nullable=True),
    )
    op.create_table(
        "secagg_messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("round_id", sa.Integer(), sa.ForeignKey("rounds.round_id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sender", sa.String(128), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("round_id", "kind", "sender", name="uq_secagg_message"),
    )
    op.create_index("ix_secagg_messages_round_id", "secagg_messages", ["round_id"])


def downgrade() -> None:
    op.drop_index("ix_secagg_messages_round_id", table_name="secagg_messages")
    op.drop_table("secagg_messages")
    op.drop_table("secagg_rounds")
