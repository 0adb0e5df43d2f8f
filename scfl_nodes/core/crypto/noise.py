"""Noise budgets: how many uploads a round may sum before decryption can fail.

Why a written analysis instead of a measured capacity: a capacity found by trial (add
one ciphertext to itself until it breaks) sits exactly at the edge where decryption
starts failing, so a test that checks it is flaky and the claim is wrong a few percent
of the time. Each parameter set therefore gets two numbers, both derived here and
explained in docs/encryption.md ("Noise budgets"):

* :func:`independent_capacity` -- the largest N for which the sum of N *independent*
  uploads (every real upload: fresh randomness) fails to decrypt with probability
  <= 2^-40 over all coefficients of an aggregate of up to :data:`MAX_COEFFS` values.
  This is what ``ParamSet.max_noise_clients`` (and so ``max_clients``) uses.
* :func:`worst_case_capacity` -- the largest N for which even N perfectly correlated
  noises (one ciphertext added to itself N times) decrypt, from absolute noise bounds.
  Deterministic: holds with probability 1.

RLWE (this project's scheme): the sum's noise is Sum of N x n-coefficient vectors whose
entries are i.i.d. samples of the CDT sampler in :mod:`.rng`; its exact probability
mass function comes from the 32-bit table, and a Chernoff bound with that exact
moment-generating function gives the tail. Decryption is exact iff the summed noise
lies in [-q/(2t), q/(2t)).

TenSEAL/SEAL BFV: with two or more coefficient primes the last one is SEAL's special
prime; SEAL encrypts at the key level and divides by the special prime p, so a fresh
data-level ciphertext has noise ``v = r0 + r1*s + v_key/p`` with rounding errors
``r0, r1`` in [-1/2, 1/2]^n, the ternary secret ``s`` (at most n non-zero
coefficients) and |v_key| / p < 1e-9. Encoding m as round(q m / t) adds at most 1/2 per
upload, and decryption is exact while |noise| < q/(2t) (less a 1% allowance for SEAL's
approximate scale-and-round). Absolute bound per upload: n/2 + 2.5. Independent
uploads: for a fixed s each coefficient of the summed noise is a sum of at most
N (n + 1) independent zero-mean terms in [-1/2, 1/2] plus N deterministic terms <= 1,
so Hoeffding gives Pr[|sum| >= x] <= 2 exp(-2 x^2 / (N (n + 1))).
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: Failure probability the independent-upload budget allows per aggregate.
FAILURE_LOG2 = -40
#: Coefficients the union bound covers: aggregates up to 2^27 (~134 M) values.
MAX_COEFFS = 1 << 27
#: Share of q/(2t) SEAL's decryption may use (its RNS scale-and-round is approximate).
SEAL_DECRYPT_MARGIN = 0.99

_LOG_TARGET = FAILURE_LOG2 * math.log(2) - math.log(MAX_COEFFS)  # per-coefficient log-probability


# ----------------------------------------------------------------------------- RLWE
@functools.lru_cache(maxsize=None)
def rlwe_noise_pmf(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(values, probabilities) of one error coefficient, exactly as :meth:`RandomSource.gaussian` samples it.

    The sampler returns index i of ``searchsorted(cdf, u, 'right')`` for u uniform in
    [0, 2^32), so P(i) = (cdf[i] - cdf[i-1]) / 2^32 with cdf[-1] = 0 and cdf[end] = 2^32.
    """
    from .rng import _cdt

    cdf = _cdt(sigma)[0].astype(np.float64)
    edges = np.concatenate([[0.0], cdf, [2.0**32]])
    probs = np.diff(edges) / 2.0**32
    tail = cdf.size // 2
    return np.arange(-tail, tail + 1, dtype=np.float64), probs


