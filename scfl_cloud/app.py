"""FastAPI application: the paper's Appendix A endpoints plus fleet/round management.

``create_app(settings)`` migrates the database, starts the aggregation worker and returns
the ASGI app (``scfl cloud serve`` runs it under uvicorn). Every error is JSON
``{"error": code, "detail": one line}`` with a 4xx status.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from pathlib import Path
from typing import Optional

import anyio
from fastapi import Depends, FastAPI, Path as PathParam, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import crypto_bridge, schemas
from .blobstore import BlobNotFound
from .crypto_bridge import DeltaRejected
from .service import ApiError, CloudService
from .settings import CloudSettings

log = logging.getLogger("scfl_cloud")
VERSION = "0.1.0"
BINARY_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
ERRORS = {code: {"model": schemas.ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422)}
MAX_ID = schemas.MAX_DB_INT  # ids and versions live in 32-bit columns: larger is a 422, never a 500

bearer = HTTPBearer(auto_error=False, description="robot token (from registration) or the admin token")


def _token(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> Optional[str]:
    return creds.credentials if creds else None


def create_app(settings: CloudSettings) -> FastAPI:
    service = CloudService(settings)
    service.collect_orphans()  # crash hygiene: before the port opens and the worker runs
    from .worker import AggregationWorker

    worker = AggregationWorker(service)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        if settings.aggregate:  # else `scfl cloud worker` processes fold (docs/deployment.md)
            worker.start()
        try:
            yield
        finally:
            worker.stop()
            service.engine.dispose()

    app = FastAPI(title="scfl cloud", version=VERSION, lifespan=lifespan,
                  description="Encrypted skill library and federated aggregator (never holds a secret key).")
    app.state.service = service
    app.state.worker = worker
    from .guard import AUTH_STATE_KEY, BodyGuard

    app.add_middleware(BodyGuard, service=service)

    # ------------------------------------------------------------------ errors
    def err(status: int, code: str, detail: str, headers: Optional[dict] = None) -> JSONResponse:
        return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(_req, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return err(exc.status, exc.code, exc.detail, headers)

    @app.exception_handler(DeltaRejected)
    async def _rejected(_req, exc: DeltaRejected):
        return err(exc.status, exc.code, exc.detail)

    @app.exception_handler(BlobNotFound)
    async def _blob_missing(_req, exc: BlobNotFound):
        return err(410, "blob_missing", f"ciphertext {exc.args[0]} is no longer stored")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return err(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}".strip(": "))

    from sqlalchemy.exc import DataError

    @app.exception_handler(DataError)
    async def _db_refused(_req, exc: DataError):
        # the database refused a value (a NUL byte in a string, an out-of-range number): the client's input
        return err(422, "invalid_value", f"the database refused a value: {str(exc.orig).splitlines()[0][:200]}")

    @app.exception_handler(OverflowError)
    async def _overflow(_req, exc: OverflowError):
        return err(422, "invalid_value", "a number is out of range")

    @app.exception_handler(Exception)
    async def _unexpected(_req, exc: Exception):
        # still JSON and one line for the client; the traceback goes to the server log
        log.error("unhandled error", exc_info=exc)
        return err(500, "internal_error", f"{type(exc).__name__} (see the server log)")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        return err(exc.status_code, code, str(exc.detail))

    # ------------------------------------------------------------------ auth deps
    def admin(token: Optional[str] = Depends(_token)) -> None:
        service.check_admin(token)

    async def robot(request: Request, token: Optional[str] = Depends(_token)):
        # a request with a body was already authenticated by BodyGuard, with this same header
        checked = request.scope.get("state", {}).get(AUTH_STATE_KEY)
        if checked is not None and checked[0] == token and checked[1][0] == "robot":
            return checked[1][1]
        kind, bot = await run_in_threadpool(service.authenticate, token, admin_ok=False)
        return bot

    def anyone(token: Optional[str] = Depends(_token)):
        return service.authenticate(token)

    # ------------------------------------------------------------------ health + status
    @app.get("/healthz", response_model=schemas.Health, tags=["status"])
    def healthz():
        from sqlalchemy import text

        with service.read() as s:
            s.execute(text("SELECT 1"))
        degraded = service.degraded_rounds()
        worker_ok = worker.alive or not settings.aggregate
        return {"status": "degraded" if degraded or not worker_ok else "ok", "db": service.engine.dialect.name,
                "schema_revision": service.schema_revision, "worker_alive": worker.alive,
                "external_workers": not settings.aggregate, "degraded_rounds": degraded}

    def is_admin(token: Optional[str]) -> bool:
        try:
            service.check_admin(token)
            return True
        except ApiError:
            return False

    def status_dict(admin: bool = False) -> dict:
        """Counts for everyone; robot ids, public keys and contributors only for the admin."""
        rounds = service.list_rounds(limit=50, admin=admin)
        robots = [_robot_info(r) for r in service.list_robots()] if admin else []
        fold = service.fold_latencies()
        return dict(service="scfl-cloud", version=VERSION, uptime_s=round(time.time() - service.started_at, 3),
                    database=service.engine.dialect.name, worker_alive=worker.alive, **service.counts(),
                    rounds=rounds, robot_list=robots,
                    latencies={"routing": service.latency.stats("routing"),
                               "upload": service.latency.stats("upload"),
                               "fold_per_delta": service.latency.stats("fold", extra=fold),
                               "close_to_publish": service.latency.stats("close_to_publish")})

    @app.get("/cloud/status", response_model=schemas.CloudStatus, tags=["status"],
             summary="System status (paper A.1)")
    def cloud_status(token: Optional[str] = Depends(_token)):
        if not settings.public_status:
            service.authenticate(token)
        return status_dict(is_admin(token))

    @app.get("/", response_class=HTMLResponse, tags=["status"], summary="Server-rendered status page")
    def status_page(token: Optional[str] = Depends(_token)):
        if not settings.public_status:
            service.authenticate(token)
        from .status_page import render_status

        with service.read() as s:
            from sqlalchemy import select

            from .models import Skill

            skills = []
            for k in s.scalars(select(Skill).order_by(Skill.created_at, Skill.skill_id).limit(200)):
                skills.append((k, service.versions_of(s, k.skill_id)))
        return HTMLResponse(render_status(status_dict(is_admin(token)), skills))

    # ------------------------------------------------------------------ robots + fleet (admin)
    @app.post("/api/v1/robots", response_model=schemas.RobotToken, status_code=201, responses=ERRORS,
              dependencies=[Depends(admin)], tags=["fleet"], summary="Register a robot's Ed25519 public key")
    def register_robot(body: schemas.RobotRegister):
        return {"robot_id": body.robot_id, "token": service.register_robot(body.robot_id, body.public_key)}

    @app.get("/api/v1/robots", response_model=list[schemas.RobotInfo], responses=ERRORS,
             dependencies=[Depends(admin)], tags=["fleet"])
    def list_robots():
        return [_robot_info(r) for r in service.list_robots()]

    @app.post("/api/v1/robots/{robot_id}/token", response_model=schemas.RobotToken, responses=ERRORS,
              dependencies=[Depends(admin)], tags=["fleet"], summary="Issue a new token (the old one stops working)")
    def rotate_token(robot_id: str = PathParam(max_length=128)):
        return {"robot_id": robot_id, "token": service.rotate_token(robot_id)}

    @app.delete("/api/v1/robots/{robot_id}", status_code=204, responses=ERRORS, dependencies=[Depends(admin)],
                tags=["fleet"], summary="Revoke a robot's token")
    def revoke_robot(robot_id: str = PathParam(max_length=128)):
        service.revoke_robot(robot_id)

    @app.put("/api/v1/fleet/context", response_model=schemas.FleetContextInfo, status_code=201, responses=ERRORS,
             dependencies=[Depends(admin)], tags=["fleet"], openapi_extra=BINARY_BODY,
             summary="Register a fleet's public evaluation context (refuses secret keys)")
    async def put_context(request: Request):
        blob = await _read_limited(request, settings.max_context_bytes)
        row = await run_in_threadpool(service.put_context, blob)
        return _context_info(row, service.cloud_public_key)

    @app.get("/api/v1/fleet/context", response_model=list[schemas.FleetContextInfo], responses=ERRORS,
             dependencies=[Depends(anyone)], tags=["fleet"])
    def list_contexts():
        return [_context_info(c, service.cloud_public_key) for c in service.list_contexts()]

    # ------------------------------------------------------------------ skills (paper A.1)
    @app.get("/api/v1/skills", response_model=schemas.SkillPage, responses=ERRORS, dependencies=[Depends(anyone)],
             tags=["skills"], summary="List skills (paginated, filterable)")
    def list_skills(offset: int = Query(0, ge=0, le=MAX_ID), limit: int = Query(50, ge=1, le=500),
                    q: Optional[str] = Query(None, max_length=200, description="substring of name/description/tasks"),
                    name: Optional[str] = Query(None, max_length=256, description="exact name")):
        skills, stats, total = service.list_skills(offset, limit, q, name)
        return {"items": [_skill_summary(k, *stats.get(k.skill_id, (None, 0))) for k in skills],
                "total": total, "offset": offset, "limit": limit}

    @app.post("/api/v1/skills", response_model=schemas.SkillDetail, status_code=201, responses=ERRORS,
              tags=["skills"], summary="Create a skill's plaintext metadata (task descriptions for routing)")
    def create_skill(body: schemas.SkillCreate, who=Depends(anyone)):
        kind, bot = who
        skill_id = service.create_skill(body.model_dump(), created_by=bot.robot_id if bot else "admin")
        return _skill_detail(skill_id)

    @app.post("/api/v1/skills/request", response_model=schemas.SkillRequestResponse, responses=ERRORS,
              dependencies=[Depends(anyone)], tags=["skills"], summary="MoE routing for a task (paper A.2)")
    def request_skills(body: schemas.SkillRequest):
        ids, weights, ms = service.route(body.task_description, body.max_skills)
        return {"skill_ids": ids, "weights": weights, "inference_time_ms": round(ms, 3)}

    @app.post("/api/v1/skills/upload", response_model=schemas.UploadReceipt, status_code=201, responses=ERRORS,
              tags=["skills"], openapi_extra=BINARY_BODY,
              summary="Upload an encrypted, signed skill version (round 0) or round delta")
    async def upload(request: Request, bot=Depends(robot)):
        blob, digest, prefix_sha256 = await _read_limited(request, settings.max_upload_bytes, hashed=True)
        return await anyio.to_thread.run_sync(service.accept_upload, bot, blob, digest, prefix_sha256,
                                              limiter=upload_threads())

    @app.get("/api/v1/skills/{skill_id}", response_model=schemas.SkillDetail, responses=ERRORS,
             dependencies=[Depends(anyone)], tags=["skills"], summary="Skill metadata and versions")
    def get_skill(skill_id: str = PathParam(max_length=128)):
        return _skill_detail(skill_id)

    @app.get("/api/v1/skills/{skill_id}/versions/{version}/ciphertext", responses=ERRORS,
             dependencies=[Depends(anyone)], tags=["skills"], response_class=StreamingResponse,
             summary="Stream one version's ciphertext")
    def download_version(skill_id: str = PathParam(max_length=128), version: int = PathParam(ge=1, le=MAX_ID)):
        return _stream(service.version_blob(skill_id, version))

    # ------------------------------------------------------------------ rounds
    @app.post("/api/v1/rounds", response_model=schemas.RoundInfo, status_code=201, responses=ERRORS,
              dependencies=[Depends(admin)], tags=["rounds"], summary="Open a federated round")
    def open_round(body: schemas.RoundOpen):
        round_id = service.open_round(body.skill_id, body.base_version, body.quorum, body.deadline_s, body.key_id,
                                      body.min_participants, body.secure_aggregation)
        return service.round_info(round_id, admin=True)

    @app.get("/api/v1/rounds", response_model=list[schemas.RoundInfo], responses=ERRORS, tags=["rounds"],
             summary="Rounds (contributor ids only for the admin)")
    def list_rounds(state: Optional[str] = Query(None, pattern="^(open|closed|published|expired|quarantined|cancelled)$"),
                    limit: int = Query(100, ge=1, le=1000), who=Depends(anyone)):
        return service.list_rounds(state, limit, admin=who[0] == "admin")

    @app.get("/api/v1/rounds/{round_id}", response_model=schemas.RoundInfo, responses=ERRORS, tags=["rounds"])
    def round_status(round_id: int = PathParam(ge=1, le=MAX_ID), who=Depends(anyone)):
        return service.round_info(round_id, admin=who[0] == "admin")

    @app.post("/api/v1/rounds/{round_id}/cancel", response_model=schemas.RoundInfo, responses=ERRORS,
              dependencies=[Depends(admin)], tags=["rounds"],
              summary="Cancel a round (nothing is published; its ciphertexts are deleted)")
    def cancel_round(round_id: int = PathParam(ge=1, le=MAX_ID)):
        return service.cancel_round(round_id)

    @app.delete("/api/v1/rounds/{round_id}/deltas/{robot_id}", response_model=schemas.RoundInfo, responses=ERRORS,
                dependencies=[Depends(admin)], tags=["rounds"],
                summary="Drop one robot's delta from a running or quarantined round (the sum is refolded)")
    def drop_delta(round_id: int = PathParam(ge=1, le=MAX_ID), robot_id: str = PathParam(max_length=128)):
        return service.drop_delta(round_id, robot_id)

    @app.get("/api/v1/rounds/{round_id}/aggregate", responses=ERRORS, dependencies=[Depends(anyone)],
             tags=["rounds"], response_class=StreamingResponse,
             summary="Stream the published encrypted sum of a round (X-Aggregate-Signature: the cloud's signature)")
    def download_aggregate(round_id: int = PathParam(ge=1, le=MAX_ID)):
        return _stream(service.aggregate_blob(round_id))

    from .secagg import register_routes as register_secagg_routes

    register_secagg_routes(app, service, admin=admin, robot=robot, anyone=anyone)

    limiters: list = []

    def upload_threads():
        """At most ``upload_threads`` uploads are verified and stored at once (the rest wait,
        already received): their work is mostly Python holding the GIL, and more threads
        only trade it back and forth (measured: context switches were ~10% of server CPU
        with 16 uploads in flight). Created on first use, inside the event loop."""
        if not limiters:
            limiters.append(anyio.CapacityLimiter(settings.upload_threads))
        return limiters[0]

    # ------------------------------------------------------------------ helpers
    def _stream(row) -> StreamingResponse:
        size = service.blobs.size(row.blob_sha256)
        headers = {"Content-Length": str(size), "X-Content-SHA256": row.blob_sha256,
                   "X-Num-Contributors": str(row.num_contributors), "X-Payload-Format": row.payload_format,
                   "X-Skill-Version": str(row.version)}
        if row.cloud_signature:  # verify with scfl_nodes.core.crypto.verify_aggregate before decrypting
            headers["X-Aggregate-Signature"] = base64.b64encode(row.cloud_signature).decode()
        return StreamingResponse(service.blobs.iter_chunks(row.blob_sha256), media_type="application/octet-stream",
                                 headers=headers)

    def _skill_detail(skill_id: str) -> dict:
        with service.read() as s:
            k = service.get_skill(s, skill_id)
            versions = service.versions_of(s, skill_id)
        d = _skill_summary(k, versions[-1].version if versions else None, len(versions))
        d.update(extra=k.extra or {}, created_by=k.created_by, versions=[_version_info(v) for v in versions])
        return d

    return app


async def _read_limited(request: Request, limit: int, hashed: bool = False):
    """Read a request body, refusing it (413) from the Content-Length header before reading
    anything, or as soon as a chunked body passes ``limit`` bytes. ``hashed`` (a delta
    upload): also return the body's SHA-256 hex (the blob store's name for it) and the
    SHA-256 of the prefix the delta's own digest covers, both computed in one pass as the
    body streams in, so neither storing nor parsing it hashes 3 MB again."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "bad_content_length", "Content-Length is not an integer") from None
        if declared > limit:
            raise ApiError(413, "payload_too_large", f"body of {declared} bytes exceeds the limit of {limit} bytes")
    hasher = crypto_bridge.upload_hasher() if hashed else None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds the limit of {limit} bytes")
        if hasher is not None:
            hasher.update(chunk)
        chunks.append(chunk)
    if not size:
        raise ApiError(400, "empty_body", "request body is empty")
    blob = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not hashed:
        return blob
    whole, prefix = hasher.digests()
    return blob, whole.hex(), prefix


