"""The cloud's part of secure aggregation with dropout recovery (core/federation/secagg.py).

The cloud relays and never learns a share in plaintext: robots advertise two X25519
public keys (signed with their Ed25519 key), send each peer its Shamir shares encrypted
end-to-end through the cloud, upload deltas masked under the fleet key, and after the
round closes reveal the shares the survivor list calls for. With >= ``threshold``
unmask responses the worker computes the unmask vector and adds it to the *encrypted*
sum (a plaintext addition mod t) before publishing; the published aggregate decrypts to
the exact sum of the survivors' deltas.

Stages advance lazily (on every request and worker pass): ``advertise`` -> ``share``
when all expected robots advertised, or at the stage timeout with >= max(threshold, 3);
``share`` -> ``upload`` when every roster member relayed its shares, or at the timeout
with >= threshold; ``upload`` -> ``unmask`` when the round closes (quorum = the cohort,
or its deadline); ``unmask`` -> ``done`` once the sum is unmasked. Too few robots at any
stage: ``failed`` and the round expires unpublished.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any, Optional

from fastapi import Depends, Path as PathParam
from pydantic import BaseModel, Field
from sqlalchemy import select

from .models import Delta, Robot, Round, SecAggMessage, SecAggRound
from .service import ApiError, CloudService

log = logging.getLogger("scfl_cloud.secagg")

ROUND_ID = PathParam(..., ge=1, le=2**31 - 1)
_B64_KEY = Field(..., min_length=40, max_length=48)  # 32 bytes
_MAX_ROBOTS = 10_000


class SecAggEnable(BaseModel):
    threshold: Optional[int] = Field(None, ge=2, le=_MAX_ROBOTS, description="Shamir threshold t (default: majority)")
    stage_timeout_s: float = Field(60.0, gt=0, le=86_400, description="how long each key stage waits for stragglers")


class SecAggKeys(BaseModel):
    robot_id: str = Field(..., min_length=1, max_length=128)
    share_public: str = _B64_KEY
    mask_public: str = _B64_KEY
    signature: str = Field(..., min_length=80, max_length=96)  # 64-byte Ed25519


class SecAggShares(BaseModel):
    shares: dict[str, str] = Field(..., description="recipient robot id -> base64 AES-GCM ciphertext of its shares")


class SecAggUnmask(BaseModel):
    robot_id: str = Field(..., min_length=1, max_length=128)
    x: int = Field(..., ge=1, le=_MAX_ROBOTS)
    self_seed_shares: dict[str, str]
    mask_key_shares: dict[str, str]


def _core():
    from scfl_nodes.core.federation import secagg

    return secagg


def _load(s, round_id: int) -> tuple[Round, Optional[SecAggRound]]:
    rnd = s.get(Round, round_id)
    if rnd is None:
        raise ApiError(404, "unknown_round", f"round {round_id} does not exist")
    return rnd, s.get(SecAggRound, round_id)


def _need(sa: Optional[SecAggRound], round_id: int) -> SecAggRound:
    if sa is None:
        raise ApiError(404, "no_secagg", f"round {round_id} does not run secure aggregation")
    return sa


def _senders(s, round_id: int, kind: str) -> list[str]:
    return sorted(s.scalars(select(SecAggMessage.sender).where(SecAggMessage.round_id == round_id,
                                                               SecAggMessage.kind == kind)))


def _messages(s, round_id: int, kind: str) -> dict[str, dict]:
    rows = s.scalars(select(SecAggMessage).where(SecAggMessage.round_id == round_id, SecAggMessage.kind == kind))
    return {m.sender: m.payload for m in rows}


def _fail(sa: SecAggRound, rnd: Round, why: str, now: float) -> None:
    sa.stage, sa.failure = "failed", why
    if rnd.state in ("open", "closed"):
        rnd.state, rnd.close_reason, rnd.closed_at = "expired", "secagg_failed", rnd.closed_at or now
    log.warning("secure aggregation of round %s failed: %s", rnd.round_id, why)


def _advance(s, sa: SecAggRound, rnd: Round, now: float) -> None:
    """Move through the stages as far as the stored messages allow (inside a write transaction)."""
    for _ in range(4):
        timed_out = now >= sa.stage_started_at + sa.stage_timeout_s
        if sa.stage == "advertise":
            keys = _senders(s, rnd.round_id, "keys")
            if len(keys) >= sa.expected or (timed_out and len(keys) >= max(sa.threshold, 3)):
                sa.roster, sa.stage, sa.stage_started_at = keys, "share", now
                continue
            if timed_out or rnd.state != "open":
                _fail(sa, rnd, f"only {len(keys)} robots advertised mask keys (threshold {sa.threshold})", now)
        elif sa.stage == "share":
            posted = _senders(s, rnd.round_id, "shares")
            if set(posted) >= set(sa.roster) or (timed_out and len(posted) >= sa.threshold):
                sa.cohort, sa.stage, sa.stage_started_at = posted, "upload", now
                rnd.quorum = min(rnd.quorum, len(posted))  # close as soon as the whole cohort uploaded
                continue
            if timed_out or rnd.state != "open":
                _fail(sa, rnd, f"only {len(posted)} robots relayed key shares (threshold {sa.threshold})", now)
        elif sa.stage == "upload":
            if rnd.state == "closed":
                survivors = sorted(s.scalars(select(Delta.robot_id).where(Delta.round_id == rnd.round_id)))
                if len(survivors) < sa.threshold:
                    _fail(sa, rnd, f"{len(survivors)} masked uploads are below the threshold {sa.threshold}", now)
                else:
                    sa.survivors, sa.stage, sa.stage_started_at = survivors, "unmask", now
                continue
            if rnd.state == "expired":
                _fail(sa, rnd, "the round expired before enough masked uploads arrived", now)
        return


def _state_dict(sa: SecAggRound) -> dict:
    dropped = sorted(set(sa.cohort or []) - set(sa.survivors or [])) if sa.survivors is not None else None
    return dict(stage=sa.stage, threshold=sa.threshold, expected=sa.expected, roster=sa.roster, cohort=sa.cohort,
                survivors=sa.survivors, dropped=dropped, unmasked_at=sa.unmasked_at, failure=sa.failure)


def _advanced(svc: CloudService, round_id: int) -> tuple[Round, SecAggRound]:
    with svc.write() as s:
        rnd, sa = _load(s, round_id)
        sa = _need(sa, round_id)
        _advance(s, sa, rnd, time.time())
        s.flush()
        s.expunge_all()
    return rnd, sa


def _pending(what: str, sa: SecAggRound) -> ApiError:
    if sa.stage == "failed":
        return ApiError(409, "secagg_failed", f"secure aggregation failed: {sa.failure}")
    return ApiError(409, "secagg_pending", f"{what} is not available in stage {sa.stage!r}; retry shortly")


# ----------------------------------------------------------------------------- operations
def attach(s, rnd: Round, threshold: Optional[int], stage_timeout_s: float) -> SecAggRound:
    """Make the open, empty round ``rnd`` a secure-aggregation round (inside a write transaction):
    the admin's explicit request and the automatic default of open_round share this."""
    if rnd.quorum < 3:
        raise ApiError(422, "cohort_too_small",
                       "secure aggregation needs a cohort (quorum) of at least 3 robots: with 2, each learns the other's delta")
    threshold = threshold or _core().default_threshold(rnd.quorum)
    if not (2 <= threshold <= rnd.quorum and 2 * threshold > rnd.quorum):
        raise ApiError(422, "invalid_threshold",
                       f"threshold must be a majority of the quorum ({rnd.quorum // 2 + 1}..{rnd.quorum}), got {threshold}")
    sa = SecAggRound(round_id=rnd.round_id, threshold=threshold, expected=rnd.quorum, stage="advertise",
                     stage_started_at=time.time(), stage_timeout_s=stage_timeout_s)
    s.add(sa)
    s.flush()
    return sa


