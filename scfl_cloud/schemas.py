"""Pydantic request/response models: they are the OpenAPI spec of the service."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


#: ids, versions and counts live in 32-bit columns (PostgreSQL INTEGER): larger is a 422
MAX_DB_INT = 2**31 - 1


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a stable machine code plus a one-line human message."""

    error: str = Field(description="machine-readable code, e.g. 'duplicate_upload'")
    detail: str = Field(description="one-line explanation for humans")


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded: a round or delta is quarantined, or the worker died")
    db: str
    schema_revision: Optional[str]
    worker_alive: bool
    external_workers: bool = False  # aggregation runs in `scfl cloud worker` processes
    degraded_rounds: list[int] = Field(default_factory=list, description="rounds that need an operator")


# --- routing (paper Appendix A.2, field names exactly as in the paper) -------------------
class SkillRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"task_description": "Pick up the red cube and place it on the blue plate", "max_skills": 3}]})
    task_description: str = Field(min_length=1, max_length=2000)
    max_skills: int = Field(default=3, ge=1, le=64)


class SkillRequestResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"skill_ids": ["skill_abc123", "skill_def456", "skill_ghi789"], "weights": [0.45, 0.35, 0.2],
         "inference_time_ms": 2.3}]})
    skill_ids: list[str]
    weights: list[float]
    inference_time_ms: float


# --- robots / fleet ---------------------------------------------------------------------
class RobotRegister(BaseModel):
    robot_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    public_key: str = Field(max_length=4096, description="raw 32-byte Ed25519 public key, base64 (standard or urlsafe)")


class RobotToken(BaseModel):
    robot_id: str
    token: str = Field(description="bearer token; shown only once, the server stores its SHA-256")


class RobotInfo(BaseModel):
    robot_id: str
    public_key: str
    created_at: float
    last_seen_at: Optional[float]
    revoked: bool


class FleetContextInfo(BaseModel):
    key_id: str
    backend: str
    params_id: str
    sha256: str
    created_at: float
    aggregate_public_key: str = Field(description="the cloud's Ed25519 key (base64, raw 32 bytes) that signs every "
                                                  "published aggregate; robots verify before decrypting")


# --- skills -----------------------------------------------------------------------------
class SkillCreate(BaseModel):
    skill_id: Optional[str] = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    name: str = Field(min_length=1, max_length=256)
    description: str = Field(default="", max_length=2048)
    task_descriptions: list[str] = Field(default_factory=list, max_length=256)
    extra: dict[str, Any] = Field(default_factory=dict, description="plain metadata (dims, training info)")


class SkillVersionInfo(BaseModel):
    version: int
    parent_version: Optional[int]
    payload_format: Literal["encrypted_delta", "encrypted_aggregate"]
    sha256: str
    size_bytes: int
    key_id: str
    backend: str
    params_id: str
    round_id: Optional[int]
    num_contributors: int
    uploaded_by: Optional[str]
    created_at: float
    download_url: str


class SkillSummary(BaseModel):
    skill_id: str
    name: str
    description: str
    task_descriptions: list[str]
    latest_version: Optional[int]
    num_versions: int
    created_at: float


class SkillDetail(SkillSummary):
    extra: dict[str, Any]
    created_by: Optional[str]
    versions: list[SkillVersionInfo]


class SkillPage(BaseModel):
    items: list[SkillSummary]
    total: int
    offset: int
    limit: int


# --- rounds -----------------------------------------------------------------------------
class RoundOpen(BaseModel):
    skill_id: str = Field(min_length=1, max_length=128)
    base_version: int = Field(ge=0, le=MAX_DB_INT, description="0 = train from the shared initialisation")
    quorum: int = Field(ge=1, le=100000)
    min_participants: Optional[int] = Field(
        default=None, ge=1, le=100000,
        description="deltas needed to publish (<= quorum; default and floor: the cloud's min_participants, 3)")
    deadline_s: float = Field(gt=0, le=30 * 24 * 3600)
    key_id: Optional[str] = Field(default=None, max_length=128,
                                  description="fleet key; default: the newest registered context")
    secure_aggregation: Optional[bool] = Field(
        default=None,
        description="run secure aggregation (masks, dropout recovery; quorum >= 3); default: the cloud's "
                    "secure_aggregation setting (auto: on for quorum >= 3); false: a plain round")


class QuarantinedDelta(BaseModel):
    robot_id: Optional[str] = Field(description="only for the admin")
    reason: str


class RoundInfo(BaseModel):
    round_id: int
    skill_id: str
    base_version: int
    key_id: str
    backend: str
    params_id: str
    quorum: int
    min_participants: int
    state: Literal["open", "closed", "published", "expired", "quarantined", "cancelled"]
    close_reason: Optional[str]
    opened_at: float
    deadline_at: float
    closed_at: Optional[float]
    published_at: Optional[float]
    accepted: int
    folded: int
    published_version: Optional[int]
    aggregation_seconds: float
    contributors: list[str] = Field(description="robot ids; only for the admin (others see the counts)")
    error: Optional[str] = Field(default=None, description="why the round was quarantined or expired")
    quarantined_deltas: list[QuarantinedDelta] = Field(default_factory=list)
    secure_aggregation: bool = Field(default=False, description="robots must take part in secure aggregation "
                                                                "(/secagg) and upload masked deltas")


class UploadReceipt(BaseModel):
    kind: Literal["delta", "skill"]
    skill_id: str
    robot_id: str
    sha256: str
    size_bytes: int
    round_id: Optional[int] = None
    accepted_in_round: Optional[int] = None
    round_state: Optional[str] = None
    version: Optional[int] = None


# --- status -----------------------------------------------------------------------------
class LatencyStats(BaseModel):
    count: int
    p50_ms: Optional[float]
    p95_ms: Optional[float]
    max_ms: Optional[float]


class CloudStatus(BaseModel):
    service: str
    version: str
    uptime_s: float
    database: str
    worker_alive: bool
    skills: int
    skill_versions: int
    robots: int
    open_rounds: int
    rounds: list[RoundInfo]
    robot_list: list[RobotInfo]
    latencies: dict[str, LatencyStats]
