"""SQLAlchemy 2 ORM models of the cloud service.

Times are float UNIX seconds (portable across SQLite and PostgreSQL, no timezone traps).
Ciphertexts are never stored in the database, only their SHA-256 (see blobstore.py).
The schema is created and evolved exclusively by the Alembic migrations in
``scfl_cloud/migrations``; ``test_cloud_db`` checks that migrations and models agree.
"""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Robot(Base):
    __tablename__ = "robots"

    robot_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    # SHA-256 of the bearer token; the token itself is shown once at registration.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class FleetContext(Base):
    """The public/evaluation context of a fleet key: lets the cloud add ciphertexts, never decrypt."""

    __tablename__ = "fleet_contexts"

    key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    backend: Mapped[str] = mapped_column(String(32))
    params_id: Mapped[str] = mapped_column(String(128))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)


class Skill(Base):
    __tablename__ = "skills"

    skill_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    description: Mapped[str] = mapped_column(String(2048), default="")
    task_descriptions: Mapped[list[str]] = mapped_column(JSON, default=list)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)


class SkillVersion(Base):
    """One immutable encrypted version: an uploaded skill or a published round aggregate."""

    __tablename__ = "skill_versions"
    __table_args__ = (UniqueConstraint("skill_id", "version", name="uq_skill_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    skill_id: Mapped[str] = mapped_column(ForeignKey("skills.skill_id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    parent_version: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    # "encrypted_delta" (uploaded by a robot) or "encrypted_aggregate" (sum of a round's deltas)
    payload_format: Mapped[str] = mapped_column(String(32))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(128))
    backend: Mapped[str] = mapped_column(String(32))
    params_id: Mapped[str] = mapped_column(String(128))
    round_id: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    num_contributors: Mapped[int] = mapped_column(Integer, default=1)
    uploaded_by: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    # the cloud's Ed25519 signature over an aggregate's statement (robots verify before decrypting)
    cloud_signature: Mapped[Optional[bytes]] = mapped_column(LargeBinary(64), nullable=True)


class Round(Base):
    """A federated round: deltas on ``skill_id@base_version`` summed homomorphically.

    ``sum_blob_sha256`` and ``folded_count`` change together with the ``folded`` flags of
    the deltas in one transaction, which is what makes a crash mid-round safe.
    """

    __tablename__ = "rounds"

    round_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    skill_id: Mapped[str] = mapped_column(ForeignKey("skills.skill_id"), index=True)
    base_version: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(ForeignKey("fleet_contexts.key_id"))
    quorum: Mapped[int] = mapped_column(Integer)
    # fewer accepted deltas than this at the deadline: the round expires unpublished, so a
    # sum of one or two robots (which would reveal their deltas to key holders) is never released
    min_participants: Mapped[int] = mapped_column(Integer, server_default="1", default=1)
    deadline_at: Mapped[float] = mapped_column(Float)
    # open -> closed (quorum | deadline) -> published ; open -> expired (deadline, too few deltas);
    # quarantined (the fold or publish failed: see ``error``); cancelled (admin)
    state: Mapped[str] = mapped_column(String(16), index=True)
    close_reason: Mapped[Optional[str]] = mapped_column(String(16), nullable=True)
    opened_at: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    published_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    accepted_count: Mapped[int] = mapped_column(Integer, default=0)
    folded_count: Mapped[int] = mapped_column(Integer, default=0)
    sum_blob_sha256: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    published_version: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    aggregation_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # tensor names + shapes of the first accepted delta; later deltas must match it
    tensor_spec: Mapped[Optional[Any]] = mapped_column(JSON, nullable=True)
    # the pairwise-mask cohort of the first accepted delta (None: unmasked); later ones must match
    mask_cohort: Mapped[Optional[list[str]]] = mapped_column(JSON, nullable=True)
    error: Mapped[Optional[str]] = mapped_column(String(512), nullable=True)


class Delta(Base):
    __tablename__ = "deltas"
    __table_args__ = (UniqueConstraint("round_id", "robot_id", name="uq_one_delta_per_robot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.round_id"), index=True)
    robot_id: Mapped[str] = mapped_column(ForeignKey("robots.robot_id"))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[float] = mapped_column(Float)
    folded: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    folded_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    fold_ms: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    nonce: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    bound: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)  # worst-case |quantized value|
    # the aggregator could not fold it (a bug, a lost blob): left out of the sum, with the reason
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    quarantine_reason: Mapped[Optional[str]] = mapped_column(String(512), nullable=True)


class UploadNonce(Base):
    """Every upload's nonce, forever: a replayed blob (any round, round 0 included) is refused."""

    __tablename__ = "upload_nonces"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    robot_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float)


class SecAggRound(Base):
    """Secure aggregation with dropout recovery for one round (scfl_cloud/secagg.py).

    Stages: advertise -> share -> upload -> unmask -> done (or failed). ``roster`` is who
    advertised mask keys, ``cohort`` who relayed key shares (the mask cohort), ``survivors``
    whose masked delta the round holds when it closes.
    """

    __tablename__ = "secagg_rounds"

    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.round_id"), primary_key=True)
    threshold: Mapped[int] = mapped_column(Integer)
    expected: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(16))
    stage_started_at: Mapped[float] = mapped_column(Float)
    stage_timeout_s: Mapped[float] = mapped_column(Float)
    roster: Mapped[Optional[list[str]]] = mapped_column(JSON, nullable=True)
    cohort: Mapped[Optional[list[str]]] = mapped_column(JSON, nullable=True)
    survivors: Mapped[Optional[list[str]]] = mapped_column(JSON, nullable=True)
    unmasked_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    failure: Mapped[Optional[str]] = mapped_column(String(512), nullable=True)


class SecAggMessage(Base):
    """One robot's message of one stage: its mask keys, its encrypted shares, its unmask shares."""

    __tablename__ = "secagg_messages"
    __table_args__ = (UniqueConstraint("round_id", "kind", "sender", name="uq_secagg_message"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.round_id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # keys | shares | unmask
    sender: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
