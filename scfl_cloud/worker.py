"""Background aggregation worker: closes rounds at their deadline, folds accepted deltas
into each round's encrypted running sum, and publishes the sum as a new skill version.

Runs in one daemon thread beside the HTTP server, so uploads return as soon as the delta
is durably stored. Memory holds one delta at a time plus the running sums of the last few
rounds it folded (:class:`SumCache`), whatever the number of robots. Several workers (this
thread, `scfl cloud worker` processes) may share one PostgreSQL database: each round is
folded or published only under its claim (``CloudService.claims``).

Crash safety: deltas are folded into the running sum in memory; at a checkpoint the new
sum is written to the blob store first, then ONE transaction swaps the round's
``sum_blob_sha256``, bumps ``folded_count`` and flags the folded deltas. A crash before that
commit leaves the old sum and unflagged deltas, which are folded again from the old sum
after restart; a crash after it finds them flagged. So no accepted delta is lost and none
is counted twice; a crash costs at most one checkpoint interval of folding work again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import os
import signal
import threading
import time
from typing import Any, Optional

from sqlalchemy import select

from . import crypto_bridge
from .models import Delta, Round, SkillVersion
from .service import CloudService

log = logging.getLogger("scfl_cloud.worker")

# Fault injection for the crash-safety tests only, at the one risky point (a new running
# sum is written, its commit is not): ``crash_before_fold_commit`` SIGKILLs the process
# there; ``block_before_fold_commit:<path>`` creates <path> and blocks, so a test kills the
# server exactly there instead of hoping its SIGKILL lands mid-fold.
FAULT_ENV = "SCFL_CLOUD_FAULT"


def _fault_before_fold_commit(round_id: int) -> None:
    fault = os.environ.get(FAULT_ENV, "")
    if fault == "crash_before_fold_commit":
        log.warning("fault injection: SIGKILL before committing the running sum of round %s", round_id)
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault.startswith("block_before_fold_commit:"):
        log.warning("fault injection: blocking before committing the running sum of round %s", round_id)
        marker = fault.split(":", 1)[1]
        with open(marker, "w") as fh:
            fh.write(str(round_id))
        while True:
            time.sleep(3600)


# After a wake-up, the worker waits this long for more uploads before it ticks (a tick per
# upload cost ~1.5 ms of queries and bookkeeping; the hand-off holds ~10 deltas, so a short
# window keeps them in memory).
GATHER_S = 0.05


class DeltaFoldError(Exception):
    """Folding one delta failed; ``delta_id`` names it, ``cause`` is the original error."""

    def __init__(self, delta_id: Any, cause: BaseException) -> None:
        super().__init__(f"delta {delta_id}: {type(cause).__name__}: {getattr(cause, 'detail', None) or cause}")
        self.delta_id = delta_id
        self.cause = cause


def fold_deltas(ctx, agg, blobs, todo: list, fold_ms: dict, accepted=None) -> Any:
    """Fold the deltas ``todo`` ([(delta_id, blob digest)], in order) into the running sum
    ``agg`` (None starts one) and return it; ``fold_ms[delta_id]`` gets each delta's time.

    Per delta: read the blob, expand ``a`` and add (``CloudContext.add``) while a helper
    thread checks the blob's SHA-256 against its name (:func:`_fold_stored`; the digest and
    signature were checked at upload). A delta this process accepted a
    moment ago is taken already parsed and checked from ``accepted``
    (:class:`~scfl_cloud.handoff.AcceptedDeltas`) instead of being read and hashed again
    (its blob must still exist: a lost blob quarantines its delta either way, since a later
    rebuild of the sum would need it). Raises :class:`DeltaFoldError`
    naming the first delta that failed (``agg`` may then hold a partial add: discard it).
    """
    buf = bytearray()  # one delta at a time: each read reuses it (no fresh 3 MB per delta)
    for delta_id, digest in todo:
        t0 = time.perf_counter()
        try:
            delta = accepted.take(digest) if accepted is not None else None
            if delta is not None and blobs.exists(digest):  # a lost blob is quarantined either way
                agg = crypto_bridge.add(ctx, agg, delta)
            else:
                agg = _fold_stored(ctx, agg, blobs, digest, buf)
        except Exception as exc:
            raise DeltaFoldError(delta_id, exc) from exc
        fold_ms[delta_id] = (time.perf_counter() - t0) * 1000.0
    return agg


class BlobCorrupted(Exception):
    """A stored delta no longer hashes to its content address (disk corruption or tampering)."""

    def __init__(self, digest: str, actual: str) -> None:
        self.detail = f"blob {digest[:16]}... hashes to {actual[:16]}...: modified or corrupted in the blob store"
        super().__init__(self.detail)


_hash_thread: Optional[concurrent.futures.ThreadPoolExecutor] = None
_hash_thread_lock = threading.Lock()


def _hasher() -> concurrent.futures.ThreadPoolExecutor:
    global _hash_thread
    with _hash_thread_lock:
        if _hash_thread is None:
            _hash_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="scfl-fold-hash")
        return _hash_thread


def _sha256_hex(data) -> str:
    return hashlib.sha256(data).hexdigest()  # releases the GIL: runs beside the add


def _fold_stored(ctx, agg, blobs, digest: str, buf: bytearray) -> Any:
    """Read a delta from the blob store and add it, checking its integrity in parallel.

    The integrity check is the SHA-256 of the whole blob against its name (the content
    address recorded at upload, after the digest and signature checks passed): it covers
    header, payload, digest and signature, so neither corruption nor a consistent rewrite of
    the stored bytes goes unnoticed. It runs on a helper thread (hashlib releases the GIL)
    while this thread expands ``a`` and adds, so a fold costs about max(hash, add) instead of
    their sum. Adding before the check finishes is safe: a mismatch raises, and the caller
    then discards the whole running sum (:class:`DeltaFoldError`), as for any failed fold.
    """
    view = blobs.read_into(digest, buf)
    check = _hasher().submit(_sha256_hex, view)
    try:
        agg = crypto_bridge.add(ctx, agg, crypto_bridge.parse_stored_delta(view))
    finally:
        actual = check.result()  # always waited for: ``buf`` is overwritten by the next read
    if actual != digest:
        raise BlobCorrupted(digest, actual)
    return agg


@dataclasses.dataclass
class RunningSum:
    """A round's running sum as this worker holds it: the committed sum ``digest`` plus the
    deltas folded into ``agg`` since that commit (``fold_ms``: delta id -> fold time), not
    yet checkpointed. Losing it (a crash, a failed batch) loses no data: those deltas are
    still unflagged in the database and are folded again from the committed sum."""

    digest: Optional[str]
    agg: Any
    fold_ms: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0  # fold time of the uncommitted deltas
    since: float = dataclasses.field(default_factory=time.monotonic)  # first uncommitted fold


class SumCache:
    """The running sums this worker holds, keyed by round (:class:`RunningSum`).

    Not state that matters: an entry is used only while the database still names exactly
    its digest as the round's sum (another worker, an unmasking step, an admin repair or a
    restart changes the digest and the entry is ignored). ``take`` removes the entry, so a
    batch that fails half-way (its sum mutated in memory) can never be reused. Bounded: a
    few rounds (an evicted entry's uncommitted deltas are simply folded again).
    """

    def __init__(self, max_rounds: int = 4) -> None:
        self.max_rounds = max_rounds
        self._sums: dict[int, RunningSum] = {}

    def take(self, round_id: int, digest: Optional[str]) -> Optional[RunningSum]:
        entry = self._sums.pop(round_id, None)
        if entry is None or digest is None or entry.digest != digest:
            return None
        return entry

    def keep(self, round_id: int, entry: RunningSum) -> None:
        self._sums.pop(round_id, None)
        while len(self._sums) >= self.max_rounds:
            self._sums.pop(next(iter(self._sums)))
        self._sums[round_id] = entry


class AggregationWorker:
    def __init__(self, service: CloudService) -> None:
        self.service = service
        self.sums = SumCache()
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

    def run(self) -> None:
        """The worker loop in the calling thread (a standalone `scfl cloud worker` process)."""
        self._run()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.service.wake.wait(self.service.settings.worker_poll_s):
                # woken by an upload: let the uploads right behind it arrive too, so one tick
                # (its queries, its round bookkeeping) folds several deltas instead of one each
                self._stop.wait(GATHER_S)
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
        """Do one unit of work; True if something changed (call again). One query finds the
        live rounds (the worker ticks about once per upload, so queries per tick count)."""
        rounds = self._live_rounds()
        now = time.time()
        expired = [r.round_id for r in rounds if r.state == "open" and r.deadline_at <= now]
        did = False
        if expired:
            did = self.close_expired(expired)
            rounds = self._live_rounds()
        pending = [r.round_id for r in rounds if r.folded_count < r.accepted_count]
        ready = [r.round_id for r in rounds if r.state == "closed" and r.folded_count == r.accepted_count]
        # One round's failure never stops the others: it is quarantined with the reason.
        # A round another worker process holds is skipped (it folds or publishes it).
        for round_id in pending:
            did |= self._guarded(round_id, self.fold_batch)
        for round_id in ready:
            did |= self._guarded(round_id, self.publish)
        return did

    def _live_rounds(self) -> list:
        with self.service.read() as s:
            return list(s.execute(select(Round.round_id, Round.state, Round.deadline_at, Round.folded_count,
                                         Round.accepted_count).where(Round.state.in_(("open", "closed")))
                                  .order_by(Round.round_id)))

    def _guarded(self, round_id: int, step) -> bool:
        try:
            with self.service.claims.claim(round_id) as mine:
                return step(round_id) if mine else False
        except Exception as exc:
            log.exception("round %s: %s failed", round_id, step.__name__)
            self.service.quarantine_round(round_id, f"{step.__name__}: {type(exc).__name__}: {exc}")
            return True

    def close_expired(self, expired: list) -> bool:
        """Close (or expire) the open rounds ``expired`` (ids :meth:`tick` found past their deadline)."""
        svc = self.service
        now = time.time()
        for round_id in expired:
            with svc.write() as s:
                rnd = svc._round_for_update(s, round_id)
                if rnd is None or rnd.state != "open":
                    continue
                rnd.closed_at = now
                if rnd.accepted_count >= max(svc.settings.min_participants, rnd.min_participants):
                    rnd.state, rnd.close_reason = "closed", "deadline"
                    continue
                rnd.state, rnd.close_reason = "expired", "deadline"
                old_sum, rnd.sum_blob_sha256 = rnd.sum_blob_sha256, None
                deltas = list(s.scalars(select(Delta.blob_sha256).where(Delta.round_id == round_id)))
            log.info("round %s expired at its deadline with too few deltas", round_id)
            svc.delete_blob_if_unreferenced(old_sum)  # a partial sum of too few robots is never kept
            if svc.settings.prune_deltas_after_publish:
                for digest in deltas:
                    svc.blobs.delete(digest)
        return bool(expired)

    def fold_batch(self, round_id: int) -> bool:
        """Fold the round's unfolded deltas into its running sum (held in memory,
        :class:`RunningSum`) and checkpoint it, in one transaction, when it is due (see the
        module docstring for crash safety).

        Why it is fast: the running sum stays in memory between calls (:class:`SumCache`,
        trusted only while the committed ``sum_blob_sha256`` still names its base), so it is
        never re-parsed; the digest and signature were checked at upload, so the fold only
        parses and adds (:func:`fold_deltas`; a delta read back from the store is checked
        against its content address beside the add); and the sum (3 MB serialised, hashed,
        written, fsynced, the old one deleted: ~15 ms of CPU) is checkpointed once per
        ``fold_batch`` deltas, not once per wake-up. A checkpoint is due when ``fold_batch``
        deltas are uncommitted, when a closed round has every accepted delta folded (it can
        be published), when the oldest uncommitted fold is ``fold_checkpoint_s`` old (a crash
        redoes little), and for a round's first sum (a new sum base is always committed).
        Uncommitted folds are no durability risk: the uploads are already committed and
        stored, only the work of folding them again is at stake.
        """
        svc = self.service
        batch = svc.settings.fold_batch
        with svc.read() as s:  # the columns only: loading the Round object cost more than the query
            old_sum, key_id, state, accepted, folded = s.execute(select(
                Round.sum_blob_sha256, Round.key_id, Round.state, Round.accepted_count, Round.folded_count)
                .where(Round.round_id == round_id)).one()
            closed = state == "closed"
            held = self.sums.take(round_id, old_sum)  # ours, folded past the committed sum, or None
            skip = list(held.fold_ms) if held is not None else []
            query = select(Delta.id, Delta.blob_sha256).where(
                Delta.round_id == round_id, Delta.folded.is_(False), Delta.quarantined.is_(False))
            if skip:
                query = query.where(Delta.id.not_in(skip))
            todo = [tuple(r) for r in s.execute(query.order_by(Delta.id).limit(max(0, batch - len(skip))))] \
                if len(skip) < batch else []
        ctx = svc.context(key_id)
        if held is None:
            agg = crypto_bridge.aggregate_from_bytes(ctx, svc.blobs.get(old_sum)) if old_sum else None
            held = RunningSum(old_sum, agg)
        t_start = time.perf_counter()
        fold_ms: dict[int, float] = {}
        try:
            held.agg = fold_deltas(ctx, held.agg, svc.blobs, todo, fold_ms, svc.accepted)
        except DeltaFoldError as exc:
            # upload-time validation makes this a lost blob or a bug: leave this delta out
            # (with the reason) and redo the work from the committed sum without it
            cause = exc.cause
            detail = getattr(cause, "detail", None) or str(cause)
            svc.quarantine_delta(exc.delta_id, f"{type(cause).__name__}: {detail}")
            return True
        if fold_ms and not held.fold_ms:
            held.since = time.monotonic()
        held.fold_ms.update(fold_ms)
        held.seconds += time.perf_counter() - t_start
        for ms in fold_ms.values():
            svc.latency.add("fold", ms)
        due = held.fold_ms and (
            old_sum is None or len(held.fold_ms) >= batch
            or (closed and folded + len(held.fold_ms) >= accepted)
            or time.monotonic() - held.since >= svc.settings.fold_checkpoint_s)
        if not due:
            self.sums.keep(round_id, held)
            return len(todo) == batch - len(skip)  # a full batch: more may be waiting (else an upload wakes us)
        return self._checkpoint(round_id, held)

    def _checkpoint(self, round_id: int, held: RunningSum) -> bool:
        """Write the running sum and commit it with its folded deltas in ONE transaction."""
        svc = self.service
        t_start = time.perf_counter()
        new_sum = svc.blobs.put(crypto_bridge.aggregate_to_bytes(held.agg))
        elapsed = held.seconds + time.perf_counter() - t_start
        _fault_before_fold_commit(round_id)
        now = time.time()
        committed = False
        try:
            with svc.write() as s:
                rnd = svc._round_for_update(s, round_id)
                if rnd.sum_blob_sha256 != held.digest:  # someone else folded meanwhile: discard our work
                    log.warning("round %s running sum moved underneath the worker; retrying", round_id)
                    return True
                rows = {d.id: d for d in s.scalars(select(Delta).where(Delta.id.in_(list(held.fold_ms))))}
                if any(d.quarantined for d in rows.values()) or len(rows) != len(held.fold_ms):
                    log.warning("round %s: a delta folded in memory was dropped meanwhile; refolding", round_id)
                    return True  # (an admin repair also moves the sum; this is the belt to those braces)
                for delta_id, ms in held.fold_ms.items():
                    d = rows[delta_id]
                    if d.folded:
                        raise RuntimeError(f"delta {delta_id} already folded; refusing to double-count")
                    d.folded, d.folded_at, d.fold_ms = True, now, ms
                rnd.folded_count += len(held.fold_ms)
                rnd.sum_blob_sha256 = new_sum
                rnd.aggregation_seconds += elapsed
            committed = True
        finally:
            if not committed and new_sum != held.digest:  # a failed fold leaves no orphaned sum behind
                svc.delete_blob_if_unreferenced(new_sum)
        old_sum = held.digest
        self.sums.keep(round_id, RunningSum(new_sum, held.agg))
        if old_sum and old_sum != new_sum:
            svc.delete_blob_if_unreferenced(old_sum)
        return True

    def publish(self, round_id: int) -> bool:
        """Publish a fully folded closed round as a new skill version, signed by the cloud;
        a round left with fewer contributors than the floor expires instead."""
        from sqlalchemy import func

        from .models import FleetContext

        svc = self.service
        from . import secagg

        if not secagg.ready_to_publish(svc, round_id):  # secure aggregation: unmask the sum first
            return False
        sum_digest = None
        with svc.read() as s:
            rnd = s.get(Round, round_id)
            if rnd is not None:
                sum_digest = rnd.sum_blob_sha256
        signature = None
        if sum_digest:  # sign outside the write lock (reads the whole sum)
            signature = crypto_bridge.sign_aggregate(svc.blobs.get(sum_digest), svc.signing_key)
        with svc.write() as s:
            rnd = svc._round_for_update(s, round_id)
            if rnd is None or rnd.state != "closed" or rnd.folded_count != rnd.accepted_count:
                return False
            need = max(svc.settings.min_participants, rnd.min_participants)
            deltas = list(s.scalars(select(Delta.blob_sha256).where(Delta.round_id == round_id)))
            if rnd.folded_count < need or not rnd.sum_blob_sha256:
                rnd.state, rnd.close_reason = "expired", "too_few"
                rnd.error = f"{rnd.folded_count} valid contribution(s), fewer than the {need} needed to publish"
                old_sum, rnd.sum_blob_sha256 = rnd.sum_blob_sha256, None
                published = False
            else:
                if rnd.sum_blob_sha256 != sum_digest:
                    return True  # the sum moved while signing: sign again
                ctx = s.get(FleetContext, rnd.key_id)
                latest = s.scalar(select(func.max(SkillVersion.version)).where(SkillVersion.skill_id == rnd.skill_id)) or 0
                now = time.time()
                s.add(SkillVersion(skill_id=rnd.skill_id, version=latest + 1, parent_version=rnd.base_version or None,
                                   payload_format="encrypted_aggregate", blob_sha256=rnd.sum_blob_sha256,
                                   size_bytes=svc.blobs.size(rnd.sum_blob_sha256), key_id=rnd.key_id,
                                   backend=ctx.backend, params_id=ctx.params_id, round_id=rnd.round_id,
                                   num_contributors=rnd.folded_count, uploaded_by=None, created_at=now,
                                   cloud_signature=signature))
                rnd.state, rnd.published_version, rnd.published_at = "published", latest + 1, now
                closed_at = rnd.closed_at or now
                old_sum, published = None, True
        if published:
            svc.latency.add("close_to_publish", (now - closed_at) * 1000.0)
            log.info("round %s published as %s v%s", round_id, rnd.skill_id, latest + 1)
        else:
            log.warning("round %s expired: %s", round_id, rnd.error)
            svc.delete_blob_if_unreferenced(old_sum)
        if svc.settings.prune_deltas_after_publish:  # retention: per-robot ciphertexts go once the round ends
            for digest in deltas:
                svc.blobs.delete(digest)
        return True
