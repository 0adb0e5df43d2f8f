"""Packed ring-LWE backend: exact sums, security/overflow guards, keys, known answers."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from scfl_nodes.core import crypto
from scfl_nodes.core.crypto import (
    CloudContext,
    EncryptedAggregate,
    EncryptedDelta,
    FleetSecretKey,
    InsecureParametersError,
    KeyFileError,
    KeyMismatchError,
    OverflowRiskError,
    encrypt_delta,
    generate_fleet_keys,
    generate_signing_key,
    get_params,
    load_fleet_key,
    quantize,
)
from scfl_nodes.core.crypto import kat, rlwe
from scfl_nodes.core.crypto.rng import RandomSource

DATA = Path(__file__).parent / "data"
SCALE = 2**15

# A 0.5M-parameter residual skill (obs 512 + action 7 -> 640 -> 256 -> 7).
SKILL_SHAPES = {
    "net.0.weight": (640, 519),
    "net.0.bias": (640,),
    "net.2.weight": (256, 640),
    "net.2.bias": (256,),
    "net.4.weight": (7, 256),
    "net.4.bias": (7,),
}


def random_delta(seed: int, scale: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # heavy-tailed so some values exceed the clip and clipping is exercised too
    return {k: (rng.standard_t(3, size=s) * scale).astype(np.float32) for k, s in SKILL_SHAPES.items()}


@pytest.fixture(scope="module")
def fleet_key() -> FleetSecretKey:
    return generate_fleet_keys("rlwe")


@pytest.fixture(scope="module")
def signer():
    return generate_signing_key()


def _encrypt(key, delta, robot, signer, round_id=1, clip=1.0, num_clients=100, **kw):
    return encrypt_delta(
        key,
        delta,
        skill_id="grasp",
        base_version=2,
        round_id=round_id,
        robot_id=robot,
        signing_key=signer,
        clip=clip,
        num_clients=num_clients,
        **kw,
    )


def test_skill_has_half_a_million_parameters():
    assert 490_000 < sum(int(np.prod(s)) for s in SKILL_SHAPES.values()) < 510_000


def test_fft_negacyclic_product_equals_schoolbook(fleet_key):
    """The float FFT path must be bit-exact; compare with Python big-integer arithmetic."""
    params = fleet_key.params
    a = rlwe.expand_a(os.urandom(16), 1, params)
    secret = fleet_key._secret
    fast = secret._mul.multiply(a)[0]
    slow = rlwe.negacyclic_multiply_reference(a[0], secret.s, 1 << 48)
    assert np.array_equal(fast, slow)


def test_ciphertext_satisfies_the_rlwe_equation(fleet_key, signer):
    """Independent of the decryptor: b - a*s (schoolbook) = (q/t) m + e with small e."""
    values = np.linspace(-0.9, 0.9, 2048).astype(np.float32)
    delta = _encrypt(fleet_key, {"v": values}, "r0", signer)
    a = rlwe.expand_a(bytes.fromhex(delta.nonce), 1, fleet_key.params)[0]
    b = rlwe.unpack_coeffs(delta.payload, 2048)
    a_s = rlwe.negacyclic_multiply_reference(a, fleet_key._secret.s, 1 << 48)
    m = np.mod(quantize({"v": values}, 1.0, SCALE), 1 << 32).astype(np.uint64)
    noise = ((b - a_s - (m << np.uint64(16))) & np.uint64((1 << 48) - 1)).astype(np.int64)
    noise[noise >= 1 << 47] -= 1 << 48
    assert np.abs(noise).max() <= 12 * 3.2 + 1
    assert 2.0 < noise.std() < 4.5  # sigma ~ 3.2, not zero (noise is really added)


def _exact_noise(key, a_sum, b_sum, m_sum) -> np.ndarray:
    """b - a*s - (q/t) m mod q, centered: the exact noise, computed with the secret key."""
    q_mask = np.uint64((1 << 48) - 1)
    m = np.mod(m_sum, 1 << 32).astype(np.uint64).reshape(b_sum.shape)
    e = ((b_sum - key._secret._mul.multiply(a_sum) - (m << np.uint64(16))) & q_mask).astype(np.int64)
    e[e >= 1 << 47] -= 1 << 48
    return e


def test_exact_noise_of_a_sum_is_within_the_written_analysis(fleet_key, signer):
    """The summed noise of N independent uploads, measured exactly with the secret key, is
    inside the 2^-40 Chernoff bound of crypto/noise.py (so never flaky); the guard's
    budgets follow from that analysis."""
    from scfl_nodes.core.crypto import noise

    params = fleet_key.params
    values, probs = noise.rlwe_noise_pmf(params.sigma)
    assert abs(probs.sum() - 1.0) < 1e-12 and values.max() == 39  # the sampler's exact pmf, cut at 12 sigma
    ctx = fleet_key.cloud_context()
    rng = np.random.default_rng(5)
    agg, m_sum = None, np.zeros(4096, np.int64)
    for i in range(64):
        v = {"v": rng.uniform(-1, 1, 4096).astype(np.float32)}
        agg = ctx.add(agg, _encrypt(fleet_key, v, f"r{i}", signer))
        m_sum += quantize(v, 1.0, SCALE)
        if i in (0, 63):
            e = _exact_noise(fleet_key, agg._state.a_sum(), agg._state.b_sum(), m_sum)
            assert 0 < np.abs(e).max() <= noise.independent_noise_bound(params, i + 1)
    assert params.max_noise_clients > 1_000_000 and params.worst_case_noise_clients == 840
    assert params.max_clients(1.0) == 65535  # t/2 limits the default set, not noise


def test_worst_case_budget_holds_for_perfectly_correlated_noise(fleet_key, signer):
    """One ciphertext added to itself 840 times (noise grows linearly: the worst case)
    decrypts exactly, as the absolute bound 840 x 39 < 2^15 guarantees."""
    k = fleet_key.params.worst_case_noise_clients
    values = {"v": np.random.default_rng(6).uniform(-0.001, 0.001, 2048).astype(np.float32)}
    delta = _encrypt(fleet_key, values, "r0", signer)
    a = rlwe.expand_a(bytes.fromhex(delta.nonce), 1, fleet_key.params)
    b = rlwe.unpack_coeffs(delta.payload, 2048).reshape(1, -1)
    q_mask = np.uint64((1 << 48) - 1)
    a_k, b_k = (a * np.uint64(k)) & q_mask, (b * np.uint64(k)) & q_mask
    e = _exact_noise(fleet_key, a_k, b_k, quantize(values, 1.0, SCALE) * k)
    assert np.abs(e).max() <= k * 39 < 2**15
    assert np.array_equal(fleet_key._secret.decrypt(a_k, b_k, 2048), quantize(values, 1.0, SCALE) * k)


def test_gaussian_and_ternary_samplers_have_the_right_distribution():
    rng = RandomSource()
    e = rng.gaussian(200_000, 3.2)
    assert abs(e.mean()) < 0.05 and abs(e.std() - 3.2) < 0.05
    s = rng.ternary(30_000)
    counts = np.bincount(s + 1, minlength=3) / s.size
    assert np.all(np.abs(counts - 1 / 3) < 0.02)
    # seeded sources are reproducible, OS-seeded ones are not
    assert np.array_equal(RandomSource(b"x").gaussian(50, 3.2), RandomSource(b"x").gaussian(50, 3.2))
    assert RandomSource().bytes(32) != RandomSource().bytes(32)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("num_robots", [2, 10, 100])
def test_decrypted_sum_equals_sum_of_quantized_deltas(fleet_key, signer, num_robots):
    """Dec(sum Enc(delta_i)) == sum quantize(delta_i) exactly, 0.5M-param skill.

    100 robots: 8 distinct random deltas reused cyclically, but every upload is a real,
    fresh encryption (own seed and noise) that goes through bytes and signature checks.
    """
    distinct = [random_delta(seed) for seed in range(min(num_robots, 8))]
    quantized = [quantize(d, 1.0, SCALE) for d in distinct]
    ctx = CloudContext.from_bytes(fleet_key.cloud_context().to_bytes())
    agg, expected = None, np.zeros_like(quantized[0])
    for i in range(num_robots):
        delta = _encrypt(fleet_key, distinct[i % len(distinct)], f"robot-{i}", signer, num_clients=num_robots)
        received = EncryptedDelta.from_bytes(delta.to_bytes())
        agg = ctx.verify_and_add(agg, received, signer.public_bytes(), round_id=1)
        expected += quantized[i % len(distinct)]
    agg = EncryptedAggregate.from_bytes(agg.to_bytes())
    assert agg.count == num_robots
    total = fleet_key.decrypt_aggregate_quantized(agg)
    assert np.array_equal(total, expected)
    sums = fleet_key.decrypt_aggregate(agg)
    assert set(sums) == set(SKILL_SHAPES)
    assert sums["net.0.weight"].shape == SKILL_SHAPES["net.0.weight"]
    # values are laid out in canonical (sorted-name) order: net.0.bias, net.0.weight, net.2.bias, net.2.weight, ...
    offset = 640 + 640 * 519 + 256
    np.testing.assert_array_equal(sums["net.2.weight"].reshape(-1) * SCALE, expected[offset:][: 256 * 640])


@pytest.mark.timeout(300)
def test_a_thousand_max_magnitude_uploads_still_decrypt_exactly(fleet_key, signer):
    """Noise of 1000 ciphertexts stays far below q/2t; values at +-clip sum without wrapping."""
    rng = np.random.default_rng(1)
    ctx = fleet_key.cloud_context()
    agg, expected = None, np.zeros(2048, dtype=np.int64)
    for i in range(1000):
        values = rng.choice([-1.0, 1.0], size=2048).astype(np.float32) * 1.0
        delta = _encrypt(fleet_key, {"v": values}, f"r{i}", signer, num_clients=1000)
        agg = ctx.add(agg, delta)
        expected += quantize({"v": values}, 1.0, SCALE)
    assert np.abs(expected).max() > 40 * SCALE  # the sum really is large
    assert np.array_equal(fleet_key.decrypt_aggregate_quantized(agg), expected)


def test_security_table_and_refusal_of_the_papers_parameters():
    assert crypto.estimate_security_bits(1024, 27) == pytest.approx(128)
    assert crypto.estimate_security_bits(2048, 54) == pytest.approx(128)
    assert 105 <= crypto.estimate_security_bits(1024, 32) <= 112  # the paper's n=1024, q=2^32
    assert crypto.estimate_security_bits(2048, 48) > 128
    with pytest.raises(InsecureParametersError, match=r"~108-bit.*log2\(q\) <= 27 at n=1024"):
        generate_fleet_keys("rlwe", params_id="rlwe-n1024-q32-t16-paper")
    key = generate_fleet_keys("rlwe", params_id="rlwe-n1024-q32-t16-paper", insecure_for_testing=True)
    # the flag does not travel silently: loading the insecure key/context needs it again
    with pytest.raises(InsecureParametersError):
        FleetSecretKey.from_bytes(key.to_bytes())
    with pytest.raises(InsecureParametersError):
        CloudContext.from_bytes(key.cloud_context().to_bytes())
    assert CloudContext.from_bytes(key.cloud_context().to_bytes(), insecure_for_testing=True).key_id == key.key_id
    for params in crypto.PARAM_SETS.values():
        if "insecure" not in params.params_id and "paper" not in params.params_id:
            assert params.security_bits >= 128, params.params_id


def test_overflow_guard_fires_before_a_real_overflow(signer):
    """With the paper's t=2^16 two robots at 0.75 wrap around; the guard refuses first."""
    key = generate_fleet_keys("rlwe", params_id="rlwe-n1024-q32-t16-paper", insecure_for_testing=True)
    values = {"v": np.full(16, 0.75, dtype=np.float32)}
    with pytest.raises(OverflowRiskError, match=r"2 clients x clip 0.75 x scale 2\^15 = 49152 exceeds t/2 = 32767"):
        _encrypt(key, values, "r0", signer, clip=0.75, num_clients=2)
    # what the guard prevents: the same two uploads without it decrypt to a wrong sum
    ctx = key.cloud_context()
    agg = None
    for robot in ("r0", "r1"):
        delta = _encrypt(key, values, robot, signer, clip=0.75, num_clients=1)  # each robot alone is fine
        if agg is None:
            agg = ctx.add(None, delta)
        else:
            # the cloud tracks the cumulative bound and refuses the second upload ...
            with pytest.raises(OverflowRiskError, match="worst-case sum 49152 exceed"):
                ctx.add(agg, delta)
            # ... which would really have overflowed: add it behind the guard's back
            agg._state.add_ciphertext(bytes.fromhex(delta.nonce), delta.payload)
            agg.header["count"] += 1
    wrong = key.decrypt_aggregate(agg)["v"]
    assert np.allclose(wrong, -0.5)  # 1.5 wrapped around t: the plaintext sum is lost
    # default parameters: 65535 robots at clip 1.0 fit, 65536 do not
    default = get_params(None, "rlwe")
    assert default.max_clients(1.0) == 65535
    crypto.check_overflow(default, 1.0, 65535)
    with pytest.raises(OverflowRiskError, match="at most 65535 clients"):
        crypto.check_overflow(default, 1.0, 65536)


