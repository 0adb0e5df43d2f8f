"""Load test of the cloud aggregator on loopback: N robots upload 3 MB encrypted deltas.

For each N a fresh server (uvicorn subprocess, SQLite, blobs on disk) is started; N robots
are registered with their own Ed25519 keys; one round with quorum N is opened; the robots
upload concurrently (at most ``--concurrency`` requests in flight). Reported per N:
uploads/s, client-side p50/p99 latency, server peak RSS (VmHWM), the aggregation worker's
compute time (sum of per-delta folds), per-delta fold p50, and the wall time from the last
upload to the published aggregate.

The client side is kept out of the way: every upload is built and signed before the clock
starts (re-signed ones as small header/trailer pieces around one shared payload, so 10,000
robots fit in memory) and sent with ``http.client`` on one keep-alive connection per client
thread; ``client_cpu_ms_per_upload`` and ``server_cpu_ms_per_upload`` (process CPU time)
show which side spends what, and ``server_rss_curve`` samples the server's RSS against the
number of uploads done (flat memory at any N).

Deltas are 500,000 float values (a 0.5M-parameter skill, paper 6.2) under the default
ring-LWE parameters (~3 MB each). For N <= ``--real-max`` every robot encrypts its own delta
and the published sum is decrypted and checked to be exact. Above it (N=1000) encrypting
1,000 deltas would take minutes of shared CPU, so one real ciphertext payload is re-used
with a fresh 16-byte nonce, robot id and Ed25519 signature per robot: the cloud does
exactly the same work (parse, verify, expand ``a`` from the nonce with AES-128-CTR, add), but that sum is
not decryptable, so it is not checked. Everything is bounded: N, in-flight requests and a
wall-clock budget per N.

    python bench/bench_cloud.py                 # N = 10, 100, 1000
    python bench/bench_cloud.py --n 10 100      # quicker
    python bench/bench_cloud.py --n 10000 --budget-s 300 --skip-fold-cost   # flat memory, bounded time
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = [("skill.w", (500, 999)), ("skill.b", (500,))]  # 500,000 values
CLIP = 0.05  # 1000 clients x 0.05 x 2^15 < t/2 = 2^31


def _vm_kb(pid: int, field: str) -> int | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (all threads), seconds: the CPU it used whatever the load."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p)) if values else float("nan")


class DeltaFactory:
    """Signed ciphertexts for the robots, built before the clock starts, so the timed part is
    the server's work and the wire: real encryptions (kept in memory: N <= real_max), or one
    real ciphertext re-signed per robot, kept as (header bytes, digest + signature) pieces
    around the one shared payload (a few hundred bytes per robot, so 10,000 robots fit)."""

    def __init__(self, fleet_key, real: bool, workdir: Path, skill_id: str, round_id: int, n: int) -> None:
        self.fleet_key, self.real, self.workdir = fleet_key, real, workdir
        self.skill_id, self.round_id, self.n = skill_id, round_id, n
        self.plain_sum = None
        self._template = None
        self._bodies: dict[str, tuple] = {}
        self.encrypt_s: list[float] = []

    def prepare(self, robots) -> None:
        import hashlib

        from tqdm import tqdm

        from scfl_nodes.core.crypto import encrypt_delta, quantize
        from scfl_nodes.core.crypto.wire import MAGIC_DELTA, pack_prefix

        rng = np.random.default_rng(0)
        todo = robots if self.real else robots[:1]
        for robot_id, key, _token in tqdm(todo, desc=f"encrypt N={self.n}", leave=False):
            tensors = {name: rng.normal(0, 0.01, shape).astype(np.float32) for name, shape in SHAPES}
            t0 = time.perf_counter()
            enc = encrypt_delta(self.fleet_key, tensors, skill_id=self.skill_id, base_version=0,
                                round_id=self.round_id, robot_id=robot_id, signing_key=key, clip=CLIP,
                                num_clients=self.n)
            blob = enc.to_bytes()
            self.encrypt_s.append(time.perf_counter() - t0)
            if self.real:
                self._bodies[robot_id] = (blob,)
                q = quantize(tensors, CLIP, self.fleet_key.params.scale)
                self.plain_sum = q if self.plain_sum is None else self.plain_sum + q
            else:
                self._template = enc
        if self.real:
            return
        payload = memoryview(self._template.payload)
        for robot_id, key, _token in tqdm(robots, desc=f"re-sign N={self.n}", leave=False):
            header = dict(self._template.header, robot_id=robot_id, nonce=os.urandom(16).hex())
            head = pack_prefix(MAGIC_DELTA, header, b"", header["version"])[:-8]  # everything before the payload length
            lead = head + len(payload).to_bytes(8, "little")
            hasher = hashlib.sha256(lead)
            hasher.update(payload)
            digest = hasher.digest()
            self._bodies[robot_id] = (lead, payload, digest + key.sign(digest))

    def body(self, robot_id: str) -> tuple:
        """The upload's bytes as pieces (sent back to back, never joined)."""
        return self._bodies[robot_id]