def enable(svc: CloudService, round_id: int, body: SecAggEnable) -> dict:
    with svc.write() as s:
        rnd, sa = _load(s, round_id)
        if sa is not None:
            raise ApiError(409, "secagg_exists", f"round {round_id} already runs secure aggregation")
        if rnd.state != "open" or rnd.accepted_count:
            raise ApiError(409, "round_started", f"round {round_id} already has uploads or is {rnd.state}")
        return _state_dict(attach(s, rnd, body.threshold, body.stage_timeout_s))


def state(svc: CloudService, round_id: int) -> dict:
    return _state_dict(_advanced(svc, round_id)[1])


def _insert(svc: CloudService, round_id: int, kind: str, stage: str, robot: Robot, payload: dict, check=None) -> dict:
    from sqlalchemy.exc import IntegrityError

    try:
        with svc.write() as s:
            rnd, sa = _load(s, round_id)
            sa = _need(sa, round_id)
            _advance(s, sa, rnd, time.time())
            if sa.stage != stage:
                raise ApiError(409, "wrong_stage", f"round {round_id} is in stage {sa.stage!r}, not {stage!r}")
            if check is not None:
                check(s, sa, rnd)
            if s.scalars(select(SecAggMessage.id).where(SecAggMessage.round_id == round_id, SecAggMessage.kind == kind,
                                                        SecAggMessage.sender == robot.robot_id)).first() is not None:
                raise ApiError(409, "duplicate_message", f"robot {robot.robot_id!r} already sent its {kind} for round {round_id}")
            s.add(SecAggMessage(round_id=round_id, kind=kind, sender=robot.robot_id, payload=payload, created_at=time.time()))
            s.flush()
            _advance(s, sa, rnd, time.time())
            out = _state_dict(sa)
    except IntegrityError:
        raise ApiError(409, "duplicate_message", f"robot {robot.robot_id!r} already sent its {kind}") from None
    svc.wake.set()
    return out


