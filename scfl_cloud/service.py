"""Core state and business rules of the cloud, independent of HTTP.

:class:`CloudService` owns the engine, the blob store, the write lock and the metrics;
the FastAPI layer (app.py) only translates HTTP to calls here and :class:`ApiError` to
JSON. All database writes go through :meth:`CloudService.write`, which serialises them
with one process-wide lock (SQLite allows one writer; on PostgreSQL the round row is
additionally locked ``FOR UPDATE``) so "close at quorum" and "one delta per robot" hold
under concurrent uploads.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
import time
from typing import Any, Iterator, Optional

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import crypto_bridge
from .handoff import AcceptedDeltas
from .blobstore import BlobNotFound, LocalBlobStore
from .db import current_revision, make_engine, migrate, session_factory
from .models import Delta, FleetContext, Robot, Round, SecAggRound, Skill, SkillVersion, UploadNonce
from .settings import CloudSettings

log = logging.getLogger("scfl_cloud")

LAST_SEEN_RESOLUTION_S = 5.0
REASON_LEN = 500  # quarantine reasons are stored in String(512) columns
FINAL_STATES = ("published", "expired", "cancelled")


class ApiError(Exception):
    """A client error with an HTTP status, a stable code and a one-line message."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def decode_public_key(text: str) -> bytes:
    """Base64 (standard or urlsafe) of a raw Ed25519 public key; anything else is refused."""
    if "PRIVATE" in text.upper():
        raise ApiError(400, "secret_key_refused", "that looks like a private key; register only the 32-byte public key")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None,
                               validate=True)
    except Exception:
        raise ApiError(422, "invalid_public_key", "public_key must be base64 of a raw 32-byte Ed25519 public key") from None
    if len(raw) != 32:
        raise ApiError(422, "invalid_public_key", f"public_key must decode to 32 bytes (raw Ed25519), got {len(raw)}")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except Exception:
        raise ApiError(422, "invalid_public_key", "public_key is not a valid Ed25519 point") from None
    return raw


