"""Upload-time validation and quarantine (issue 15): per-delta nonce/bound/quarantine,
per-round mask cohort and error, signed aggregates, and a global table of used nonces
(replayed uploads, including round-0 skill versions, are refused).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deltas") as batch:
        batch.add_column(sa.Column("nonce", sa.String(32), nullable=True))
        batch.add_column(sa.Column("bound", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("quarantined", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("quarantine_reason", sa.String(512), nullable=True))
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("mask_cohort", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("error", sa.String(512), nullable=True))
    with op.batch_alter_table("skill_versions") as batch:
        batch.add_column(sa.Column("cloud_signature", sa.LargeBinary(64), nullable=True))
    op.create_table(
        "upload_nonces",
        sa.Column("nonce", sa.String(32), primary_key=True),
        sa.Column("robot_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("upload_nonces")
    with op.batch_alter_table("skill_versions") as batch:
        batch.drop_column("cloud_signature")
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("error")
        batch.drop_column("mask_cohort")
    with op.batch_alter_table("deltas") as batch:
        batch.drop_column("quarantine_reason")
        batch.drop_column("quarantined")
        batch.drop_column("bound")
        batch.drop_column("nonce")