def post_keys(svc: CloudService, round_id: int, robot: Robot, body: SecAggKeys) -> dict:
    if body.robot_id != robot.robot_id:
        raise ApiError(403, "robot_mismatch", f"keys are for {body.robot_id!r} but the token belongs to {robot.robot_id!r}")
    secagg = _core()

    def check(s, sa, rnd):
        from scfl_nodes.core.crypto import CryptoError

        context = secagg.round_context(rnd.key_id, rnd.skill_id, rnd.base_version, rnd.round_id)
        try:
            share_pk = base64.b64decode(body.share_public, validate=True)
            mask_pk = base64.b64decode(body.mask_public, validate=True)
            signature = base64.b64decode(body.signature, validate=True)
            if len(share_pk) != 32 or len(mask_pk) != 32:
                raise ValueError("keys must be 32 bytes")
            from scfl_nodes.core.crypto.signing import verify_signature

            verify_signature(robot.public_key, secagg._advert_message(context, robot.robot_id, share_pk, mask_pk), signature)
        except (ValueError, CryptoError) as exc:
            raise ApiError(422, "bad_mask_keys", f"mask keys rejected: {exc}") from None

    return _insert(svc, round_id, "keys", "advertise", robot, body.model_dump(), check)


def roster(svc: CloudService, round_id: int) -> dict:
    _, sa = _advanced(svc, round_id)
    if sa.roster is None or sa.stage == "failed":
        raise _pending("the roster", sa)
    with svc.read() as s:
        adverts = _messages(s, round_id, "keys")
    return {"threshold": sa.threshold, "roster": [adverts[r] for r in sa.roster]}


def post_shares(svc: CloudService, round_id: int, robot: Robot, body: SecAggShares) -> dict:
    def check(s, sa, rnd):
        if robot.robot_id not in sa.roster:
            raise ApiError(403, "not_in_roster", f"robot {robot.robot_id!r} did not advertise keys for round {round_id}")
        expected = set(sa.roster) - {robot.robot_id}
        if set(body.shares) != expected:
            raise ApiError(422, "bad_shares", f"shares must be addressed to exactly the other roster members {sorted(expected)}")
        if any(not isinstance(v, str) or len(v) > 512 for v in body.shares.values()):
            raise ApiError(422, "bad_shares", "each encrypted share is a base64 string of at most 512 characters")

    return _insert(svc, round_id, "shares", "share", robot, {"shares": body.shares}, check)


