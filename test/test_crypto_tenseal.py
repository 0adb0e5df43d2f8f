"""TenSEAL BFV backend behind the same interface: exact sums, no secret on the cloud."""

from __future__ import annotations

import stat

import numpy as np
import pytest

from scfl_nodes.core.crypto import (
    CloudContext,
    EncryptedAggregate,
    EncryptedDelta,
    FleetSecretKey,
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
from scfl_nodes.core.crypto import noise, tenseal_backend

ts = pytest.importorskip("tenseal")
SCALE = 2**15


@pytest.fixture(scope="module")
def fleet() -> FleetSecretKey:
    return generate_fleet_keys("tenseal")


@pytest.fixture(scope="module")
def signer():
    return generate_signing_key()


def _encrypt(key, tensors, robot, signer, num_clients=10, clip=1.0):
    return encrypt_delta(
        key, tensors, skill_id="sweep", base_version=1, round_id=3, robot_id=robot, signing_key=signer,
        clip=clip, num_clients=num_clients,
    )


def test_parameters_are_bfv_4096_and_128_bit():
    params = get_params(None, "tenseal")
    assert params.n == 4096 and params.coeff_mod_bit_sizes == (50, 50)
    assert params.plain_modulus % (2 * 4096) == 1  # batching needs t = 1 mod 2N
    assert params.security_bits >= 128
    assert get_params("bfv-n4096-q80-t786433").plain_modulus == 786433
    assert get_params("bfv-n4096-q80-t26").max_clients(1.0) < 1023  # noise-limited with [40, 40]
    assert get_params("bfv-n4096-q100-t26").max_clients(1.0) == 1023  # t/2-limited with [50, 50]


TENSEAL_SETS = ["bfv-n4096-q100-t26", "bfv-n4096-q80-t26", "bfv-n4096-q80-t786433"]


def _measured_noise(params, vector) -> float:
    """Upper bound on |noise| of an encryption of ZERO, measured with the secret key.

    ``vector * c`` multiplies the ciphertext by the constant plaintext c, so its noise is
    exactly c * v (the message stays 0); it decrypts to zeros iff c |v| < q/(2t). The
    largest such c (binary search) pins |v| <= q/(2t) / c_max.
    """
    lo, hi = 1, params.plain_modulus // 2
    assert not any(vector.decrypt()), "c = 1 already fails"
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if any((vector * mid).decrypt()):
            hi = mid
        else:
            lo = mid
    return noise.seal_data_modulus(params) / (2 * params.plain_modulus) / lo


@pytest.mark.parametrize("params_id", TENSEAL_SETS)
def test_measured_noise_is_within_the_written_analysis(params_id):
    """Fresh and summed ciphertexts' real noise (measured with the secret key) stays inside the
    analytic 2^-40 bound and the absolute per-upload bound of crypto/noise.py."""
    params = get_params(params_id)
    ctx = tenseal_backend.new_context(params)
    zeros = [0] * params.slots
    fresh = [_measured_noise(params, ts.bfv_vector(ctx, zeros)) for _ in range(3)]
    assert all(0 < v <= noise.independent_noise_bound(params, 1) <= noise.seal_fresh_noise_bound(params) for v in fresh)
    total = ts.bfv_vector(ctx, zeros)
    for _ in range(15):
        total = total + ts.bfv_vector(ctx, zeros)
    assert _measured_noise(params, total) <= noise.independent_noise_bound(params, 16)


@pytest.mark.parametrize("params_id", TENSEAL_SETS)
def test_worst_case_budget_holds_for_perfectly_correlated_noise(params_id):
    """One ciphertext taken worst_case_noise_clients times (noise grows linearly, the worst
    case) decrypts exactly: guaranteed by the absolute bound, so never flaky."""
    params = get_params(params_id)
    ctx = tenseal_backend.new_context(params)
    values = np.random.default_rng(0).integers(-1, 2, params.slots)
    k = params.worst_case_noise_clients
    assert k >= 1
    got = np.asarray((ts.bfv_vector(ctx, values.tolist()) * k).decrypt())
    assert np.array_equal(got, values * k)


@pytest.mark.timeout(300)
def test_independent_budget_of_the_noise_limited_set():
    """bfv-n4096-q80-t26 is noise-limited: the sum of max_noise_clients independent fresh
    uploads (failure probability <= 2^-40 by the analysis) decrypts exactly."""
    params = get_params("bfv-n4096-q80-t26")
    assert params.max_clients(1.0) == params.max_noise_clients < params.max_abs_sum // SCALE
    ctx = tenseal_backend.new_context(params)
    rng = np.random.default_rng(2)
    total, expected = None, np.zeros(params.slots, np.int64)
    for _ in range(params.max_noise_clients):
        values = rng.integers(-1, 2, params.slots)
        vec = ts.bfv_vector(ctx, values.tolist())
        total = vec if total is None else total + vec
        expected += values
    assert np.array_equal(np.asarray(total.decrypt()), expected)


@pytest.mark.timeout(300)
def test_exact_sum_of_half_million_value_deltas(fleet, signer):
    rng = np.random.default_rng(0)
    deltas = [{"w": (rng.standard_t(3, size=(1000, 500)) * 0.05).astype(np.float32)} for _ in range(3)]
    ctx = CloudContext.from_bytes(fleet.cloud_context().to_bytes())
    agg = None
    for i, d in enumerate(deltas):
        received = EncryptedDelta.from_bytes(_encrypt(fleet, d, f"r{i}", signer).to_bytes())
        agg = ctx.verify_and_add(agg, received, signer.public_bytes(), round_id=3)
    agg = EncryptedAggregate.from_bytes(agg.to_bytes())
    expected = sum(quantize(d, 1.0, SCALE) for d in deltas)
    assert np.array_equal(fleet.decrypt_aggregate_quantized(agg), expected)
    assert fleet.decrypt_aggregate(agg)["w"].shape == (1000, 500)


@pytest.mark.timeout(300)
def test_exact_sum_of_many_max_magnitude_uploads(fleet, signer):
    """200 uploads of +-clip values: exact, far inside t/2 and the BFV noise budget."""
    rng = np.random.default_rng(1)
    ctx = fleet.cloud_context()
    agg, expected = None, np.zeros(4096, np.int64)
    for i in range(200):
        values = {"v": rng.choice([-1.0, 1.0], size=4096).astype(np.float32)}
        agg = ctx.add(agg, _encrypt(fleet, values, f"r{i}", signer, num_clients=1000))
        expected += quantize(values, 1.0, SCALE)
    assert np.array_equal(fleet.decrypt_aggregate_quantized(agg), expected)


def test_cloud_context_has_no_secret_key_and_cannot_decrypt(fleet, signer):
    ctx_bytes = fleet.cloud_context().to_bytes()
    ctx = CloudContext.from_bytes(ctx_bytes)
    seal_ctx = ctx._tenseal_context()
    assert not seal_ctx.has_secret_key()
    agg = ctx.add(None, _encrypt(fleet, {"v": np.full(10, 0.5, np.float32)}, "r0", signer))
    vector = agg._state[0]
    vector.link_context(seal_ctx)
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()
    assert not hasattr(ctx, "decrypt_aggregate")
    with pytest.raises(KeyFileError):
        FleetSecretKey.from_bytes(ctx_bytes)
    # the robot side decrypts the very same aggregate
    np.testing.assert_array_equal(fleet.decrypt_aggregate(agg)["v"], np.full(10, 0.5))


def test_a_context_with_secret_key_is_refused_as_cloud_context(fleet):
    secret_blob = tenseal_backend.serialize_context(fleet._secret, with_secret=True)
    with pytest.raises(KeyFileError, match="holds a secret key"):
        CloudContext(fleet.params, fleet.key_id, secret_blob)


def test_key_file_roundtrip_and_key_id_checks(fleet, signer, tmp_path):
    path = fleet.save(tmp_path / "fleet.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_fleet_key(path)
    assert loaded.key_id == fleet.key_id
    agg = fleet.cloud_context().add(None, _encrypt(fleet, {"v": np.full(3, 0.25, np.float32)}, "r0", signer))
    np.testing.assert_array_equal(loaded.decrypt_aggregate(agg)["v"], np.full(3, 0.25))
    other = generate_fleet_keys("tenseal")
    assert other.key_id != fleet.key_id
    with pytest.raises(KeyMismatchError):
        other.decrypt_aggregate(agg)
    with pytest.raises(KeyMismatchError):
        other.cloud_context().add(None, _encrypt(fleet, {"v": np.zeros(3, np.float32)}, "r1", signer))


def test_overflow_guard_with_the_small_plain_modulus(signer):
    key = generate_fleet_keys("tenseal", params_id="bfv-n4096-q80-t786433")
    assert key.max_clients(1.0) == 12  # (786433 - 1) // 2 // 32768
    with pytest.raises(OverflowRiskError, match="at most 12 clients"):
        _encrypt(key, {"v": np.zeros(4, np.float32)}, "r0", signer, num_clients=13)
    # the overflow the guard prevents: a 13th upload of 1.0 wraps around t = 786433
    ctx = key.cloud_context()
    agg = None
    for i in range(12):
        agg = ctx.add(agg, _encrypt(key, {"v": np.ones(4, np.float32)}, f"r{i}", signer, num_clients=12))
    np.testing.assert_array_equal(key.decrypt_aggregate(agg)["v"], np.full(4, 12.0))
    with pytest.raises(OverflowRiskError):
        ctx.add(agg, _encrypt(key, {"v": np.ones(4, np.float32)}, "r12", signer, num_clients=12))
    raw = key.encrypt_quantized(np.full(4, 32768, np.uint64), None, b"")
    vectors = tenseal_backend.load_vectors(ctx._tenseal_context(), tenseal_backend.unpack_chunks(raw))
    agg._state = tenseal_backend.add(agg._state, vectors)
    agg.header["count"] += 1
    wrong = key.decrypt_aggregate(agg)["v"]
    assert np.all(wrong < 0)  # 13.0 wrapped around t: the plaintext sum is lost