def _robot_info(r) -> dict:
    return dict(robot_id=r.robot_id, public_key=base64.b64encode(r.public_key).decode(), created_at=r.created_at,
                last_seen_at=r.last_seen_at, revoked=r.revoked)


def _context_info(c, cloud_public_key: bytes) -> dict:
    return dict(key_id=c.key_id, backend=c.backend, params_id=c.params_id, sha256=c.blob_sha256,
                created_at=c.created_at, aggregate_public_key=base64.b64encode(cloud_public_key).decode())


def _skill_summary(k, latest: Optional[int], n: int) -> dict:
    return dict(skill_id=k.skill_id, name=k.name, description=k.description or "",
                task_descriptions=list(k.task_descriptions or []), latest_version=latest, num_versions=n,
                created_at=k.created_at)


def _version_info(v) -> dict:
    return dict(version=v.version, parent_version=v.parent_version, payload_format=v.payload_format,
                sha256=v.blob_sha256, size_bytes=v.size_bytes, key_id=v.key_id, backend=v.backend,
                params_id=v.params_id, round_id=v.round_id, num_contributors=v.num_contributors,
                uploaded_by=v.uploaded_by, created_at=v.created_at,
                download_url=f"/api/v1/skills/{v.skill_id}/versions/{v.version}/ciphertext")


def app_from_env() -> FastAPI:
    """uvicorn factory (``uvicorn --factory scfl_cloud.app:app_from_env``) reading SCFL_CLOUD_* variables."""
    import os

    from .settings import load_or_create_admin_token

    storage = Path(os.environ["SCFL_CLOUD_STORAGE"])
    token = os.environ.get("SCFL_CLOUD_ADMIN_TOKEN") or load_or_create_admin_token(storage)
    return create_app(CloudSettings(
        db_url=os.environ["SCFL_CLOUD_DB"], storage_dir=storage, admin_token=token,
        max_upload_bytes=int(os.environ.get("SCFL_CLOUD_MAX_UPLOAD_BYTES", 32 * 1024 * 1024)),
        prune_deltas_after_publish=os.environ.get("SCFL_CLOUD_PRUNE_DELTAS", "1") == "1",
    ))
