"""The cloud's vectorised fold (rlwe.RlweSum: lazy 16-bit word sums) equals the reference
fold (expand ``a``, unpack ``b``, add mod q after every ciphertext) bit for bit, on random
ciphertexts and on adversarial ones (every coefficient 2^48 - 1), across the lazy
reduction's flush point and across a store/load of the running sum."""

from __future__ import annotations

import os

import numpy as np
import pytest

from scfl_nodes.core.crypto import get_params, rlwe

PARAMS = get_params(None, "rlwe")
Q_MASK = np.uint64((1 << int(PARAMS.log_q)) - 1)
MAX_COEFF = (1 << int(PARAMS.log_q)) - 1


def reference_fold(ciphertexts: list[tuple[bytes, bytes]], num_polys: int) -> tuple[np.ndarray, np.ndarray]:
    """Textbook running sum: full 48-bit coefficients, reduced mod q after every add."""
    count = num_polys * PARAMS.n
    a_sum = np.zeros(count, dtype=np.uint64)
    b_sum = np.zeros(count, dtype=np.uint64)
    for seed, payload in ciphertexts:
        a_sum = rlwe.add_mod_q(a_sum, rlwe.expand_a(seed, num_polys, PARAMS).reshape(-1), int(PARAMS.log_q))
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
    assert set(payload) == {0xFF}  # every byte, hence every 16-bit word, is maximal
    return [(os.urandom(16), payload) for _ in range(how_many)]


def _fold(ciphertexts, num_polys: int, reload_every: int = 0) -> rlwe.RlweSum:
    acc = rlwe.RlweSum(PARAMS, num_polys)
    for i, (seed, payload) in enumerate(ciphertexts, 1):
        acc.add_ciphertext(seed, payload)
        if reload_every and i % reload_every == 0:  # the worker's checkpoint: serialise, reload
            raw = acc.to_bytes()
            count = num_polys * PARAMS.n
            acc = rlwe.RlweSum.from_sums(PARAMS, rlwe.unpack_coeffs(raw[: 6 * count], count),
                                         rlwe.unpack_coeffs(raw[6 * count:], count))
    return acc


@pytest.mark.parametrize("reload_every", [0, 3])
def test_vectorised_fold_equals_reference_on_random_ciphertexts(reload_every):
    rng = np.random.default_rng(1)
    cts = _random_ciphertexts(rng, 12, num_polys=3)
    acc = _fold(cts, 3, reload_every)
    a_ref, b_ref = reference_fold(cts, 3)
    assert np.array_equal(acc.a_sum().reshape(-1), a_ref)
    assert np.array_equal(acc.b_sum().reshape(-1), b_ref)
    assert acc.to_bytes() == rlwe.pack_coeffs(a_ref) + rlwe.pack_coeffs(b_ref)  # same bytes on the wire


def test_vectorised_fold_equals_reference_on_maximal_ciphertexts():
    cts = _maximal_ciphertexts(9, num_polys=2)
    acc = _fold(cts, 2)
    a_ref, b_ref = reference_fold(cts, 2)
    assert np.array_equal(acc.b_sum().reshape(-1), b_ref)
    assert np.array_equal(acc.a_sum().reshape(-1), a_ref)
    assert int(b_ref[0]) == (9 * MAX_COEFF) % (MAX_COEFF + 1)  # the reference is not vacuous


def test_lazy_word_sums_do_not_overflow_at_the_flush_point():
    """65,535 maximal uploads fill the uint32 word accumulators to 0xFFFE0001; the next
    uploads must flush first. The accumulators are primed to that state (as after 65,533
    maximal uploads) instead of running 65,533 folds, then real maximal ones cross it."""
    num_polys, primed = 1, rlwe.RlweSum._FLUSH_EVERY - 2
    count = num_polys * PARAMS.n
    acc = rlwe.RlweSum(PARAMS, num_polys)
    for words in (acc._a_words, acc._b_low_words, acc._b_high_words):
        words[...] = primed * 0xFFFF
    acc._pending = primed
    cts = _maximal_ciphertexts(5, num_polys)
    for seed, payload in cts:
        acc.add_ciphertext(seed, payload)
    a_ref, b_ref = reference_fold(cts, num_polys)
    primed_value = np.uint64((primed * MAX_COEFF) % (MAX_COEFF + 1))  # what the primed words stand for
    assert np.array_equal(acc.b_sum().reshape(-1), (b_ref + primed_value) & Q_MASK)
    assert np.array_equal(acc.a_sum().reshape(-1), (a_ref + primed_value) & Q_MASK)
    assert acc._pending < rlwe.RlweSum._FLUSH_EVERY  # it did flush on the way
    assert int(acc._b_high_words.max()) <= 0xFFFF * rlwe.RlweSum._FLUSH_EVERY < 2**32
    assert count == acc.count