def test_cloud_context_cannot_decrypt(fleet_key, signer, tmp_path):
    ctx_bytes = fleet_key.cloud_context().to_bytes()
    assert fleet_key._secret.to_bytes() not in ctx_bytes  # no secret material at all
    ctx = CloudContext.from_bytes(ctx_bytes)
    assert not hasattr(ctx, "decrypt_aggregate") and not hasattr(ctx, "_secret")
    with pytest.raises(KeyFileError, match="not a valid fleet secret key"):
        FleetSecretKey.from_bytes(ctx_bytes)
    ctx.save(tmp_path / "cloud.ctx")
    with pytest.raises(KeyFileError):
        load_fleet_key(tmp_path / "cloud.ctx")
    # another fleet's key cannot decrypt this fleet's aggregate
    agg = ctx.add(None, _encrypt(fleet_key, {"v": np.ones(4, np.float32) * 0.5}, "r0", signer))
    with pytest.raises(KeyMismatchError):
        generate_fleet_keys("rlwe").decrypt_aggregate(agg)


def test_key_files_are_0600_roundtrip_and_never_overwritten(fleet_key, signer, tmp_path):
    path = fleet_key.save(tmp_path / "keys" / "fleet.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_fleet_key(path)
    assert loaded.key_id == fleet_key.key_id and loaded.params_id == fleet_key.params_id
    assert FleetSecretKey.load(path).key_id == fleet_key.key_id
    delta = _encrypt(fleet_key, {"v": np.full(5, 0.25, np.float32)}, "r0", signer)
    agg = loaded.cloud_context().add(None, delta)
    np.testing.assert_array_equal(loaded.decrypt_aggregate(agg)["v"], np.full(5, 0.25))
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        fleet_key.save(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_fleet_key(path)
    sk_path = signer.save(tmp_path / "robot.key")
    assert stat.S_IMODE(sk_path.stat().st_mode) == 0o600
    assert crypto.load_signing_key(sk_path).public_bytes() == signer.public_bytes()
    assert crypto.RobotSigningKey.load(sk_path).public_bytes() == signer.public_bytes()
    # a key file whose key id does not match its material is refused
    blob = bytearray(fleet_key.to_bytes())
    forged = blob.replace(fleet_key.key_id.encode(), b"0" * 16)
    with pytest.raises(KeyFileError):
        FleetSecretKey.from_bytes(bytes(forged))  # digest no longer matches


def test_known_answer_vectors():
    """Seeded key generation + encryption reproduce the checked-in vectors bit for bit."""
    expected = json.loads((DATA / "rlwe_kat.json").read_text())
    got = kat.build_kat()
    assert got["secret_sha256"] == expected["secret_sha256"]
    assert got["key_id"] == expected["key_id"]
    for g, e in zip(got["ciphertexts"], expected["ciphertexts"], strict=True):
        assert g["nonce"] == e["nonce"]
        assert g["b_first16"] == e["b_first16"]
        assert g["payload_sha256"] == e["payload_sha256"]
        assert g["signature"] == e["signature"]
        assert g["blob_sha256"] == e["blob_sha256"]
    assert got["sum_quantized_first8"] == expected["sum_quantized_first8"]
    assert got["sum_quantized_sha256"] == expected["sum_quantized_sha256"]
    assert got == expected
    # and the expected sum is the plain quantized sum (independent of the ciphertexts)
    plain = sum(quantize(kat.kat_tensors(i), kat.CLIP, SCALE) for i in range(2))
    assert hashlib.sha256(plain.astype("<i8").tobytes()).hexdigest() == expected["sum_quantized_sha256"]


def test_upload_size_is_six_bytes_per_value(fleet_key, signer):
    delta = _encrypt(fleet_key, random_delta(0), "r0", signer)
    n_values = sum(int(np.prod(s)) for s in SKILL_SHAPES.values())
    blob = delta.to_bytes()
    assert len(delta.payload) == rlwe.num_polys(n_values, fleet_key.params) * 2048 * 6
    assert len(blob) <= 3.1e6


def test_invalid_plaintexts_are_refused(fleet_key, signer):
    with pytest.raises(crypto.InvalidDeltaError, match="NaN"):
        _encrypt(fleet_key, {"v": np.array([0.1, np.nan], np.float32)}, "r0", signer)
    with pytest.raises(crypto.InvalidDeltaError):
        _encrypt(fleet_key, {}, "r0", signer)
    with pytest.raises(OverflowRiskError):
        _encrypt(fleet_key, {"v": np.zeros(3, np.float32)}, "r0", signer, clip=-1.0)


def test_keys_cli_writes_0600_files_and_refuses_to_overwrite(tmp_path, capsys):
    from scfl_nodes.cli import main

    assert main(["keys", "fleet", "--backend", "rlwe", "--out", str(tmp_path / "fleet")]) == 0
    key = load_fleet_key(tmp_path / "fleet" / "fleet.key")
    ctx = crypto.load_cloud_context(tmp_path / "fleet" / "cloud.ctx")
    assert key.key_id == ctx.key_id
    for name in ("fleet.key", "cloud.ctx"):
        assert stat.S_IMODE((tmp_path / "fleet" / name).stat().st_mode) == 0o600
    before = (tmp_path / "fleet" / "fleet.key").read_bytes()
    assert main(["keys", "fleet", "--out", str(tmp_path / "fleet")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "fleet" / "fleet.key").read_bytes() == before
    assert main(["keys", "fleet", "--params", "rlwe-n1024-q32-t16-paper", "--out", str(tmp_path / "weak")]) == 2
    assert "108-bit" in capsys.readouterr().err
    assert main(["keys", "robot", "--out", str(tmp_path / "robot")]) == 0
    signer = crypto.load_signing_key(tmp_path / "robot" / "robot.key")
    assert (tmp_path / "robot" / "robot.pub").read_bytes() == signer.public_bytes()
    assert stat.S_IMODE((tmp_path / "robot" / "robot.key").stat().st_mode) == 0o600
    assert main(["keys", "show", str(tmp_path / "fleet" / "cloud.ctx")]) == 0
    assert key.key_id in capsys.readouterr().out
    assert main(["keys", "params"]) == 0
    out = capsys.readouterr().out
    assert "rlwe-n1024-q32-t16-paper" in out and "refused" in out and "65535" in out


def test_running_sum_with_a_store_load_cycle_decrypts_exactly(fleet_key, signer):
    """The cloud's lazily reduced running sum, stored and reloaded mid-round, decrypts exactly."""
    ctx = fleet_key.cloud_context()
    agg, expected = None, np.zeros(100, np.int64)
    rng = np.random.default_rng(5)
    for i in range(10):
        values = {"v": rng.uniform(-1, 1, 100).astype(np.float32)}
        agg = ctx.add(agg, _encrypt(fleet_key, values, f"r{i}", signer))
        expected += quantize(values, 1.0, SCALE)
        if i == 4:  # a store/load cycle in the middle
            agg = EncryptedAggregate.from_bytes(agg.to_bytes())
    assert np.array_equal(fleet_key.decrypt_aggregate_quantized(agg), expected)
