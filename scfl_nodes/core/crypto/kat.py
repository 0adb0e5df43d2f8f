"""Known-answer vectors for the RLWE scheme (seeded; testing only).

``python -m scfl_nodes.core.crypto.kat --write test/data/rlwe_kat.json`` wrote the
checked-in vectors once; test_crypto_rlwe.py recomputes them and compares, so any
change in sampling, encoding, packing, the wire format or signing is caught. If a
change is intended, bump the wire format version and regenerate deliberately.

Format 2 (AES-128-CTR expansion of ``a``) vectors: test/data/rlwe_kat.json. The format 1
(SHAKE-128) vectors and the two KAT deltas the format-1 build wrote are kept in
test/data/rlwe_v1/ to test that format 1 stays readable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import rlwe
from .keys import encrypt_delta, generate_fleet_keys, quantize
from .signing import RobotSigningKey

KEY_SEED = b"scfl known-answer fleet key seed"
ENC_SEEDS = (b"scfl kat encryption 1", b"scfl kat encryption 2")
A_SEED = bytes(range(16))  # the seed of the expansion vector
SIGNING_KEY_BYTES = bytes(range(32))
CLIP = 1.0


def kat_tensors(i: int) -> dict[str, np.ndarray]:
    """Small deterministic delta with values beyond the clip (so clipping is covered too)."""
    w = np.linspace(-1.25, 1.25, 3000, dtype=np.float64).reshape(60, 50) * (1 if i == 0 else -0.5)
    b = np.array([0.5, -0.25, 1e-5, 3.0517578125e-05 * (i + 1)], dtype=np.float32)
    return {"layer.bias": b, "layer.weight": w.astype(np.float32)}  # canonical (sorted) tensor order


def build_kat() -> dict:
    key = generate_fleet_keys("rlwe", rng_seed_for_testing=KEY_SEED)
    signer = RobotSigningKey(Ed25519PrivateKey.from_private_bytes(SIGNING_KEY_BYTES))
    ctx = key.cloud_context()
    vectors, agg = [], None
    for i, seed in enumerate(ENC_SEEDS):
        delta = encrypt_delta(
            key,
            kat_tensors(i),
            skill_id="kat-skill",
            base_version=3,
            round_id=7,
            robot_id=f"kat-robot-{i}",
            signing_key=signer,
            clip=CLIP,
            num_clients=4,
            rng_seed_for_testing=seed,
        )
        blob = delta.to_bytes()
        b = rlwe.unpack_coeffs(delta.payload, len(delta.payload) // 6)
        vectors.append(
            {
                "enc_seed": seed.hex(),
                "nonce": delta.nonce,
                "b_first16": [int(x) for x in b[:16]],
                "payload_sha256": hashlib.sha256(delta.payload).hexdigest(),
                "blob_sha256": hashlib.sha256(blob).hexdigest(),
                "blob_len": len(blob),
                "signature": delta.signature.hex(),
            }
        )
        agg = ctx.add(agg, delta)
    total = key.decrypt_aggregate_quantized(agg)
    expected = sum(quantize(kat_tensors(i), CLIP, key.params.scale) for i in range(len(ENC_SEEDS)))
    assert np.array_equal(total, expected), "decryption of the KAT aggregate is not exact"
    a = rlwe.expand_a(A_SEED, 1, key.params)[0]
    return {
        "format_version": rlwe.WRITE_EXPANSION.format_version,
        "a_expansion": {
            "name": rlwe.WRITE_EXPANSION.name,
            "seed": A_SEED.hex(),
            "first8": [int(x) for x in a[:8]],
            "last": int(a[-1]),
            "sha256": hashlib.sha256(a.astype("<u8").tobytes()).hexdigest(),
        },
        "params_id": key.params_id,
        "key_seed": KEY_SEED.hex(),
        "signing_key": SIGNING_KEY_BYTES.hex(),
        "secret_sha256": hashlib.sha256(key._secret.to_bytes()).hexdigest(),
        "key_id": key.key_id,
        "clip": CLIP,
        "ciphertexts": vectors,
        "sum_quantized_first8": [int(x) for x in total[:8]],
        "sum_quantized_sha256": hashlib.sha256(total.astype("<i8").tobytes()).hexdigest(),
        "aggregate_sha256": hashlib.sha256(agg.to_bytes()).hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", help="write the vectors to this JSON file (refuses to overwrite)")
    args = parser.parse_args(argv)
    kat = build_kat()
    text = json.dumps(kat, indent=1, sort_keys=True) + "\n"
    if args.write:
        path = Path(args.write)
        if path.exists():
            print(f"{path} exists; delete it first if you really mean to change the vectors", file=sys.stderr)
            return 2
        path.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
