"""Background aggregation worker: closes rounds at their deadline, folds accepted deltas
into each round's encrypted running sum, and publishes the sum as a new skill version.

Runs in one daemon thread beside the HTTP server, so uploads return as soon as the delta
is durably stored. Memory holds one running sum plus one delta at a time, whatever the
number of robots. Crash safety: the new sum is written to the blob store first; then ONE
transaction swaps the round's ``sum_blob_sha256``, bumps ``folded_count`` and flags the
folded deltas. A crash before that commit leaves the old sum and unflagged deltas, which
are folded again from the old sum after restart; a crash after it finds them flagged.
So no accepted delta is lost and none is counted twice.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Optional

from sqlalchemy import select

from . import crypto_bridge
from .models import Delta, Round, SkillVersion
from .service import CloudService

log = logging.getLogger("scfl_cloud.worker")

# Fault injection for the crash-safety test only: when set to this value the process
# SIGKILLs itself after writing a new running sum but before committing it.
FAULT_ENV = "SCFL_CLOUD_FAULT"


class AggregationWorker:
    def __init__(self, service: CloudService) -> None:
        self.service = service
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.last_error: Optional[str] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scfl-aggregation", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.service.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.service.wake.wait(self.service.settings.worker_poll_s)
            self.service.wake.clear()
            try:
                while self.tick() and not self._stop.is_set():
                    pass
                self.last_error = None
            except Exception as exc:  # keep serving; the next tick retries from committed state
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("aggregation tick failed")
                self._stop.wait(1.0)

    # ------------------------------------------------------------------ one pass
    def tick(self) -> bool:
        """Do one unit of work; True if something changed (call again)."""
        did = self.close_expired()
        svc = self.service
        with svc.read() as s:
            pending = list(s.scalars(select(Round.round_id).where(
                Round.state.in_(("open", "closed")), Round.folded_count < Round.accepted_count).order_by(Round.round_id)))
            ready = list(s.scalars(select(Round.round_id).where(
                Round.state == "closed", Round.folded_count == Round.accepted_count, Round.accepted_count > 0)))
        for round_id in pending:
            did |= self.fold_batch(round_id)
        for round_id in ready:
            did |= self.publish(round_id)
        return did

    def close_expired(self) -> bool:
        svc = self.service
        now = time.time()
        with svc.read() as s:
            expired = list(s.scalars(select(Round.round_id).where(Round.state == "open", Round.deadline_at <= now)))
        for round_id in expired:
            with svc.write() as s:
                rnd = svc._round_for_update(s, round_id)
                if rnd is None or rnd.state != "open":
                    continue
                if rnd.accepted_count >= max(1, rnd.min_participants):
                    rnd.state, rnd.close_reason = "closed", "deadline"
                else:
                    rnd.state, rnd.close_reason = "expired", "deadline"
                rnd.closed_at = now
            log.info("round %s closed at deadline", round_id)
        return bool(expired)

    def fold_batch(self, round_id: int) -> bool:
        svc = self.service
        with svc.read() as s:
            rnd = s.get(Round, round_id)
            old_sum = rnd.sum_blob_sha256
            key_id = rnd.key_id
            todo = [(d.id, d.blob_sha256) for d in s.scalars(
                select(Delta).where(Delta.round_id == round_id, Delta.folded.is_(False))
                .order_by(Delta.id).limit(svc.settings.fold_batch))]
        if not todo:
            return False
        ctx = svc.context(key_id)
        t_start = time.perf_counter()
        agg = crypto_bridge.aggregate_from_bytes(ctx, svc.blobs.get(old_sum)) if old_sum else None
        fold_ms: dict[int, float] = {}
        for delta_id, digest in todo:
            t0 = time.perf_counter()
            delta = crypto_bridge.parse_delta(svc.blobs.get(digest))
            agg = crypto_bridge.add(ctx, agg, delta)
            del delta
            fold_ms[delta_id] = (time.perf_counter() - t0) * 1000.0
        new_sum = svc.blobs.put(crypto_bridge.aggregate_to_bytes(agg))
        del agg
        elapsed = time.perf_counter() - t_start
        if os.environ.get(FAULT_ENV) == "crash_before_fold_commit":
            log.warning("fault injection: SIGKILL before committing the running sum of round %s", round_id)
            os.kill(os.getpid(), signal.SIGKILL)
        now = time.time()
        with svc.write() as s:
            rnd = svc._round_for_update(s, round_id)
            if rnd.sum_blob_sha256 != old_sum:  # someone else folded meanwhile: discard our work
                log.warning("round %s running sum moved underneath the worker; retrying", round_id)
                return True
            for delta_id, ms in fold_ms.items():
                d = s.get(Delta, delta_id)
                if d.folded:
                    raise RuntimeError(f"delta {delta_id} already folded; refusing to double-count")
                d.folded, d.folded_at, d.fold_ms = True, now, ms
            rnd.folded_count += len(fold_ms)
            rnd.sum_blob_sha256 = new_sum
            rnd.aggregation_seconds += elapsed
        for ms in fold_ms.values():
            svc.latency.add("fold", ms)
        if old_sum and old_sum != new_sum:
            svc.delete_blob_if_unreferenced(old_sum)
        return True

    def publish(self, round_id: int) -> bool:
        svc = self.service
        from . import secagg

        if not secagg.ready_to_publish(svc, round_id):  # secure aggregation: unmask the sum first
            return False
        with svc.write() as s:
            rnd = svc._round_for_update(s, round_id)
            if rnd is None or rnd.state != "closed" or rnd.folded_count != rnd.accepted_count or not rnd.sum_blob_sha256:
                return False
            from .models import FleetContext
            from sqlalchemy import func

            ctx = s.get(FleetContext, rnd.key_id)
            latest = s.scalar(select(func.max(SkillVersion.version)).where(SkillVersion.skill_id == rnd.skill_id)) or 0
            now = time.time()
            s.add(SkillVersion(skill_id=rnd.skill_id, version=latest + 1, parent_version=rnd.base_version or None,
                               payload_format="encrypted_aggregate", blob_sha256=rnd.sum_blob_sha256,
                               size_bytes=svc.blobs.size(rnd.sum_blob_sha256), key_id=rnd.key_id,
                               backend=ctx.backend, params_id=ctx.params_id, round_id=rnd.round_id,
                               num_contributors=rnd.folded_count, uploaded_by=None, created_at=now))
            rnd.state, rnd.published_version, rnd.published_at = "published", latest + 1, now
            closed_at = rnd.closed_at or now
            deltas = list(s.scalars(select(Delta.blob_sha256).where(Delta.round_id == round_id)))
        svc.latency.add("close_to_publish", (now - closed_at) * 1000.0)
        log.info("round %s published as %s v%s", round_id, rnd.skill_id, latest + 1)
        if svc.settings.prune_deltas_after_publish:
            for digest in deltas:
                svc.blobs.delete(digest)
        return True
