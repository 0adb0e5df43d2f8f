"""The cloud's vectorised fold (rlwe.RlweSum: raw uint64 sums, reduced mod q only when
read) equals the reference fold (expand ``a``, unpack ``b``, add mod q after every
ciphertext) bit for bit, on random ciphertexts and on adversarial ones (every coefficient
2^48 - 1), for both delta formats' expansions of ``a``, across wrap-around of the uint64
accumulators and across a store/load of the running sum."""

from __future__ import annotations

import os

import numpy as np
import pytest

from scfl_nodes.core.crypto import get_params, rlwe

PARAMS = get_params(None, "rlwe")
Q_MASK = np.uint64((1 << int(PARAMS.log_q)) - 1)
MAX_COEFF = (1 << int(PARAMS.log_q)) - 1
EXPANSIONS = sorted(rlwe.A_EXPANSIONS.values(), key=lambda e: e.format_version)


def reference_fold(ciphertexts, num_polys: int, expansion) -> tuple[np.ndarray, np.ndarray]:
    """Textbook running sum: full 48-bit coefficients, reduced mod q after every add."""
    count = num_polys * PARAMS.n
    a_sum = np.zeros(count, dtype=np.uint64)
    b_sum = np.zeros(count, dtype=np.uint64)
    for seed, payload in ciphertexts:
        a = rlwe.expand_a(seed, num_polys, PARAMS, expansion).reshape(-1)
        assert int(a.max()) <= MAX_COEFF
        a_sum = rlwe.add_mod_q(a_sum, a, int(PARAMS.log_q))
        b_sum = rlwe.add_mod_q(b_sum, rlwe.unpack_coeffs(payload, count), int(PARAMS.log_q))
    return a_sum, b_sum


def _random_ciphertexts(rng: np.random.Generator, how_many: int, num_polys: int) -> list[tuple[bytes, bytes]]:
    count = num_polys * PARAMS.n
    out = []
    for _ in range(how_many):
        b = rng.integers(0, MAX_COEFF, size=count, dtype=np.uint64, endpoint=True)
        out.append((os.urandom(16), rlwe.pack_coeffs(b)))
    return out


def _maximal_ciphertexts(how_many: int, num_polys: int) -> list[tuple[bytes, bytes]]:
    payload = rlwe.pack_coeffs(np.full(num_polys * PARAMS.n, MAX_COEFF, dtype=np.uint64))
    assert set(payload) == {0xFF}  # every byte, hence every word of b, is maximal
    return [(os.urandom(16), payload) for _ in range(how_many)]


def _fold(ciphertexts, num_polys: int, expansion, reload_every: int = 0) -> rlwe.RlweSum:
    acc = rlwe.RlweSum(PARAMS, num_polys)
    for i, (seed, payload) in enumerate(ciphertexts, 1):
        acc.add_ciphertext(seed, payload, expansion)
        if reload_every and i % reload_every == 0:  # the worker's checkpoint: serialise, reload
            raw = acc.to_bytes()
            count = num_polys * PARAMS.n
            acc = rlwe.RlweSum.from_sums(PARAMS, rlwe.unpack_coeffs(raw[: 6 * count], count),
                                         rlwe.unpack_coeffs(raw[6 * count:], count))
    return acc


@pytest.mark.parametrize("expansion", EXPANSIONS, ids=lambda e: e.name)
@pytest.mark.parametrize("reload_every", [0, 3])
def test_vectorised_fold_equals_reference_on_random_ciphertexts(reload_every, expansion):
    rng = np.random.default_rng(1)
    cts = _random_ciphertexts(rng, 12, num_polys=3)
    acc = _fold(cts, 3, expansion, reload_every)
    a_ref, b_ref = reference_fold(cts, 3, expansion)
    assert np.array_equal(acc.a_sum().reshape(-1), a_ref)
    assert np.array_equal(acc.b_sum().reshape(-1), b_ref)
    assert acc.to_bytes() == rlwe.pack_coeffs(a_ref) + rlwe.pack_coeffs(b_ref)  # same bytes on the wire