def my_shares(svc: CloudService, round_id: int, robot: Robot) -> dict:
    _, sa = _advanced(svc, round_id)
    if sa.cohort is None or sa.stage == "failed":
        raise _pending("the key shares", sa)
    if robot.robot_id not in sa.cohort:
        raise ApiError(403, "not_in_cohort", f"robot {robot.robot_id!r} is not in round {round_id}'s mask cohort")
    with svc.read() as s:
        posted = _messages(s, round_id, "shares")
    return {"threshold": sa.threshold, "cohort": sa.cohort,
            "shares": {sender: posted[sender]["shares"][robot.robot_id] for sender in sa.cohort if sender != robot.robot_id}}


def survivors(svc: CloudService, round_id: int) -> dict:
    _, sa = _advanced(svc, round_id)
    if sa.survivors is None or sa.stage == "failed":
        raise _pending("the survivor list", sa)
    return {"survivors": sa.survivors, "dropped": sorted(set(sa.cohort) - set(sa.survivors)), "threshold": sa.threshold}


def post_unmask(svc: CloudService, round_id: int, robot: Robot, body: SecAggUnmask) -> dict:
    if body.robot_id != robot.robot_id:
        raise ApiError(403, "robot_mismatch", f"shares are from {body.robot_id!r} but the token belongs to {robot.robot_id!r}")

    def check(s, sa, rnd):
        if robot.robot_id not in sa.survivors:
            raise ApiError(403, "not_a_survivor", f"robot {robot.robot_id!r} has no upload in round {round_id}")
        dropped = set(sa.cohort) - set(sa.survivors)
        if set(body.self_seed_shares) != set(sa.survivors) or set(body.mask_key_shares) != dropped:
            raise ApiError(422, "bad_unmask", "unmask shares must cover exactly the survivors (self seeds) and the dropped robots (mask keys)")
        if body.x != _core().share_points(sa.roster)[robot.robot_id]:
            raise ApiError(422, "bad_unmask", "share point x does not match the robot's roster position")

    return _insert(svc, round_id, "unmask", "unmask", robot, body.model_dump(), check)


def ready_to_publish(svc: CloudService, round_id: int) -> bool:
    """Worker hook before publishing: True for rounds without secure aggregation or once
    their sum is unmasked; unmasks it when enough responses are in (else False: wait)."""
    with svc.read() as s:
        if s.get(SecAggRound, round_id) is None:
            return True
    rnd, sa = _advanced(svc, round_id)
    if sa.stage == "done":
        return True
    if sa.stage != "unmask" or rnd.folded_count != rnd.accepted_count or not rnd.sum_blob_sha256:
        return False
    with svc.read() as s:
        responses = list(_messages(s, round_id, "unmask").values())
        adverts = _messages(s, round_id, "keys")
    if len(responses) < sa.threshold:
        return False
    from scfl_nodes.core.crypto import CryptoError, EncryptedAggregate

    secagg = _core()
    ctx = svc.context(rnd.key_id)
    old_sum = rnd.sum_blob_sha256
    try:
        agg = EncryptedAggregate.from_bytes(svc.blobs.get(old_sum))
        vector = secagg.unmask_vector(
            context=secagg.round_context(rnd.key_id, rnd.skill_id, rnd.base_version, rnd.round_id),
            roster=[adverts[r] for r in sa.roster], cohort=sa.cohort, survivors=sa.survivors, responses=responses,
            threshold=sa.threshold, num_values=int(agg.header["num_values"]), plain_modulus=ctx.params.plain_modulus)
        ctx.add_plaintext(agg, vector)
    except (secagg.SecAggError, CryptoError) as exc:
        with svc.write() as s:
            rnd_w, sa_w = _load(s, round_id)
            _fail(sa_w, rnd_w, f"unmasking failed: {exc}", time.time())
        return False
    new_sum = svc.blobs.put(agg.to_bytes())
    with svc.write() as s:
        rnd_w, sa_w = _load(s, round_id)
        if rnd_w.sum_blob_sha256 != old_sum or sa_w.stage != "unmask":
            return False
        rnd_w.sum_blob_sha256 = new_sum
        sa_w.stage, sa_w.unmasked_at = "done", time.time()
    svc.delete_blob_if_unreferenced(old_sum)
    log.info("round %s unmasked (%d survivors, %d dropped)", round_id, len(sa.survivors), len(sa.cohort) - len(sa.survivors))
    return True