class LatencyLog:
    """Bounded in-memory latency samples per kind (for the status page)."""

    def __init__(self, maxlen: int = 2000) -> None:
        self._data: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=maxlen))
        self._lock = threading.Lock()

    def add(self, kind: str, ms: float) -> None:
        with self._lock:
            self._data[kind].append(float(ms))

    def stats(self, kind: str, extra: Optional[list[float]] = None) -> dict[str, Any]:
        with self._lock:
            values = list(self._data.get(kind, ())) if extra is None else list(extra)
        if not values:
            return {"count": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
        values.sort()

        def pct(p: float) -> float:
            return round(values[min(len(values) - 1, int(p * (len(values) - 1) + 0.5))], 3)

        return {"count": len(values), "p50_ms": pct(0.5), "p95_ms": pct(0.95), "max_ms": round(values[-1], 3)}


class RoundClaims:
    """Which aggregation worker may fold or publish a round right now (one at a time per
    round: the running sum is one blob; another worker takes over when the holder dies)."""

    @contextlib.contextmanager
    def claim(self, round_id: int) -> Iterator[bool]:
        """Yield True if this worker holds the round until the block ends, False if another does."""
        raise NotImplementedError


class ProcessRoundClaims(RoundClaims):
    """SQLite: one server process, one worker thread; claims only guard against re-entry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def claim(self, round_id: int) -> Iterator[bool]:
        got = self._lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._lock.release()


class PostgresRoundClaims(RoundClaims):
    """PostgreSQL: a transaction-scoped advisory lock per round on a connection held for the
    claim. Workers on any number of machines skip rounds another worker holds (try-lock, never
    wait), and a worker that dies (SIGKILL, lost machine) loses its connection, so PostgreSQL
    ends its transaction and the lock is free again: nothing to expire or clean up."""

    LOCK_SPACE = 0x5CF1  # first key of the two-int advisory lock: scfl round claims

    def __init__(self, engine) -> None:
        self.engine = engine

    @contextlib.contextmanager
    def claim(self, round_id: int) -> Iterator[bool]:
        from sqlalchemy import text

        with self.engine.connect() as conn, conn.begin():
            got = conn.execute(text("SELECT pg_try_advisory_xact_lock(:space, :round)"),
                               {"space": self.LOCK_SPACE, "round": int(round_id)}).scalar()
            yield bool(got)


class CloudService:
    def __init__(self, settings: CloudSettings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.db_url)
        migrate(self.engine)
        self.schema_revision = current_revision(self.engine)
        self.Session = session_factory(self.engine)
        self.blobs = LocalBlobStore(settings.blob_dir)
        self.write_lock = threading.RLock()
        self.latency = LatencyLog()
        self.started_at = time.time()
        self.wake = threading.Event()  # set when there is new work for the aggregation worker
        # verified uploads for this process's worker: folded without re-reading/re-hashing the blob
        self.accepted = AcceptedDeltas()
        self._contexts: dict[str, Any] = {}
        self._contexts_lock = threading.Lock()
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self.claims = PostgresRoundClaims(self.engine) if self.is_postgres else ProcessRoundClaims()
        self.signing_key = _load_or_create_signing_key(settings.signing_key_path)
        self.cloud_public_key = self.signing_key.public_bytes()
        from .routing import TaskRouter

        self.router = TaskRouter()
        self._static_rows: dict = {}  # _immutable_rows

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self.Session() as session:
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One serialised write transaction: commit on success, roll back on any error."""
        with self.write_lock, self.Session() as session, session.begin():
            yield session

    def _round_for_update(self, session: Session, round_id: int) -> Optional[Round]:
        stmt = select(Round).where(Round.round_id == round_id)
        if self.is_postgres:
            stmt = stmt.with_for_update()
        return session.scalars(stmt).first()

    def context(self, key_id: str) -> Any:
        """The fleet's public context (cached); the worker adds ciphertexts with it."""
        with self._contexts_lock:
            ctx = self._contexts.get(key_id)
            if ctx is None:
                with self.read() as s:
                    row = s.get(FleetContext, key_id)
                if row is None:
                    raise ApiError(422, "wrong_key_id", f"no fleet context registered for key id {key_id!r}")
                ctx = crypto_bridge.load_context(self.blobs.get(row.blob_sha256))
                self._contexts[key_id] = ctx
            return ctx

    # ------------------------------------------------------------------ auth
    def check_admin(self, token: Optional[str]) -> None:
        if not token or not hmac.compare_digest(token.encode(), self.settings.admin_token.encode()):
            raise ApiError(401, "unauthorized", "admin token required (Authorization: Bearer <admin token>)")

    def robot_for_token(self, token: Optional[str], touch: bool = True) -> Optional[Robot]:
        """The robot holding ``token``; ``touch`` records it as seen now (a write transaction
        when the stored time is stale). Uploads pass ``touch=False``: their own insert
        transaction records it (:meth:`_mark_seen`), so an upload commits once, not twice."""
        if not token:
            return None
        with self.read() as s:
            robot = s.scalars(select(Robot).where(Robot.token_hash == token_hash(token))).first()
        if robot is None or robot.revoked:
            return None
        if touch and self._seen_is_stale(robot):
            with self.write() as s:
                self._mark_seen(s, robot)
        return robot

    @staticmethod
    def _seen_is_stale(robot: Robot) -> bool:
        return robot.last_seen_at is None or time.time() - robot.last_seen_at > LAST_SEEN_RESOLUTION_S

    def _mark_seen(self, s: Session, robot: Robot) -> None:
        """Record ``robot`` as seen now inside the caller's write transaction (if stale): one
        UPDATE, no SELECT first (uploads run this under the write lock)."""
        if self._seen_is_stale(robot):
            now = time.time()
            s.execute(update(Robot).where(Robot.robot_id == robot.robot_id).values(last_seen_at=now))
            robot.last_seen_at = now

    def authenticate(self, token: Optional[str], *, admin_ok: bool = True,
                     touch: bool = True) -> tuple[str, Optional[Robot]]:
        """Return ("admin", None) or ("robot", robot); 401 otherwise. ``touch``: see
        :meth:`robot_for_token`."""
        if admin_ok and token and hmac.compare_digest(token.encode(), self.settings.admin_token.encode()):
            return "admin", None
        robot = self.robot_for_token(token, touch)
        if robot is None:
            raise ApiError(401, "unauthorized", "missing, unknown or revoked bearer token")
        return "robot", robot

    # ------------------------------------------------------------------ robots
    def register_robot(self, robot_id: str, public_key_b64: str) -> str:
        raw = decode_public_key(public_key_b64)
        token = secrets.token_hex(32)  # hex: a CLI argument never taken for an option
        try:
            with self.write() as s:
                if s.get(Robot, robot_id) is not None:
                    raise ApiError(409, "robot_exists", f"robot {robot_id!r} is already registered (rotate its token instead)")
                s.add(Robot(robot_id=robot_id, public_key=raw, token_hash=token_hash(token), created_at=time.time(),
                            last_seen_at=None, revoked=False))
        except IntegrityError:
            raise ApiError(409, "robot_exists", f"robot {robot_id!r} is already registered") from None
        return token

    def rotate_token(self, robot_id: str) -> str:
        token = secrets.token_hex(32)  # hex: a CLI argument never taken for an option
        with self.write() as s:
            robot = s.get(Robot, robot_id)
            if robot is None:
                raise ApiError(404, "unknown_robot", f"robot {robot_id!r} is not registered")
            robot.token_hash = token_hash(token)
            robot.revoked = False
        return token

    def revoke_robot(self, robot_id: str) -> None:
        with self.write() as s:
            robot = s.get(Robot, robot_id)
            if robot is None:
                raise ApiError(404, "unknown_robot", f"robot {robot_id!r} is not registered")
            robot.revoked = True

    def list_robots(self) -> list[Robot]:
        with self.read() as s:
            return list(s.scalars(select(Robot).order_by(Robot.robot_id)))

    # ------------------------------------------------------------------ fleet contexts
    def put_context(self, blob: bytes) -> FleetContext:
        ctx = crypto_bridge.load_context(blob)
        key_id, backend, params_id = crypto_bridge.context_identity(ctx)
        with self.read() as s:
            existing = s.get(FleetContext, key_id)
        digest = hashlib.sha256(blob).hexdigest()
        if existing is not None:
            if existing.blob_sha256 == digest:
                return existing
            raise ApiError(409, "context_exists", f"a different context is already registered for key id {key_id!r}")
        digest = self.blobs.put(blob)
        row = FleetContext(key_id=key_id, backend=backend, params_id=params_id, blob_sha256=digest, created_at=time.time())
        try:
            with self.write() as s:
                s.add(row)
        except IntegrityError:
            raise ApiError(409, "context_exists", f"key id {key_id!r} registered concurrently") from None
        with self._contexts_lock:
            self._contexts[key_id] = ctx
        return row

    def list_contexts(self) -> list[FleetContext]:
        with self.read() as s:
            return list(s.scalars(select(FleetContext).order_by(FleetContext.created_at)))

    # ------------------------------------------------------------------ skills
    def create_skill(self, data: dict, created_by: Optional[str]) -> str:
        skill_id = data.get("skill_id") or f"skill_{secrets.token_hex(6)}"
        try:
            with self.write() as s:
                if s.get(Skill, skill_id) is not None:
                    raise ApiError(409, "skill_exists", f"skill {skill_id!r} already exists")
                s.add(Skill(skill_id=skill_id, name=data["name"], description=data.get("description", ""),
                            task_descriptions=list(data.get("task_descriptions", [])), extra=dict(data.get("extra", {})),
                            created_at=time.time(), created_by=created_by))
        except IntegrityError:
            raise ApiError(409, "skill_exists", f"skill {skill_id!r} already exists") from None
        return skill_id

    def get_skill(self, session: Session, skill_id: str) -> Skill:
        skill = session.get(Skill, skill_id)
        if skill is None:
            raise ApiError(404, "unknown_skill", f"skill {skill_id!r} does not exist")
        return skill

    def versions_of(self, session: Session, skill_id: str) -> list[SkillVersion]:
        return list(session.scalars(select(SkillVersion).where(SkillVersion.skill_id == skill_id)
                                    .order_by(SkillVersion.version)))

    def list_skills(self, offset: int, limit: int, q: Optional[str], name: Optional[str]):
        with self.read() as s:
            stmt = select(Skill)
            if name:
                stmt = stmt.where(Skill.name == name)
            if q:
                like = f"%{q.lower()}%"
                # task descriptions are JSON; a text cast keeps this portable across SQLite/PostgreSQL
                from sqlalchemy import String, cast

                stmt = stmt.where(or_(func.lower(Skill.name).like(like), func.lower(Skill.description).like(like),
                                      func.lower(cast(Skill.task_descriptions, String)).like(like)))
            total = s.scalar(select(func.count()).select_from(stmt.subquery()))
            skills = list(s.scalars(stmt.order_by(Skill.created_at, Skill.skill_id).offset(offset).limit(limit)))
            stats = {}
            if skills:
                rows = s.execute(select(SkillVersion.skill_id, func.max(SkillVersion.version), func.count())
                                 .where(SkillVersion.skill_id.in_([k.skill_id for k in skills]))
                                 .group_by(SkillVersion.skill_id))
                stats = {sid: (latest, n) for sid, latest, n in rows}
        return skills, stats, total

    def version_blob(self, skill_id: str, version: int) -> SkillVersion:
        with self.read() as s:
            self.get_skill(s, skill_id)
            row = s.scalars(select(SkillVersion).where(SkillVersion.skill_id == skill_id,
                                                       SkillVersion.version == version)).first()
        if row is None:
            raise ApiError(404, "unknown_version", f"skill {skill_id!r} has no version {version}")
        return row

    def route(self, task_description: str, max_skills: int) -> tuple[list[str], list[float], float]:
        with self.read() as s:
            skills = [(k.skill_id, list(k.task_descriptions or []) or [k.name]) for k in
                      s.scalars(select(Skill).order_by(Skill.created_at, Skill.skill_id))]
        ids, weights, ms = self.router.route(task_description, max_skills, skills)
        self.latency.add("routing", ms)
        return ids, weights, ms

    # ------------------------------------------------------------------ rounds
    def open_round(self, skill_id: str, base_version: int, quorum: int, deadline_s: float,
                   key_id: Optional[str], min_participants: Optional[int] = None,
                   secure_aggregation: Optional[bool] = None) -> int:
        """``secure_aggregation`` None: the cloud's setting (auto = on for quorum >= 3)."""
        floor = self.settings.min_participants
        min_participants = floor if min_participants is None else min_participants
        if min_participants < floor:
            raise ApiError(422, "too_few_participants",
                           f"min_participants ({min_participants}) is below this cloud's floor of {floor}: an "
                           f"aggregate of fewer robots reveals their deltas to the other key holders")
        if min_participants > quorum:
            raise ApiError(422, "invalid_request", f"min_participants ({min_participants}) must be <= quorum ({quorum})")
        with self.write() as s:
            self.get_skill(s, skill_id)
            if base_version != 0 and s.scalars(select(SkillVersion).where(
                    SkillVersion.skill_id == skill_id, SkillVersion.version == base_version)).first() is None:
                raise ApiError(422, "wrong_base_version", f"skill {skill_id!r} has no version {base_version}")
            if key_id is None:
                ctx = s.scalars(select(FleetContext).order_by(FleetContext.created_at.desc())).first()
                if ctx is None:
                    raise ApiError(409, "no_fleet_context", "register a fleet context (PUT /api/v1/fleet/context) first")
            else:
                ctx = s.get(FleetContext, key_id)
                if ctx is None:
                    raise ApiError(422, "wrong_key_id", f"no fleet context registered for key id {key_id!r}")
            busy = s.scalars(select(Round).where(Round.skill_id == skill_id, Round.state == "open")).first()
            if busy is not None:
                raise ApiError(409, "round_already_open", f"round {busy.round_id} is still open for skill {skill_id!r}")
            now = time.time()
            rnd = Round(skill_id=skill_id, base_version=base_version, key_id=ctx.key_id, quorum=quorum,
                        min_participants=min_participants,
                        deadline_at=now + deadline_s, state="open", close_reason=None, opened_at=now,
                        accepted_count=0, folded_count=0, aggregation_seconds=0.0)
            s.add(rnd)
            s.flush()
            round_id = rnd.round_id
            if secure_aggregation is None:
                secure_aggregation = self.settings.secure_aggregation == "auto" and quorum >= 3
            if secure_aggregation:
                from . import secagg

                secagg.attach(s, rnd, None, self.settings.secagg_stage_timeout_s)
        self.wake.set()
        return round_id

    def round_info(self, round_id: int, admin: bool = False) -> dict:
        with self.read() as s:
            rnd = s.get(Round, round_id)
            if rnd is None:
                raise ApiError(404, "unknown_round", f"round {round_id} does not exist")
            return self._round_dict(s, rnd, admin)

    def _round_dict(self, s: Session, rnd: Round, admin: bool = False) -> dict:
        """Counts for everyone; who contributed (identities) only for the admin."""
        ctx = s.get(FleetContext, rnd.key_id)
        rows = s.execute(select(Delta.robot_id, Delta.quarantined, Delta.quarantine_reason)
                         .where(Delta.round_id == rnd.round_id).order_by(Delta.id)).all()
        contributors = [r for r, q, _ in rows if not q] if admin else []
        quarantined = [dict(robot_id=r if admin else None, reason=why or "") for r, q, why in rows if q]
        return dict(round_id=rnd.round_id, skill_id=rnd.skill_id, base_version=rnd.base_version, key_id=rnd.key_id,
                    backend=ctx.backend if ctx else "", params_id=ctx.params_id if ctx else "", quorum=rnd.quorum,
                    min_participants=rnd.min_participants,
                    state=rnd.state, close_reason=rnd.close_reason, opened_at=rnd.opened_at,
                    deadline_at=rnd.deadline_at, closed_at=rnd.closed_at, published_at=rnd.published_at,
                    accepted=rnd.accepted_count, folded=rnd.folded_count, published_version=rnd.published_version,
                    aggregation_seconds=round(rnd.aggregation_seconds, 6), contributors=contributors,
                    error=rnd.error, quarantined_deltas=quarantined,
                    secure_aggregation=s.get(SecAggRound, rnd.round_id) is not None)

    def list_rounds(self, state: Optional[str] = None, limit: int = 100, admin: bool = False) -> list[dict]:
        with self.read() as s:
            stmt = select(Round).order_by(Round.round_id.desc()).limit(limit)
            if state:
                stmt = stmt.where(Round.state == state)
            return [self._round_dict(s, r, admin) for r in s.scalars(stmt)]

    def degraded_rounds(self) -> list[int]:
        """Rounds that need an operator: quarantined, or still running with a quarantined delta."""
        with self.read() as s:
            bad = set(s.scalars(select(Round.round_id).where(Round.state == "quarantined")))
            bad |= set(s.scalars(select(Delta.round_id).join(Round, Round.round_id == Delta.round_id)
                                 .where(Delta.quarantined.is_(True), Round.state.in_(("open", "closed")))))
        return sorted(bad)

    # ------------------------------------------------------------------ admin: repair
    def cancel_round(self, round_id: int) -> dict:
        """Admin: stop a round for good (nothing is published); its ciphertexts are deleted."""
        with self.write() as s:
            rnd = self._round_for_update(s, round_id)
            if rnd is None:
                raise ApiError(404, "unknown_round", f"round {round_id} does not exist")
            if rnd.state in FINAL_STATES:
                raise ApiError(409, "round_final", f"round {round_id} is already {rnd.state}")
            rnd.state, rnd.close_reason, rnd.closed_at = "cancelled", "admin", rnd.closed_at or time.time()
            old_sum, rnd.sum_blob_sha256 = rnd.sum_blob_sha256, None
            digests = list(s.scalars(select(Delta.blob_sha256).where(Delta.round_id == round_id)))
        self.delete_blob_if_unreferenced(old_sum)
        if self.settings.prune_deltas_after_publish:
            for digest in digests:
                self.blobs.delete(digest)
        self.wake.set()
        return self.round_info(round_id, admin=True)

    def drop_delta(self, round_id: int, robot_id: str) -> dict:
        """Admin: remove one robot's delta from a running or quarantined round. The running
        sum is reset and the remaining deltas are folded again, so nothing of it stays."""
        with self.write() as s:
            rnd = self._round_for_update(s, round_id)
            if rnd is None:
                raise ApiError(404, "unknown_round", f"round {round_id} does not exist")
            if rnd.state in FINAL_STATES:
                raise ApiError(409, "round_final", f"round {round_id} is already {rnd.state}")
            d = s.scalars(select(Delta).where(Delta.round_id == round_id, Delta.robot_id == robot_id)).first()
            if d is None:
                raise ApiError(404, "unknown_delta", f"robot {robot_id!r} has no delta in round {round_id}")
            dropped = d.blob_sha256
            if not d.quarantined:
                rnd.accepted_count -= 1
            s.delete(d)
            for other in s.scalars(select(Delta).where(Delta.round_id == round_id, Delta.id != d.id)):
                other.folded, other.folded_at, other.fold_ms = False, None, None
            old_sum, rnd.sum_blob_sha256, rnd.folded_count = rnd.sum_blob_sha256, None, 0
            rnd.error = None
            if rnd.deadline_at > time.time() and rnd.accepted_count < rnd.quorum:
                rnd.state, rnd.close_reason, rnd.closed_at = "open", None, None  # room again: keep collecting
            elif rnd.state == "quarantined":
                rnd.state = "closed"
        self.delete_blob_if_unreferenced(dropped)
        self.delete_blob_if_unreferenced(old_sum)
        self.wake.set()
        return self.round_info(round_id, admin=True)

    def quarantine_delta(self, delta_id: int, reason: str) -> None:
        """The aggregator could not fold this delta: leave it out (with the reason), keep the round."""
        with self.write() as s:
            d = s.get(Delta, delta_id)
            if d is None or d.quarantined or d.folded:
                return
            rnd = self._round_for_update(s, d.round_id)
            d.quarantined, d.quarantine_reason = True, reason[:REASON_LEN]
            rnd.accepted_count -= 1
        log.error("round %s: delta of %r quarantined: %s", d.round_id, d.robot_id, reason)

    def quarantine_round(self, round_id: int, reason: str) -> None:
        """A failure not attributable to one delta (disk, a bug): park this round, keep the others going."""
        with self.write() as s:
            rnd = self._round_for_update(s, round_id)
            if rnd is None or rnd.state in FINAL_STATES:
                return
            rnd.state, rnd.error = "quarantined", reason[:REASON_LEN]
        log.error("round %s quarantined: %s", round_id, reason)

    def aggregate_blob(self, round_id: int) -> SkillVersion:
        with self.read() as s:
            rnd = s.get(Round, round_id)
            if rnd is None:
                raise ApiError(404, "unknown_round", f"round {round_id} does not exist")
            if rnd.state != "published":
                raise ApiError(409, "round_not_published",
                               f"round {round_id} is {rnd.state} ({rnd.folded_count}/{rnd.accepted_count} folded); "
                               "the aggregate is available once it is published")
            row = s.scalars(select(SkillVersion).where(SkillVersion.skill_id == rnd.skill_id,
                                                       SkillVersion.version == rnd.published_version)).one()
            return row

    # ------------------------------------------------------------------ uploads
    def accept_upload(self, robot: Robot, blob: bytes, digest: Optional[str] = None,
                      prefix_sha256: Optional[bytes] = None) -> dict:
        """Verify and store a signed encrypted delta (round_id > 0) or skill version (round_id == 0).

        Everything the aggregator will check is checked here first, by the same functions
        (``CloudContext.check_delta`` / ``check_joinable``), so a 201 means "will fold".
        ``digest`` (SHA-256 hex of ``blob``) and ``prefix_sha256`` (of the part the delta's
        own digest covers) were computed in one pass while the body streamed in.
        """
        was_stale = self._seen_is_stale(robot)
        try:
            return self._accept_upload(robot, blob, digest, prefix_sha256)
        except BaseException:
            if was_stale:  # a refused upload (its transaction rolled back) still shows the robot is alive
                robot.last_seen_at = None
                with self.write() as s:
                    self._mark_seen(s, robot)
            raise

    def _accept_upload(self, robot: Robot, blob: bytes, digest: Optional[str], prefix_sha256: Optional[bytes]) -> dict:
        t0 = time.perf_counter()
        delta = crypto_bridge.parse_delta(blob, prefix_sha256)
        hdr = crypto_bridge.header_of(delta)
        if hdr.robot_id != robot.robot_id:
            raise ApiError(403, "robot_mismatch",
                           f"delta is signed for robot {hdr.robot_id!r} but the token belongs to {robot.robot_id!r}")
        crypto_bridge.verify_signature(delta, robot.public_key)
        spec = _tensor_spec(delta)
        with self.read() as s:
            ctx_row = self._immutable_rows(s, hdr.skill_id, hdr.key_id)
            _check_params(ctx_row, hdr)
            if hdr.round_id > 0:
                from . import secagg

                rnd, secure, dup = self._round_rows(s, hdr.round_id, robot.robot_id)
                self._precheck_round(rnd, hdr, robot.robot_id, spec, dup)
                quorum = rnd.quorum
                secagg.check_upload(secure, rnd, delta.header, robot.robot_id)
            else:  # (a round delta's nonce is checked in its insert transaction only)
                if hdr.base_version != 0 and s.scalars(select(SkillVersion).where(
                        SkillVersion.skill_id == hdr.skill_id, SkillVersion.version == hdr.base_version)).first() is None:
                    raise ApiError(422, "wrong_base_version", f"skill {hdr.skill_id!r} has no version {hdr.base_version}")
                self._check_nonce_unused(s, delta.header["nonce"])
        ctx = self.context(hdr.key_id)
        bound = crypto_bridge.check_delta(ctx, delta)  # the aggregator's own per-delta checks
        if hdr.round_id > 0:
            crypto_bridge.check_round_capacity(ctx, delta, quorum)
        digest = self.blobs.put(blob, digest)  # digest: hashed while the body streamed in
        try:
            if hdr.round_id > 0:
                receipt = self._insert_delta(robot, hdr, digest, len(blob), spec, ctx, delta, bound)
            else:
                receipt = self._insert_skill_version(robot, hdr, digest, len(blob), ctx_row, delta)
        except BaseException:
            self.delete_blob_if_unreferenced(digest)
            raise
        if hdr.round_id > 0 and self.settings.aggregate:
            self.accepted.put(digest, delta, len(blob))
        self.latency.add("upload", (time.perf_counter() - t0) * 1000.0)
        self.wake.set()
        return receipt

    def _immutable_rows(self, s: Session, skill_id: str, key_id: str) -> FleetContext:
        """The upload's skill must exist and its fleet context is returned: rows that are never
        changed or deleted once created, so each is read from the database once per process
        (an upload then costs two queries fewer). Misses are not remembered."""
        cache = self._static_rows
        if ("skill", skill_id) not in cache:
            self.get_skill(s, skill_id)  # 404 unknown_skill
            cache[("skill", skill_id)] = True
        ctx_row = cache.get(("context", key_id))
        if ctx_row is None:
            ctx_row = s.get(FleetContext, key_id)
            if ctx_row is None:
                raise ApiError(422, "wrong_key_id", f"no fleet context registered for key id {key_id!r}")
            s.expunge(ctx_row)
            cache[("context", key_id)] = ctx_row
        if len(cache) > 10_000:  # bounded: forget everything rather than grow (re-read on demand)
            cache.clear()
        return ctx_row

    @staticmethod
    def _check_nonce_unused(s: Session, nonce: str) -> None:
        if s.get(UploadNonce, nonce) is not None:
            raise ApiError(409, "nonce_reused", f"nonce {nonce} was already used by an accepted upload (replay)")

    def _use_nonce(self, s: Session, nonce: str, robot_id: str) -> None:
        self._check_nonce_unused(s, nonce)
        s.add(UploadNonce(nonce=nonce, robot_id=robot_id, created_at=time.time()))

    @staticmethod
    def _round_rows(s: Session, round_id: int, robot_id: str) -> tuple[Optional[Round], Optional[SecAggRound], bool]:
        """The round an upload is for, its secure-aggregation row (None: the round runs
        without) and whether this robot already has a delta in it: one query, not three."""
        dup = select(Delta.id).where(Delta.round_id == Round.round_id, Delta.robot_id == robot_id).exists()
        row = s.execute(select(Round, SecAggRound, dup).outerjoin(SecAggRound, SecAggRound.round_id == Round.round_id)
                        .where(Round.round_id == round_id)).first()
        return (row[0], row[1], bool(row[2])) if row is not None else (None, None, False)

    def _precheck_round(self, rnd: Optional[Round], hdr, robot_id: str, spec, dup: bool) -> None:
        """Refuse a delta the round will not take, before its blob is stored."""
        self._check_round_takes(rnd, hdr, spec)
        if dup:
            raise ApiError(409, "duplicate_upload", f"robot {robot_id!r} already uploaded a delta to round {rnd.round_id}")

    @staticmethod
    def _check_round_takes(rnd: Optional[Round], hdr, spec) -> None:
        """The round's own conditions on a delta (no query: the caller loaded ``rnd``)."""
        if rnd is None:
            raise ApiError(404, "unknown_round", f"round {hdr.round_id} does not exist")
        if rnd.skill_id != hdr.skill_id:
            raise ApiError(422, "wrong_skill", f"round {rnd.round_id} is for skill {rnd.skill_id!r}, not {hdr.skill_id!r}")
        if rnd.base_version != hdr.base_version:
            raise ApiError(422, "wrong_base_version",
                           f"round {rnd.round_id} trains on version {rnd.base_version}, delta is on {hdr.base_version}")
        if rnd.key_id != hdr.key_id:
            raise ApiError(422, "wrong_key_id", f"round {rnd.round_id} uses key {rnd.key_id!r}, delta uses {hdr.key_id!r}")
        if rnd.state != "open" or rnd.deadline_at <= time.time():
            raise ApiError(409, "round_closed", f"round {rnd.round_id} is {rnd.state if rnd.state != 'open' else 'past its deadline'}")
        want = _canonical_spec(rnd.tensor_spec)
        # a non-canonical order is refused by check_delta with its own error code
        if want is not None and spec is not None and spec == sorted(spec) and want != spec:
            raise ApiError(422, "wrong_shapes", f"delta tensors {spec} differ from the round's {want}")

    def _round_summary(self, s: Session, rnd: Round) -> dict:
        """The round as the aggregator will see it when this robot's delta joins, in the shape
        of an aggregate header: count and bound sum by SQL aggregates instead of loading every
        delta row of the round (N uploads made O(N^2) row objects). ``robot_ids`` and
        ``nonces`` (all ``check_joinable`` asks of them: is this upload's among them?) are
        empty because the database guarantees both absent: a second delta of this robot in the
        round, or a nonce of any accepted upload (every delta's nonce is recorded in
        ``upload_nonces``, never deleted), breaks a unique constraint when the row goes in, and
        the whole transaction rolls back."""
        count, bound_sum = s.execute(select(func.count(Delta.id), func.coalesce(func.sum(Delta.bound), 0))
                                     .where(Delta.round_id == rnd.round_id, Delta.quarantined.is_(False))).one()
        return dict(skill_id=rnd.skill_id, base_version=rnd.base_version, round_id=rnd.round_id,
                    shapes=_canonical_spec(rnd.tensor_spec), mask_cohort=rnd.mask_cohort,
                    robot_ids=[], nonces=[], count=int(count), bound_sum=int(bound_sum))

    def _insert_delta(self, robot: Robot, hdr, digest: str, size: int, spec, ctx, delta, bound: int) -> dict:
        robot_id = robot.robot_id
        nonce = delta.header["nonce"]
        try:
            with self.write() as s:  # as few statements as possible: every upload waits for this lock
                rnd = self._round_for_update(s, hdr.round_id)
                self._check_round_takes(rnd, hdr, spec)  # again, now serialised
                # a second delta of this robot or a reused nonce: refused by the unique
                # constraints (uq_one_delta_per_robot, the nonce key) when the rows go in
                self._mark_seen(s, robot)
                summary = self._round_summary(s, rnd)
                if summary["count"] > 0:  # the aggregator's own cross-delta checks
                    crypto_bridge.check_joinable(ctx, summary, delta, bound)
                now = time.time()
                s.add(UploadNonce(nonce=nonce, robot_id=robot_id, created_at=now))
                s.add(Delta(round_id=rnd.round_id, robot_id=robot_id, blob_sha256=digest, size_bytes=size,
                            received_at=now, folded=False, nonce=nonce, bound=bound, quarantined=False))
                rnd.accepted_count += 1
                if summary["count"] == 0:
                    rnd.tensor_spec = spec
                    rnd.mask_cohort = delta.header["mask_cohort"]
                if rnd.accepted_count >= rnd.quorum:
                    rnd.state, rnd.close_reason, rnd.closed_at = "closed", "quorum", now
                accepted, state = rnd.accepted_count, rnd.state
        except IntegrityError:
            with self.read() as s:  # which constraint refused it (the transaction rolled back)
                self._check_nonce_unused(s, nonce)
            raise ApiError(409, "duplicate_upload",
                           f"robot {robot_id!r} already uploaded a delta to round {hdr.round_id}") from None
        return dict(kind="delta", skill_id=hdr.skill_id, robot_id=robot_id, sha256=digest, size_bytes=size,
                    round_id=hdr.round_id, accepted_in_round=accepted, round_state=state)

    def _insert_skill_version(self, robot: Robot, hdr, digest: str, size: int, ctx: FleetContext, delta) -> dict:
        robot_id = robot.robot_id
        try:
            with self.write() as s:
                self._mark_seen(s, robot)
                self._use_nonce(s, delta.header["nonce"], robot_id)  # one signed blob makes one version
                latest = s.scalar(select(func.max(SkillVersion.version)).where(SkillVersion.skill_id == hdr.skill_id)) or 0
                version = latest + 1
                s.add(SkillVersion(skill_id=hdr.skill_id, version=version, parent_version=hdr.base_version or None,
                                   payload_format="encrypted_delta", blob_sha256=digest, size_bytes=size,
                                   key_id=hdr.key_id, backend=ctx.backend, params_id=ctx.params_id, round_id=None,
                                   num_contributors=1, uploaded_by=robot_id, created_at=time.time()))
        except IntegrityError:
            raise ApiError(409, "nonce_reused", "this upload's nonce was already used (replay)") from None
        return dict(kind="skill", skill_id=hdr.skill_id, robot_id=robot_id, sha256=digest, size_bytes=size,
                    version=version)

    def delete_blob_if_unreferenced(self, digest: Optional[str]) -> None:
        if not digest:
            return
        with self.read() as s:
            refs = (s.scalar(select(func.count()).select_from(Delta).where(Delta.blob_sha256 == digest))
                    + s.scalar(select(func.count()).select_from(SkillVersion).where(SkillVersion.blob_sha256 == digest))
                    + s.scalar(select(func.count()).select_from(Round).where(Round.sum_blob_sha256 == digest))
                    + s.scalar(select(func.count()).select_from(FleetContext).where(FleetContext.blob_sha256 == digest)))
        if refs == 0:
            self.blobs.delete(digest)

    def referenced_digests(self) -> set[str]:
        """Every blob some row points at; anything else in the store is garbage."""
        with self.read() as s:
            refs = set(s.scalars(select(Delta.blob_sha256)))
            refs |= set(s.scalars(select(SkillVersion.blob_sha256)))
            refs |= set(s.scalars(select(Round.sum_blob_sha256).where(Round.sum_blob_sha256.is_not(None))))
            refs |= set(s.scalars(select(FleetContext.blob_sha256)))
        return refs

    def collect_orphans(self) -> list[str]:
        """Delete blobs no row references: a running sum written just before a crash (or a
        failed fold commit), or an upload whose row insert never committed. Run at start-up,
        before the HTTP port opens and the worker starts, so no upload of this process is in
        flight; other processes on the same store are spared by ``orphan_grace_s``."""
        grace = self.settings.orphan_grace_s
        blobs = [d for d in self.blobs.digests() if not grace or self._older_than(d, grace)]
        refs = self.referenced_digests()  # after listing: a blob committed meanwhile is referenced
        orphans = [d for d in blobs if d not in refs]
        for digest in orphans:
            self.blobs.delete(digest)
        if orphans:
            log.warning("collected %d orphaned blob(s) left by an interrupted write", len(orphans))
        return orphans

    # ------------------------------------------------------------------ status
    def _older_than(self, digest: str, seconds: float) -> bool:
        try:
            return self.blobs.age_s(digest) > seconds
        except BlobNotFound:
            return False

    def fold_latencies(self, limit: int = 2000) -> list[float]:
        with self.read() as s:
            return [float(x) for x in s.scalars(select(Delta.fold_ms).where(Delta.fold_ms.is_not(None))
                                                .order_by(Delta.id.desc()).limit(limit))]

    def counts(self) -> dict:
        with self.read() as s:
            return dict(
                skills=s.scalar(select(func.count()).select_from(Skill)),
                skill_versions=s.scalar(select(func.count()).select_from(SkillVersion)),
                robots=s.scalar(select(func.count()).select_from(Robot)),
                open_rounds=s.scalar(select(func.count()).select_from(Round).where(Round.state == "open")),
            )


def _check_params(ctx: FleetContext, hdr) -> None:
    if hdr.backend != ctx.backend:
        raise ApiError(422, "wrong_backend", f"fleet key {ctx.key_id!r} uses backend {ctx.backend!r}, delta uses {hdr.backend!r}")
    if hdr.params_id != ctx.params_id:
        raise ApiError(422, "wrong_parameters",
                       f"fleet key {ctx.key_id!r} uses parameter set {ctx.params_id!r}, delta uses {hdr.params_id!r}")


def _tensor_spec(delta: Any) -> Optional[list]:
    """[[name, shape], ...] exactly as in the header (canonical order is checked by check_delta)."""
    shapes = delta.header.get("shapes")
    return None if shapes is None else [[str(k), [int(x) for x in v]] for k, v in shapes]


def _canonical_spec(spec: Any) -> Optional[list]:
    """A stored tensor spec as a [[name, shape], ...] list (rows before 0003 stored a dict)."""
    if spec is None:
        return None
    items = spec.items() if isinstance(spec, dict) else spec
    return sorted([[str(k), [int(x) for x in v]] for k, v in items])


def _load_or_create_signing_key(path):
    """The cloud's own Ed25519 key (signs published aggregates); created 0600 on first start."""
    from scfl_nodes.core.crypto import generate_signing_key, load_signing_key

    from scfl_nodes.core.crypto import CryptoError

    if path.is_file():
        return _load_complete_key(path, load_signing_key, CryptoError)
    key = generate_signing_key()
    try:
        key.save(path)  # O_EXCL: of several processes starting on fresh storage, one creates it
    except CryptoError:
        return _load_complete_key(path, load_signing_key, CryptoError)
    log.info("created the cloud's aggregate signing key %s", path)
    return key


def _load_complete_key(path, load, error, wait_s: float = 10.0):
    """Load a key file another process may be writing this instant (created, not yet filled)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return load(path)
        except error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