@pytest.mark.parametrize("expansion", EXPANSIONS, ids=lambda e: e.name)
def test_vectorised_fold_equals_reference_on_maximal_ciphertexts(expansion):
    cts = _maximal_ciphertexts(9, num_polys=2)
    acc = _fold(cts, 2, expansion)
    a_ref, b_ref = reference_fold(cts, 2, expansion)
    assert np.array_equal(acc.b_sum().reshape(-1), b_ref)
    assert np.array_equal(acc.a_sum().reshape(-1), a_ref)
    assert int(b_ref[0]) == (9 * MAX_COEFF) % (MAX_COEFF + 1)  # the reference is not vacuous


def test_raw_aes_words_use_all_64_bits_so_the_a_accumulator_wraps():
    """The fold adds unmasked 64-bit keystream words: the uint64 sum of ``a`` wraps past
    2^64 after a few uploads, and only its residue mod q (which equals the reference)
    matters. Guard that this path is really taken, not a masked one."""
    words = rlwe.WRITE_EXPANSION.words(os.urandom(16), PARAMS.n)
    assert int(words.max()) > MAX_COEFF  # bits above 48 are present in the raw words
    acc = _fold(_random_ciphertexts(np.random.default_rng(2), 3, 1), 1, rlwe.WRITE_EXPANSION)
    assert int(acc._a.max()) > MAX_COEFF  # unreduced inside, reduced when read
    assert int(acc.a_sum().max()) <= MAX_COEFF


def test_accumulators_wrapping_past_2_64_still_give_the_sum_mod_q():
    """Lazy reduction never flushes: the accumulators are primed just below their wrap (2^64,
    and 2^16 for the high words of b), as after very many maximal uploads, and maximal
    ciphertexts push them across; the sum mod q must still equal the primed value plus the
    reference sum (q divides 2^64; only the high words' sum mod 2^16 reaches below 2^48)."""
    num_polys = 1
    acc = rlwe.RlweSum(PARAMS, num_polys)
    primed, primed_high = 2**64 - 3, 0xFFFD  # the uint64 / uint16 accumulators, just below their wrap
    acc._a[...] = primed
    acc._b_low[...] = primed
    acc._b_high[...] = primed_high
    primed_a = primed & MAX_COEFF
    primed_b = (primed + (primed_high << 32)) & MAX_COEFF  # b = low + (high << 32)
    cts = _maximal_ciphertexts(5, num_polys)
    for seed, payload in cts:
        acc.add_ciphertext(seed, payload)
    a_ref, b_ref = reference_fold(cts, num_polys, rlwe.WRITE_EXPANSION)
    assert np.array_equal(acc.a_sum().reshape(-1), (a_ref + np.uint64(primed_a)) & Q_MASK)
    assert np.array_equal(acc.b_sum().reshape(-1), (b_ref + np.uint64(primed_b)) & Q_MASK)
    assert int(acc._b_low.max()) < primed and int(acc._b_high.max()) < primed_high  # both did wrap


def test_unmasking_plaintext_is_added_mod_q():
    """add_plaintext (secure aggregation's unmasking step) on the lazy accumulators."""
    cts = _maximal_ciphertexts(2, 1)
    acc = _fold(cts, 1, rlwe.WRITE_EXPANSION)
    _a_ref, b_ref = reference_fold(cts, 1, rlwe.WRITE_EXPANSION)
    t = PARAMS.plain_modulus
    m = np.arange(PARAMS.n, dtype=np.uint64) * np.uint64(2**20 + 7) % np.uint64(t)
    acc.add_plaintext(m)
    shift = int(PARAMS.log_q) - (t.bit_length() - 1)
    assert np.array_equal(acc.b_sum().reshape(-1), (b_ref + (m << np.uint64(shift))) & Q_MASK)
