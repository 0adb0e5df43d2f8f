"""Initial schema: robots, fleet contexts, skills, versions, rounds, deltas.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "robots",
        sa.Column("robot_id", sa.String(128), primary_key=True),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_robots_token_hash", "robots", ["token_hash"], unique=True)
    op.create_table(
        "fleet_contexts",
        sa.Column("key_id", sa.String(128), primary_key=True),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("params_id", sa.String(128), nullable=False),
        sa.Column("blob_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "skills",
        sa.Column("skill_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("description", sa.String(2048), nullable=False),
        sa.Column("task_descriptions", sa.JSON(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
    )
    op.create_index("ix_skills_name", "skills", ["name"])
    op.create_table(
        "skill_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("skill_id", sa.String(128), sa.ForeignKey("skills.skill_id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("parent_version", sa.Integer(), nullable=True),
        sa.Column("payload_format", sa.String(32), nullable=False),
        sa.Column("blob_sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("params_id", sa.String(128), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("num_contributors", sa.Integer(), nullable=False),
        sa.Column("uploaded_by", sa.String(128), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("skill_id", "version", name="uq_skill_version"),
    )
    op.create_index("ix_skill_versions_skill_id", "skill_versions", ["skill_id"])
    op.create_table(
        "rounds",
        sa.Column("round_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("skill_id", sa.String(128), sa.ForeignKey("skills.skill_id"), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(128), sa.ForeignKey("fleet_contexts.key_id"), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("deadline_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("close_reason", sa.String(16), nullable=True),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column("published_at", sa.Float(), nullable=True),
        sa.Column("accepted_count", sa.Integer(), nullable=False),
        sa.Column("folded_count", sa.Integer(), nullable=False),
        sa.Column("sum_blob_sha256", sa.String(64), nullable=True),
        sa.Column("published_version", sa.Integer(), nullable=True),
        sa.Column("aggregation_seconds", sa.Float(), nullable=False),
        sa.Column("tensor_spec", sa.JSON(), nullable=True),
    )
    op.create_index("ix_rounds_skill_id", "rounds", ["skill_id"])
    op.create_index("ix_rounds_state", "rounds", ["state"])
    op.create_table(
        "deltas",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("round_id", sa.Integer(), sa.ForeignKey("rounds.round_id"), nullable=False),
        sa.Column("robot_id", sa.String(128), sa.ForeignKey("robots.robot_id"), nullable=False),
        sa.Column("blob_sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("folded", sa.Boolean(), nullable=False),
        sa.Column("folded_at", sa.Float(), nullable=True),
        sa.Column("fold_ms", sa.Float(), nullable=True),
        sa.UniqueConstraint("round_id", "robot_id", name="uq_one_delta_per_robot"),
    )
    op.create_index("ix_deltas_round_id", "deltas", ["round_id"])
    op.create_index("ix_deltas_folded", "deltas", ["folded"])


def downgrade() -> None:
    op.drop_table("deltas")
    op.drop_table("rounds")
    op.drop_table("skill_versions")
    op.drop_table("skills")
    op.drop_table("fleet_contexts")
    op.drop_index("ix_robots_token_hash", table_name="robots")
    op.drop_table("robots")
