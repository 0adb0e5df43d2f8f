"""Side by side, on the same deltas: scfl's secure aggregation, Flower's SecAgg+ and CKKS
homomorphic aggregation as NVFlare configures it.

Every system sums N client deltas of 500,000 float values (seeded normal(0, 0.01), the same
for all three) and is measured in its own child process (one process tree; peak memory is the
child's ru_maxrss, clients and server together):

* **scfl**: core/federation/secagg.py (X25519 key adverts, Shamir t-of-n shares of the self
  seed and mask key, AES-GCM share channels, self + pairwise masks mod t) on top of RLWE
  encryption + Ed25519 signature (core/crypto). Server per client: parse + verify signature +
  homomorphic add (what the cloud does at upload and fold); per round: unmask vector from t
  responses + one plaintext add. Threshold: the majority default. Exactness: the published
  sum decrypts to exactly the sum of the quantized deltas.
* **Flower SecAgg+** (``flwr`` 1.42, installed outside the shared venv, see --flwr-path): its
  simulation runtime needs Ray and a SuperLink, which this machine cannot run, so its own
  client code (``flwr.client.mod.secure_aggregation.secaggplus_mod``: ``_setup``,
  ``_share_keys``, ``_collect_masked_vectors``, ``_unmask``) is driven through the four
  protocol stages, and the server side follows ``SecAggPlusWorkflow`` step by step with
  Flower's primitives (ring neighbourhoods, share routing, masked sum mod 2^32, Shamir
  reconstruction, mask removal, dequantisation). Parameters: Flower's defaults
  (clipping_range 8, quantization_range 2^22, modulus_range 2^32, max_weight 1000) and
  num_shares 3, reconstruction_threshold 2 (no default exists; the values of Flower's
  secure-aggregation example); each client reports num_examples = max_weight, the weight at
  which its quantisation is finest. No transport, no signatures (Flower authenticates at the gRPC
  layer). Exactness: the max abs error of the dequantised sum against the float64 sum.
* **CKKS as NVFlare configures it**: TenSEAL CKKS, poly modulus 8192, coeff_mod_bit_sizes
  [60, 40, 40], global scale 2^40; each client encrypts its delta in 4096-slot vectors and
  serialises them; the server deserialises and adds; one decryption at the end. Above
  ``--ckks-real-max`` clients, client i re-sends client (i mod ckks-real-max)'s real
  ciphertexts (client cost is measured on the real ones; the server does the same work per
  client; the expected sum accounts for the reuse).

Times are wall seconds on a shared machine (note load_avg); they are the protocol's CPU work,
with no network. ``server_cpu_s_per_client`` is the process CPU time of the same server
sections (less sensitive than wall time to the other jobs, which start and stop between
the children). Writes bench/results/secagg_compare.json and .png; docs table in
docs/encryption.md.

    python bench/bench_secagg_compare.py --n 10 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NUM_VALUES = int(os.environ.get("SCFL_COMPARE_VALUES", 500_000))  # smaller only for a smoke run


def delta(i: int) -> np.ndarray:
    return np.random.default_rng(1000 + i).normal(0, 0.01, NUM_VALUES).astype(np.float32)


def float_sum(n: int, reuse: int | None = None) -> np.ndarray:
    total = np.zeros(NUM_VALUES, np.float64)
    for i in range(n):
        total += delta(i if reuse is None else i % reuse)
    return total


# ----------------------------------------------------------------------------- scfl
def run_scfl(n: int) -> dict:
    from scfl_nodes.core.crypto import EncryptedDelta, encrypt_delta, generate_fleet_keys, generate_signing_key, quantize
    from scfl_nodes.core.federation import SecAggClient, round_context, unmask_vector

    key = generate_fleet_keys("rlwe")
    ctx = key.cloud_context()
    t = key.params.plain_modulus
    robots = [f"r{i:03d}" for i in range(n)]
    signers = {r: generate_signing_key() for r in robots}
    pubs = {r: s.public_bytes() for r, s in signers.items()}
    context = round_context(key.key_id, "bench", 0, 1)
    client_s = dict.fromkeys(robots, 0.0)
    up_bytes = dict.fromkeys(robots, 0)
    clients = {}
    for r in robots:
        t0 = time.perf_counter()
        clients[r] = SecAggClient(r, context, signers[r])
        advert = clients[r].advertise()
        client_s[r] += time.perf_counter() - t0
        up_bytes[r] += len(json.dumps(advert))
    roster = [c.advertise() for c in clients.values()]
    outbox = {}
    for r in robots:
        t0 = time.perf_counter()
        outbox[r] = clients[r].share_keys(roster, pubs)
        client_s[r] += time.perf_counter() - t0
        up_bytes[r] += len(json.dumps(outbox[r]))
    for r in robots:
        t0 = time.perf_counter()
        clients[r].receive_shares({s: m[r] for s, m in outbox.items() if s != r})
        client_s[r] += time.perf_counter() - t0
    server_s = server_cpu_s = 0.0
    parts = {"parse_verify_s": 0.0, "add_s": 0.0, "unmask_s": 0.0}  # where the server's seconds go
    agg = None
    want_q = None
    for i, r in enumerate(robots):
        values = {"v": delta(i)}
        t0 = time.perf_counter()
        mask = clients[r].mask(NUM_VALUES, t)
        blob = encrypt_delta(key, values, skill_id="bench", base_version=0, round_id=1, robot_id=r,
                             signing_key=signers[r], clip=0.05, num_clients=n, mask=mask, mask_cohort=robots,
                             mask_scheme="secagg").to_bytes()
        client_s[r] += time.perf_counter() - t0
        up_bytes[r] += len(blob)
        q = quantize(values, 0.05, key.params.scale)
        want_q = q if want_q is None else want_q + q
        t0, c0 = time.perf_counter(), time.process_time()
        parsed = EncryptedDelta.from_bytes(blob)
        parsed.verify(pubs[r])
        t1 = time.perf_counter()
        agg = ctx.add(agg, parsed)
        t2 = time.perf_counter()
        server_s += t2 - t0
        server_cpu_s += time.process_time() - c0
        parts["parse_verify_s"] += t1 - t0
        parts["add_s"] += t2 - t1
        del blob, parsed, mask
    responses = []
    for r in robots[: clients[robots[0]].threshold]:
        t0 = time.perf_counter()
        resp = clients[r].unmask_shares(robots)
        client_s[r] += time.perf_counter() - t0
        up_bytes[r] += len(json.dumps(resp))
        responses.append(resp)
    t0, c0 = time.perf_counter(), time.process_time()
    vector = unmask_vector(context=context, roster=roster, cohort=robots, survivors=robots, responses=responses,
                           threshold=clients[robots[0]].threshold, num_values=NUM_VALUES, plain_modulus=t)
    ctx.add_plaintext(agg, vector)
    parts["unmask_s"] = time.perf_counter() - t0
    server_s += parts["unmask_s"]
    server_cpu_s += time.process_time() - c0
    got = key.decrypt_aggregate_quantized(agg)
    return dict(threshold=clients[robots[0]].threshold, client_s=list(client_s.values()),
                upload_bytes=list(up_bytes.values()), server_s=server_s, server_cpu_s=server_cpu_s,
                server_breakdown_s={k: round(v, 4) for k, v in parts.items()},
                exact=bool(np.array_equal(got, want_q)),
                max_abs_error_vs_float_sum=float(np.max(np.abs(got / key.params.scale - float_sum(n)))))


# ----------------------------------------------------------------------------- Flower SecAgg+
def run_flower(n: int, flwr_path: str) -> dict:
    sys.path.append(flwr_path)  # after the shared venv: its packages win where both exist
    import importlib

    import flwr

    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")  # the module, not the mod function
    from flwr.common import ConfigRecord, ndarrays_to_parameters
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_extract, get_parameters_shape, parameters_addition, parameters_mod, parameters_subtraction)
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.common import bytes_to_ndarray

    num_shares, threshold = 3, 2
    clipping_range, target_range, mod_range, max_weight = 8.0, 4194304, 4294967296, 1000.0
    nids = list(range(1, n + 1))
    share_num = n if num_shares >= n else num_shares
    half = share_num >> 1
    ring = list(nids)
    np.random.default_rng(0).shuffle(ring)
    neighbours = {nid: {ring[(idx + off) % n] for off in range(-half, half + 1)} for idx, nid in enumerate(ring)}
    states = {nid: mod.SecAggPlusState(nid=nid) for nid in nids}
    client_s = dict.fromkeys(nids, 0.0)
    up_bytes = dict.fromkeys(nids, 0)
    server_s = server_cpu_s = 0.0
    cfg = {Key.SAMPLE_NUMBER: n, Key.SHARE_NUMBER: share_num, Key.THRESHOLD: threshold,
           Key.CLIPPING_RANGE: clipping_range, Key.TARGET_RANGE: target_range, Key.MOD_RANGE: mod_range,
           Key.MAX_WEIGHT: max_weight}
    pks = {}
    for nid in nids:  # stage 0: setup, two key pairs each
        t0 = time.perf_counter()
        out = mod._setup(states[nid], ConfigRecord(dict(cfg)))
        client_s[nid] += time.perf_counter() - t0
        pks[nid] = (out[Key.PUBLIC_KEY_1], out[Key.PUBLIC_KEY_2])
        up_bytes[nid] += len(pks[nid][0]) + len(pks[nid][1])
    inbox: dict[int, list[tuple[int, bytes]]] = {nid: [] for nid in nids}
    for nid in nids:  # stage 1: share keys with the neighbourhood
        t0 = time.perf_counter()
        out = mod._share_keys(states[nid], ConfigRecord({str(k): list(pks[k]) for k in neighbours[nid]}))
        client_s[nid] += time.perf_counter() - t0
        for dst, ct in zip(out[Key.DESTINATION_LIST], out[Key.CIPHERTEXT_LIST]):
            inbox[dst].append((nid, ct))
            up_bytes[nid] += len(ct) + 8
    masked = None
    for i, nid in enumerate(nids):  # stage 2: masked, quantised vectors; the server sums mod 2^32
        params = ndarrays_to_parameters([delta(i)])
        t0 = time.perf_counter()
        out = mod._collect_masked_vectors(
            states[nid], ConfigRecord({Key.CIPHERTEXT_LIST: [c for _, c in inbox[nid]],
                                       Key.SOURCE_LIST: [s for s, _ in inbox[nid]]}), int(max_weight), params)
        client_s[nid] += time.perf_counter() - t0
        payload = out[Key.MASKED_PARAMETERS]
        up_bytes[nid] += sum(len(b) for b in payload)
        t0, c0 = time.perf_counter(), time.process_time()
        vec = [bytes_to_ndarray(b) for b in payload]
        masked = vec if masked is None else parameters_mod(parameters_addition(masked, vec), mod_range)
        server_s += time.perf_counter() - t0
        server_cpu_s += time.process_time() - c0
    shares: dict[int, list[bytes]] = {nid: [] for nid in nids}
    for nid in nids:  # stage 3: every node reveals its neighbours' self-seed shares (no dropouts)
        t0 = time.perf_counter()
        out = mod._unmask(states[nid], ConfigRecord({Key.ACTIVE_NODE_ID_LIST: sorted(neighbours[nid]),
                                                     Key.DEAD_NODE_ID_LIST: []}))
        client_s[nid] += time.perf_counter() - t0
        for owner, share in zip(out[Key.NODE_ID_LIST], out[Key.SHARE_LIST]):
            shares[owner].append(share)
            up_bytes[nid] += len(share) + 8
    t0, c0 = time.perf_counter(), time.process_time()
    for nid, share_list in shares.items():
        seed = combine_shares(share_list)
        masked = parameters_subtraction(masked, pseudo_rand_gen(seed, mod_range, get_parameters_shape(masked)))
    recon = parameters_mod(masked, mod_range)
    q_total_ratio, recon = factor_extract(recon)
    total = dequantize(recon, clipping_range, target_range)
    for vec in total:
        vec += -(n - 1) * clipping_range
        vec *= target_range / q_total_ratio
    server_s += time.perf_counter() - t0
    server_cpu_s += time.process_time() - c0
    # Flower divides by the total weight (a weighted mean); times n gives the sum to compare
    got = total[0].astype(np.float64) * n
    return dict(flwr_version=flwr.__version__, num_shares=share_num, reconstruction_threshold=threshold,
                client_s=list(client_s.values()), upload_bytes=list(up_bytes.values()), server_s=server_s,
                server_cpu_s=server_cpu_s,
                exact=False, max_abs_error_vs_float_sum=float(np.max(np.abs(got - float_sum(n)))))


# ----------------------------------------------------------------------------- CKKS (NVFlare's settings)
def run_ckks(n: int, real_max: int) -> dict:
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40])
    ctx.global_scale = 2**40
    slots = 8192 // 2
    public = ts.context_from(ctx.serialize(save_secret_key=False))  # the server holds no secret key
    client_s, up_bytes = [], []
    real: list[list[bytes]] = []
    server_s = server_cpu_s = 0.0
    total = None
    for i in range(n):
        if i < real_max:
            d = delta(i)
            t0 = time.perf_counter()
            chunks = [ts.ckks_vector(ctx, d[j:j + slots].tolist()).serialize() for j in range(0, NUM_VALUES, slots)]
            client_s.append(time.perf_counter() - t0)
            real.append(chunks)
        chunks = real[i % real_max]
        up_bytes.append(sum(len(c) for c in chunks))
        t0, c0 = time.perf_counter(), time.process_time()
        vecs = [ts.ckks_vector_from(public, c) for c in chunks]
        if total is None:
            total = vecs
        else:
            for a, b in zip(total, vecs):
                a += b
        server_s += time.perf_counter() - t0
        server_cpu_s += time.process_time() - c0
    t0 = time.perf_counter()
    got = np.concatenate([np.array(ts.ckks_vector_from(ctx, v.serialize()).decrypt()) for v in total])[:NUM_VALUES]
    decrypt_s = time.perf_counter() - t0
    return dict(poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40], global_scale_bits=40,
                ciphertexts_per_client=len(real[0]), real_clients=min(n, real_max),
                client_s=client_s, upload_bytes=up_bytes, server_s=server_s, server_cpu_s=server_cpu_s,
                decrypt_s=decrypt_s, exact=False,
                max_abs_error_vs_float_sum=float(np.max(np.abs(got - float_sum(n, reuse=real_max)))))


# ----------------------------------------------------------------------------- driver
def child(system: str, n: int, args) -> None:
    t0 = time.perf_counter()
    if system == "scfl":
        r = run_scfl(n)
    elif system == "flower_secaggplus":
        r = run_flower(n, args.flwr_path)
    else:
        r = run_ckks(n, args.ckks_real_max)
    r["end_to_end_s"] = time.perf_counter() - t0  # includes generating the test deltas and checking the sum
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(r), flush=True)


def summarise(system: str, n: int, r: dict) -> dict:
    return {"system": system, "n": n,
            "client_s_median": float(np.median(r["client_s"])),
            "upload_bytes_per_client": int(np.median(r["upload_bytes"])),
            "server_s_per_client": r["server_s"] / n, "server_s_total": r["server_s"],
            "server_cpu_s_per_client": r["server_cpu_s"] / n,
            "end_to_end_s": r["end_to_end_s"], "peak_rss_mb": r["peak_rss_mb"],
            "exact": r["exact"], "max_abs_error_vs_float_sum": r["max_abs_error_vs_float_sum"],
            **{k: v for k, v in r.items() if k not in ("client_s", "upload_bytes", "server_s", "server_cpu_s", "end_to_end_s",
                                                        "peak_rss_mb", "exact", "max_abs_error_vs_float_sum")}}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = sorted({r["system"] for r in rows})
    ns = sorted({r["n"] for r in rows})
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    for ax, key, label in zip(axes, ("client_s_median", "upload_bytes_per_client", "server_s_per_client",
                                     "server_cpu_s_per_client"),
                              ("client seconds", "upload bytes per client", "server seconds per client (wall)",
                               "server CPU seconds per client")):
        width = 0.8 / len(systems)
        for k, s in enumerate(systems):
            vals = [next((r[key] for r in rows if r["system"] == s and r["n"] == n), np.nan) for n in ns]
            ax.bar(np.arange(len(ns)) + k * width, vals, width, label=s)
        ax.set_xticks(np.arange(len(ns)) + width * (len(systems) - 1) / 2, [f"N={n}" for n in ns])
        ax.set_yscale("log")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("secure aggregation of 0.5M-value deltas (shared 2-core machine, under load)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10, 100])
    p.add_argument("--systems", nargs="+", default=["scfl", "flower_secaggplus", "ckks_nvflare"])
    p.add_argument("--flwr-path", default=os.environ.get("SCFL_FLWR_PATH", "/tmp/flwr-pkgs"),
                   help="directory with flwr installed by `pip install --target` (kept out of the shared venv)")
    p.add_argument("--ckks-real-max", type=int, default=10, help="CKKS clients that encrypt for real")
    p.add_argument("--timeout-s", type=float, default=1200, help="per system and N")
    p.add_argument("--child", nargs=2, metavar=("SYSTEM", "N"), help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "secagg_compare.json"))
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args)
        return 0
    rows, failures = [], []
    for n in args.n:
        for system in args.systems:
            load = os.getloadavg()[0]
            cmd = [sys.executable, __file__, "--child", system, str(n), "--flwr-path", args.flwr_path,
                   "--ckks-real-max", str(args.ckks_real_max)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
            except subprocess.TimeoutExpired:
                failures.append({"system": system, "n": n, "error": f"timeout after {args.timeout_s} s"})
                print(f"{system} N={n}: timeout", flush=True)
                continue
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                failures.append({"system": system, "n": n, "error": proc.stderr.strip().splitlines()[-1:]})
                print(f"{system} N={n}: failed: {proc.stderr[-800:]}", flush=True)
                continue
            row = summarise(system, n, json.loads(line[7:]))
            row["load_avg_1m_before"] = round(load, 2)
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    out = {"benchmark": "secure aggregation side by side, 0.5M-value deltas, same deltas for all systems",
           "machine": {"cpus": os.cpu_count()}, "note": (__doc__ or "").split("\n\n")[1].strip(),
           "results": rows, "failures": failures}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    if rows:
        plot(rows, Path(args.out).with_suffix(".png"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