class FastUploader:
    """One keep-alive HTTP/1.1 connection per client thread (``http.client``: no per-request
    client machinery); the body pieces go out with ``sendall`` each, the shared payload
    without a copy."""

    def __init__(self, url: str, timeout: float) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self._new = lambda: http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self._conn = self._new()

    def upload(self, token: str, pieces: tuple) -> dict:
        size = sum(len(p) for p in pieces)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream",
                   "Content-Length": str(size)}
        try:
            self._conn.request("POST", "/api/v1/skills/upload", body=iter(pieces), headers=headers)
            resp = self._conn.getresponse()
            data = resp.read()
        except Exception:
            self._conn.close()
            self._conn = self._new()
            raise
        if resp.status != 201:
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)


def run_one(n: int, args, fleet_key, tmp: Path) -> dict:
    from tqdm import tqdm

    from scfl_cloud.testing import CloudServer
    from scfl_nodes.core.crypto import EncryptedAggregate, dequantize, generate_signing_key

    storage = tmp / f"cloud-{n}"
    server = CloudServer(storage, extra_args=["--prune-deltas"], max_upload_bytes=8 * 2**20).start()
    result: dict = {"n": n, "load_avg_1m_before": round(os.getloadavg()[0], 2)}
    try:
        admin = server.admin_client(timeout=120)
        admin.put_fleet_context(fleet_key.cloud_context())
        skill = admin.create_skill("bench", ["benchmark skill"], skill_id="skill_bench")["skill_id"]
        robots = []
        for i in tqdm(range(n), desc=f"register N={n}", leave=False):
            key = generate_signing_key()
            robots.append((f"bench-{i:04d}", key, admin.register_robot(f"bench-{i:04d}", key.public_bytes())))
        round_id = admin.open_round(skill, 0, quorum=n, deadline_s=3600, secure_aggregation=False)["round_id"]
        real = n <= args.real_max
        work = tmp / f"deltas-{n}"
        work.mkdir()
        factory = DeltaFactory(fleet_key, real, work, skill, round_id, n)
        factory.prepare(robots)

        rss_start = _vm_kb(server.proc.pid, "VmRSS")
        latencies: list[float] = []
        errors: list[str] = []
        sizes: list[int] = []
        local = threading.local()
        budget_end = time.monotonic() + args.budget_s

        def upload(robot) -> None:
            robot_id, key, token = robot
            if time.monotonic() > budget_end:
                errors.append("budget exceeded")
                return
            pieces = factory.body(robot_id)
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = FastUploader(server.url, timeout=300)
            t0 = time.perf_counter()
            try:
                client.upload(token, pieces)
                latencies.append(time.perf_counter() - t0)
                sizes.append(sum(len(p) for p in pieces))
            except Exception as exc:  # recorded, not fatal: the bench reports failures
                errors.append(f"{type(exc).__name__}: {exc}")

        concurrency = min(n, args.concurrency)
        rss_curve: list[tuple[float, int, float]] = []  # (s since first upload, uploads done, server MB)
        sampling = threading.Event()

        def sample_rss() -> None:
            while not sampling.wait(args.rss_every_s):
                kb = _vm_kb(server.proc.pid, "VmRSS")
                rss_curve.append((round(time.perf_counter() - t_start, 1), len(latencies),
                                  round((kb or 0) / 1024, 1)))

        server_cpu0, client_cpu0 = _cpu_s(server.proc.pid), time.process_time()
        t_start = time.perf_counter()
        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            list(tqdm(pool.map(upload, robots), total=n, desc=f"upload N={n}", leave=False))
        upload_wall = time.perf_counter() - t_start
        t_last = time.perf_counter()
        info = admin.wait_for_round(round_id, timeout=args.budget_s, poll_s=0.05) if not errors else admin.round_status(round_id)
        publish_wait = time.perf_counter() - t_last
        server_cpu, client_cpu = _cpu_s(server.proc.pid) - server_cpu0, time.process_time() - client_cpu0
        sampling.set()
        sampler.join()
        status = admin.status()
        result.update(
            real_ciphertexts=real, concurrency=concurrency, delta_bytes=int(np.mean(sizes)) if sizes else None,
            uploads_ok=len(latencies), upload_errors=len(errors), first_errors=errors[:3],
            upload_wall_s=round(upload_wall, 3), uploads_per_s=round(len(latencies) / upload_wall, 2),
            upload_mb_per_s=round(sum(sizes) / upload_wall / 1e6, 2),
            latency_p50_ms=round(1000 * _pct(latencies, 50), 1), latency_p99_ms=round(1000 * _pct(latencies, 99), 1),
            server_rss_start_mb=round((rss_start or 0) / 1024, 1),
            server_peak_rss_mb=round((_vm_kb(server.proc.pid, "VmHWM") or 0) / 1024, 1),
            round_state=info["state"], folded=info["folded"],
            aggregation_compute_s=info["aggregation_seconds"],
            fold_per_delta_p50_ms=status["latencies"]["fold_per_delta"]["p50_ms"],
            last_upload_to_published_s=round(publish_wait, 3),
            first_upload_to_published_s=round(upload_wall + publish_wait, 3),
            client_encrypt_sign_s_mean=round(float(np.mean(factory.encrypt_s)), 4) if factory.encrypt_s else None,
            load_avg_1m_after=round(os.getloadavg()[0], 2),
            server_cpu_ms_per_upload=round(1000 * server_cpu / max(1, len(latencies)), 2),
            client_cpu_ms_per_upload=round(1000 * client_cpu / max(1, len(latencies)), 2),
            server_rss_curve=rss_curve,
        )
        if real and info["state"] == "published":
            agg = EncryptedAggregate.from_bytes(admin.download_aggregate(round_id))
            t0 = time.perf_counter()
            got = fleet_key.decrypt_aggregate(agg)
            result["decrypt_s"] = round(time.perf_counter() - t0, 3)
            # values are laid out in canonical (sorted tensor name) order, like quantize does
            want = dequantize(factory.plain_sum, sorted([k, list(s)] for k, s in SHAPES), fleet_key.params.scale)
            result["sum_exact"] = bool(all(np.array_equal(got[k], want[k]) for k in want))
        shutil.rmtree(work, ignore_errors=True)
    finally:
        server.stop()
    return result