def rlwe_noise_bound(n_uploads: int, bound: float, sigma: float) -> float:
    """log of the Chernoff bound on Pr[|sum of N error coefficients| >= bound] (both tails)."""
    values, probs = rlwe_noise_pmf(sigma)
    logp = np.log(np.where(probs > 0, probs, 1e-300))

    def tail(sign: float) -> float:
        def f(lam: float) -> float:  # log( E[e^{lam X}]^N e^{-lam B} ), convex in lam
            x = logp + sign * lam * values
            top = x.max()
            return n_uploads * (top + math.log(np.exp(x - top).sum())) - lam * bound

        lo, hi = 0.0, 1.0
        for _ in range(100):  # ternary search on a convex function
            m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
            if f(m1) < f(m2):
                hi = m2
            else:
                lo = m1
        return min(0.0, f((lo + hi) / 2))

    a, b = tail(1.0), tail(-1.0)
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))


def _rlwe_half_gap(params) -> int:
    return 1 << int(params.log_q - math.log2(params.plain_modulus) - 1)  # q/(2t)


def _largest(ok, hi: int = 1 << 40) -> int:
    """Largest N >= 0 with ok(N) for a monotone predicate (ok(0) is assumed)."""
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


# ----------------------------------------------------------------------------- SEAL BFV
def seal_primes(n: int, bit_sizes: tuple[int, ...]) -> list[int]:
    """The primes SEAL's CoeffModulus::Create picks: per bit size, the largest unused primes
    p < 2^bits with p = 1 mod 2n, in the order of ``bit_sizes``."""
    out: list[int] = []
    used: set[int] = set()
    for bits in bit_sizes:
        value = (1 << bits) - 2 * n + 1
        while value > 1 << (bits - 1):
            if value not in used and _is_prime(value):
                out.append(value)
                used.add(value)
                break
            value -= 2 * n
    return out


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):  # deterministic below 3.3e24
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def seal_data_modulus(params) -> int:
    primes = seal_primes(params.n, tuple(params.coeff_mod_bit_sizes))
    data = primes[:-1] if len(primes) > 1 else primes
    return math.prod(data)


def seal_decrypt_bound(params) -> float:
    return SEAL_DECRYPT_MARGIN * seal_data_modulus(params) / (2 * params.plain_modulus)


def seal_fresh_noise_bound(params) -> float:
    """Absolute |noise| of one fresh SEAL BFV upload: r0 + r1*s + key noise + encoding rounding."""
    return params.n / 2 + 2.5


# ----------------------------------------------------------------------------- both
def independent_capacity(params) -> int:
    """Largest N whose sum of N independent uploads fails with probability <= 2^-40."""
    if params.backend == "rlwe":
        bound = _rlwe_half_gap(params)
        return _largest(lambda N: N == 0 or rlwe_noise_bound(N, bound, params.sigma) <= _LOG_TARGET, 1 << 24)
    bound = seal_decrypt_bound(params)
    n = params.n

    def ok(N: int) -> bool:
        x = bound - N * 1.0  # deterministic part: encoding rounding and key-level noise
        return N == 0 or (x > 0 and math.log(2) - 2 * x * x / (N * (n + 1)) <= _LOG_TARGET)

    return _largest(ok, 1 << 34)


def worst_case_capacity(params) -> int:
    """Largest N for which N perfectly correlated uploads (one ciphertext N times) still decrypt."""
    if params.backend == "rlwe":
        values, _ = rlwe_noise_pmf(params.sigma)
        return int((_rlwe_half_gap(params) - 1) // int(values.max()))
    return int(seal_decrypt_bound(params) // seal_fresh_noise_bound(params))


def independent_noise_bound(params, n_uploads: int) -> float:
    """|noise| the sum of ``n_uploads`` independent uploads exceeds with probability <= 2^-40 per aggregate.

    For tests that measure the real noise with the secret key.
    """
    if params.backend == "rlwe":
        absolute = n_uploads * float(rlwe_noise_pmf(params.sigma)[0].max())
        chernoff = _largest(lambda B: B == 0 or rlwe_noise_bound(n_uploads, B, params.sigma) > _LOG_TARGET, 1 << 40) + 1
        return min(absolute, float(chernoff))
    return n_uploads + math.sqrt(n_uploads * (params.n + 1) * (math.log(2) - _LOG_TARGET) / 2)
