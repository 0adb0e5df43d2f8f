"""Ciphertext format 2: the AES-128-CTR expansion of ``a`` against known answers, and the
compatibility rules (format-1 deltas stay readable and summable; unknown versions are
refused with a clear message)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from scfl_nodes.core.crypto import (
    EncryptedDelta,
    WrongParametersError,
    encrypt_delta,
    generate_fleet_keys,
    get_params,
    quantize,
)
from scfl_nodes.core.crypto import kat, rlwe
from scfl_nodes.core.crypto.signing import RobotSigningKey

DATA = Path(__file__).parent / "data"
PARAMS = get_params(None, "rlwe")

# NIST SP 800-38A, Appendix F.5.1 (CTR-AES128.Encrypt): key, initial counter block,
# plaintext and ciphertext of four blocks. Keystream = ciphertext XOR plaintext.
SP800_38A_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SP800_38A_COUNTER = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
SP800_38A_PLAINTEXT = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710")
SP800_38A_CIPHERTEXT = bytes.fromhex(
    "874d6191b620e3261bef6864990db6ce" "9806f66b7970fdff8617187bb9fffdff"
    "5ae4df3edbd5d35e5b4f09020db03eab" "1e031dda2fbe03d1792170a0f3009cee")
SP800_38A_BLOCK1_OUTPUT = bytes.fromhex("ec8cdf7398607cb0f2d21675ea9ea1e4")  # E_K(T_1), listed in F.5.1


def _xor(x: bytes, y: bytes) -> bytes:
    return bytes(i ^ j for i, j in zip(x, y, strict=True))


@pytest.mark.parametrize("reuse_buffer", [False, True])
def test_keystream_matches_nist_sp800_38a_ctr_aes128(reuse_buffer):
    """The expansion's keystream function on the standard's own vector (4 blocks, the
    counter carrying across byte boundaries: ...feff -> ...ff00 -> ...ff01 -> ...ff02)."""
    out = bytearray(64 + 15) if reuse_buffer else None
    stream = bytes(rlwe.aes_ctr_keystream(SP800_38A_KEY, SP800_38A_COUNTER, 64, out))[:64]
    assert stream[:16] == SP800_38A_BLOCK1_OUTPUT
    assert stream == _xor(SP800_38A_PLAINTEXT, SP800_38A_CIPHERTEXT)


def test_aes_expansion_equals_blockwise_aes_of_the_counter_blocks():
    """Independently of CTR mode: coefficient 2j and 2j+1 are the low 48 bits of the two
    little-endian halves of AES-128_seed(tag || be64(j))."""
    seed = bytes(range(16, 32))
    ecb = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    n_blocks = 3 * PARAMS.n // 2
    blocks = ecb.update(b"".join(b"scfl-a/2" + struct.pack(">Q", j) for j in range(n_blocks)))
    want = np.frombuffer(blocks, dtype="<u8").astype(np.uint64) & np.uint64((1 << 48) - 1)
    got = rlwe.expand_a(seed, 3, PARAMS)
    assert got.shape == (3, PARAMS.n)
    assert np.array_equal(got.reshape(-1), want)


def test_fixed_seed_gives_the_known_first_coefficients():
    """Known answer: seed 00 01 .. 0f -> the first coefficients of ``a`` (computed once from
    AES-128 of the counter blocks, cross-checked by the test above) and the whole-polynomial
    digest; the same numbers are in test/data/rlwe_kat.json."""
    a = rlwe.expand_a(bytes(range(16)), 1, PARAMS)[0]
    assert [int(x) for x in a[:8]] == [122997383050446, 206596209202389, 246310218830834, 278560084851214,
                                       185667438771920, 142086454306512, 76027337132868, 42227652600069]
    vectors = json.loads((DATA / "rlwe_kat.json").read_text())["a_expansion"]
    assert vectors["name"] == "AES-128-CTR" and vectors["seed"] == bytes(range(16)).hex()
    assert [int(x) for x in a[:8]] == vectors["first8"] and int(a[-1]) == vectors["last"]
    assert hashlib.sha256(a.astype("<u8").tobytes()).hexdigest() == vectors["sha256"]
    assert int(a.max()) < 1 << 48
    assert 0.45 < float(np.mean(a >= 1 << 47)) < 0.55  # the top bit is used (no truncation to fewer bits)


def test_new_deltas_are_format_2():
    key = generate_fleet_keys("rlwe", params_id="rlwe-n1024-q48-t32-insecure", insecure_for_testing=True)
    signer = RobotSigningKey(Ed25519PrivateKey.generate())
    delta = encrypt_delta(key, {"v": np.zeros(4, np.float32)}, skill_id="s", base_version=0, round_id=1,
                          robot_id="r", signing_key=signer, clip=1.0, num_clients=2)
    blob = delta.to_bytes()
    assert delta.header["version"] == 2 and blob[8:10] == b"\x02\x00"
    assert EncryptedDelta.from_bytes(blob).header["version"] == 2


def _kat_signer() -> RobotSigningKey:
    return RobotSigningKey(Ed25519PrivateKey.from_private_bytes(kat.SIGNING_KEY_BYTES))


def test_format_1_deltas_of_the_previous_build_stay_readable_and_summable():
    """The two KAT deltas written by the format-1 (SHAKE-128) build, byte for byte: they
    parse, their signatures verify, they fold together with a format-2 delta of the same
    key, and the sum decrypts exactly."""
    v1_kat = json.loads((DATA / "rlwe_v1" / "kat.json").read_text())
    key = generate_fleet_keys("rlwe", rng_seed_for_testing=kat.KEY_SEED)
    assert key.key_id == v1_kat["key_id"]
    ctx, signer = key.cloud_context(), _kat_signer()
    agg = None
    for i, vector in enumerate(v1_kat["ciphertexts"]):
        blob = (DATA / "rlwe_v1" / f"kat-delta-{i}.scfl").read_bytes()
        assert hashlib.sha256(blob).hexdigest() == vector["blob_sha256"]  # really the old build's bytes
        assert blob[8:10] == b"\x01\x00"
        delta = EncryptedDelta.from_bytes(blob)
        assert delta.header["version"] == 1
        agg = ctx.verify_and_add(agg, delta, signer.public_bytes())
    assert key.decrypt_aggregate_quantized(agg)[:8].tolist() == v1_kat["sum_quantized_first8"]
    extra = {"layer.bias": np.full(4, 0.25, np.float32), "layer.weight": np.full((60, 50), -0.5, np.float32)}
    new = encrypt_delta(key, extra, skill_id="kat-skill", base_version=3, round_id=7, robot_id="kat-robot-2",
                        signing_key=signer, clip=kat.CLIP, num_clients=4)
    agg = ctx.verify_and_add(agg, new, signer.public_bytes())
    want = sum(quantize(kat.kat_tensors(i), kat.CLIP, key.params.scale) for i in range(2))
    want = want + quantize(extra, kat.CLIP, key.params.scale)
    assert np.array_equal(key.decrypt_aggregate_quantized(agg), want)


@pytest.mark.parametrize("version", [0, 3, 0xFFFF])
def test_unknown_delta_format_versions_are_refused_with_a_clear_message(version):
    blob = bytearray((DATA / "rlwe_v1" / "kat-delta-0.scfl").read_bytes())
    blob[8:10] = struct.pack("<H", version)
    with pytest.raises(WrongParametersError, match=rf"unsupported format version {version} \(this build reads 1, 2\)"):
        EncryptedDelta.from_bytes(bytes(blob))


def test_header_version_must_match_the_container_version():
    """A format-1 header inside a format-2 container (or the reverse) would pick the wrong
    expansion of ``a``: refused (it also breaks the digest, so build a consistent one)."""
    from scfl_nodes.core.crypto.wire import MAGIC_DELTA, pack

    delta = EncryptedDelta.from_bytes((DATA / "rlwe_v1" / "kat-delta-0.scfl").read_bytes())
    header = dict(delta.header, version=2)
    prefix, digest = pack(MAGIC_DELTA, header, delta.payload)  # container version 2, header says 2: fine
    EncryptedDelta.from_bytes(prefix + digest + delta.signature)
    prefix = bytearray(prefix)
    prefix[8:10] = b"\x01\x00"  # container says 1, header says 2
    digest = hashlib.sha256(bytes(prefix)).digest()
    with pytest.raises(WrongParametersError, match="header version 2 is not 1"):
        EncryptedDelta.from_bytes(bytes(prefix) + digest + delta.signature)