def fold_cost(fleet_key, batch: int = 32, repeats: int = 5) -> dict:
    """The worker's per-delta fold, through the worker's own code (``worker.fold_deltas``:
    read blob, parse + SHA-256 digest check, AES-CTR expansion of ``a``, add; the next
    delta's read + digest check overlap the current add) plus one checkpoint of the running
    sum per ``batch`` (serialise + store, as ``fold_batch`` does), next to the sequential
    floor for the format: read the blob + SHA-256 over it + the AES-128-CTR keystream of
    ``a`` + the three uint64 adds. Measured in this process on one real 0.5M-value delta
    re-signed with ``batch`` fresh nonces: best of ``repeats`` wall times, and the process
    CPU time of that same run (both threads)."""
    import hashlib

    from scfl_cloud import crypto_bridge
    from scfl_cloud.blobstore import LocalBlobStore
    from scfl_cloud.worker import fold_deltas
    from scfl_nodes.core.crypto import encrypt_delta, generate_signing_key, rlwe
    from scfl_nodes.core.crypto.wire import MAGIC_DELTA, pack

    key = generate_signing_key()
    rng = np.random.default_rng(1)
    tensors = {name: rng.normal(0, 0.01, shape).astype(np.float32) for name, shape in SHAPES}
    enc = encrypt_delta(fleet_key, tensors, skill_id="s", base_version=0, round_id=1, robot_id="r",
                        signing_key=key, clip=CLIP, num_clients=batch)
    ctx = fleet_key.cloud_context()
    store = LocalBlobStore(tempfile.mkdtemp(prefix="scfl-bench-fold-"))
    todo = []
    for i in range(batch):
        header = dict(enc.header, robot_id=f"r{i}", nonce=os.urandom(16).hex())
        prefix, digest = pack(MAGIC_DELTA, header, enc.payload)
        todo.append((i, store.put(prefix + digest + key.sign(digest))))
    count = len(enc.payload) // 6
    acc = rlwe.RlweSum(fleet_key.params, count // fleet_key.params.n)
    floors, folds, cpus = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        raw = store.get(todo[0][1])
        hashlib.sha256(raw).digest()
        acc.add_ciphertext(os.urandom(16), memoryview(raw)[-96 - 6 * count: -96])
        floors.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        agg = fold_deltas(ctx, None, store, todo, {})
        store.put(crypto_bridge.aggregate_to_bytes(agg))
        folds.append((time.perf_counter() - t0) / batch)
        cpus.append((time.process_time() - c0) / batch)
    shutil.rmtree(store.root, ignore_errors=True)
    best = int(np.argmin(folds))
    floor, fold = min(floors), folds[best]
    return {"batch": batch, "format_version": enc.header["version"], "a_expansion": rlwe.WRITE_EXPANSION.name,
            "fold_per_delta_ms": round(fold * 1e3, 2), "fold_per_delta_median_ms": round(float(np.median(folds)) * 1e3, 2),
            "fold_cpu_per_delta_ms": round(cpus[best] * 1e3, 2), "floor_per_delta_ms": round(floor * 1e3, 2),
            "ratio_to_floor": round(fold / floor, 2), "load_avg_1m": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000], help="fleet sizes (each <= 10000)")
    p.add_argument("--concurrency", type=int, default=16, help="max uploads in flight")
    p.add_argument("--real-max", type=int, default=100, help="largest N that encrypts every delta for real")
    p.add_argument("--budget-s", type=float, default=900, help="wall-clock budget per N (uploads after it are skipped)")
    p.add_argument("--rss-every-s", type=float, default=2.0, help="server RSS sampling interval (server_rss_curve)")
    p.add_argument("--skip-fold-cost", action="store_true", help="skip the in-process fold measurement")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "cloud.json"))
    args = p.parse_args(argv)
    if any(n < 3 or n > 10000 for n in args.n):
        p.error("each N must be in 3..10000 (the cloud never publishes an aggregate of fewer than 3 robots)")

    from scfl_nodes.core.crypto import generate_fleet_keys

    fleet_key = generate_fleet_keys("rlwe")
    results = []
    fold = None if args.skip_fold_cost else fold_cost(fleet_key)
    print(json.dumps({"fold": fold}), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="scfl-bench-cloud-"))
    try:
        for n in args.n:
            r = run_one(n, args, fleet_key, tmp)
            print(json.dumps(r), flush=True)
            results.append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {
        "benchmark": "cloud aggregator load (loopback, uvicorn subprocess, SQLite, blobs on local disk)",
        "delta_values": sum(int(np.prod(s)) for _, s in SHAPES), "backend": fleet_key.backend,
        "params_id": fleet_key.params_id, "clip": CLIP,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "note": ("client and server share the same CPUs (and, where load_avg is high, other jobs); "
                 "N above real_max re-signs one real ciphertext per robot (same cloud work, sum not decryptable)"),
        "fold_in_process": fold,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