def check_upload(sa: Optional[SecAggRound], rnd: Round, header: dict, robot_id: str) -> None:
    """Upload hook: a secure-aggregation round (``sa``: its row, None if the round runs
    without) takes only deltas masked for its cohort, and a round without it takes no
    secagg-masked delta (it could never be unmasked)."""
    scheme = header.get("mask_scheme")
    if sa is None:
        if scheme is not None:
            raise ApiError(422, "secagg_mismatch", f"round {rnd.round_id} does not run secure aggregation; upload an unmasked delta")
        return
    if sa.stage != "upload":
        raise ApiError(409, "wrong_stage", f"round {rnd.round_id} is in secure-aggregation stage {sa.stage!r}, not 'upload'")
    if robot_id not in (sa.cohort or []):
        raise ApiError(403, "not_in_cohort", f"robot {robot_id!r} is not in round {rnd.round_id}'s mask cohort")
    if scheme != "secagg" or sorted(header.get("mask_cohort") or []) != sa.cohort:
        raise ApiError(422, "secagg_mismatch", f"round {rnd.round_id} needs a delta masked (secagg) for the cohort {sa.cohort}")


# ----------------------------------------------------------------------------- HTTP
def register_routes(app: Any, svc: CloudService, *, admin, robot, anyone) -> None:
    """Mount the secure-aggregation endpoints (called by app.create_app)."""
    base = "/api/v1/rounds/{round_id}/secagg"
    tags = ["secure aggregation"]

    @app.post(base, status_code=201, dependencies=[Depends(admin)], tags=tags,
              summary="Run this (open, empty) round with secure aggregation and dropout recovery")
    def _enable(body: SecAggEnable, round_id: int = ROUND_ID):
        return enable(svc, round_id, body)

    @app.get(base, dependencies=[Depends(anyone)], tags=tags, summary="Secure-aggregation stage of a round")
    def _state(round_id: int = ROUND_ID):
        return state(svc, round_id)

    @app.post(base + "/keys", status_code=201, tags=tags, summary="Advertise this robot's signed X25519 mask keys")
    def _keys(body: SecAggKeys, round_id: int = ROUND_ID, bot=Depends(robot)):
        return post_keys(svc, round_id, bot, body)

    @app.get(base + "/keys", dependencies=[Depends(anyone)], tags=tags, summary="The frozen roster of mask keys")
    def _roster(round_id: int = ROUND_ID):
        return roster(svc, round_id)

    @app.post(base + "/shares", status_code=201, tags=tags, summary="Relay encrypted Shamir shares to the roster")
    def _shares(body: SecAggShares, round_id: int = ROUND_ID, bot=Depends(robot)):
        return post_shares(svc, round_id, bot, body)

    @app.get(base + "/shares", tags=tags, summary="The encrypted shares addressed to this robot, and the cohort")
    def _my_shares(round_id: int = ROUND_ID, bot=Depends(robot)):
        return my_shares(svc, round_id, bot)

    @app.get(base + "/survivors", dependencies=[Depends(anyone)], tags=tags,
             summary="Survivors (uploads held) and dropped cohort members, once the round closed")
    def _survivors(round_id: int = ROUND_ID):
        return survivors(svc, round_id)

    @app.post(base + "/unmask", status_code=201, tags=tags, summary="Reveal the shares the survivor list calls for")
    def _unmask(body: SecAggUnmask, round_id: int = ROUND_ID, bot=Depends(robot)):
        return post_unmask(svc, round_id, bot, body)
