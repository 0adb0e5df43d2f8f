"""Packed ring-LWE (the project's N2HE replacement), numpy only.

Scheme (symmetric, additive; robots of a fleet share the secret ``s``):

* ring R_q = Z_q[X]/(X^n + 1), n = 2048, q = 2^48; plaintexts in Z_t, t = 2^32.
* secret ``s``: ternary (uniform in {-1,0,1}) by rejection sampling from the OS CSPRNG.
* encryption of a block of n plaintext values m (one per coefficient):
  ``a`` = SHAKE-128(seed) expanded to n uniform 48-bit coefficients, seed fresh 16 bytes;
  ``b = a*s + e + (q/t)*m  (mod q)``, e discrete Gaussian sigma=3.2. Only the seed and
  ``b`` travel (6 bytes per value), so a 0.5M-value delta is ~3 MB, not the 2 GB of
  per-value LWE with an explicit n-vector per value.
* addition: (a1+a2, b1+b2) coefficient-wise mod q. The cloud expands each upload's
  ``a`` from its seed and keeps the running sums; it never sees ``s``.
* decryption: m = round((b - a*s) * t/q) mod t, centered to (-t/2, t/2]. Exact while
  |sum of m| <= t/2 (guarded by params.check_overflow) and |sum of e| < q/(2t) = 2^15
  (1000 clients: sigma*sqrt(1000) ~ 100, far below).

``a*s`` is a negacyclic product. Products of 48-bit coefficients overflow int64, so
``a`` is split into two 24-bit limbs packed as the real and imaginary parts of one
complex vector; since ``s`` is real and small, one twisted complex FFT of size n per
polynomial computes both limb products exactly (|limb product| < 2048 * 2^24 = 2^35,
far inside float64 precision), and the limbs are recombined mod 2^48 in int64.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .params import ParamSet
from .rng import RandomSource

_BYTES_PER_COEFF = 6  # 48-bit coefficients on the wire
_LIMB_BITS = 24
_ROUND_MAGIC = 1.5 * 2.0**52
_ROUND_MAGIC_BITS = np.array([_ROUND_MAGIC]).view(np.int64)[0]


def _fft():
    try:
        import scipy.fft as sfft

        return sfft
    except ImportError:  # pragma: no cover - scipy is a dependency, numpy is the fallback
        return None


class NegacyclicMultiplier:
    """Fast exact ``a * s mod (X^n + 1, q)`` for a fixed small secret ``s``."""

    def __init__(self, s: np.ndarray, n: int, log_q: int):
        if log_q > 2 * _LIMB_BITS:
            raise ValueError(f"log_q {log_q} > {2 * _LIMB_BITS} is not supported by the limb split")
        self.n = n
        self.mask = (1 << log_q) - 1
        self.twist = np.exp(1j * np.pi * np.arange(n) / n)
        self.untwist = np.conj(self.twist) / 1.0
        self._sfft = _fft()
        self.s_hat = self._forward((s.astype(np.float64) * self.twist)[None, :])[0]

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if self._sfft is not None:
            return self._sfft.fft(x, axis=-1, overwrite_x=True, workers=-1)
        return np.fft.fft(x, axis=-1)

    def _inverse(self, x: np.ndarray) -> np.ndarray:
        if self._sfft is not None:
            return self._sfft.ifft(x, axis=-1, overwrite_x=True, workers=-1)
        return np.fft.ifft(x, axis=-1)

    def multiply(self, a: np.ndarray) -> np.ndarray:
        """``a`` uint64 of shape (k, n) with coefficients < q; returns a*s mod q, uint64 (k, n)."""
        limb_mask = np.uint64((1 << _LIMB_BITS) - 1)
        x = np.empty(a.shape, dtype=np.complex128)
        x.real = a & limb_mask
        x.imag = a >> np.uint64(_LIMB_BITS)
        x *= self.twist
        spectrum = self._forward(x)
        spectrum *= self.s_hat
        y = self._inverse(spectrum)
        y *= self.untwist
        # round-to-nearest via the 1.5*2^52 trick: adding it leaves the integer in the
        # low mantissa bits (valid for |x| < 2^51; limb products are < 2^35)
        low = (y.real + _ROUND_MAGIC).view(np.int64)
        low -= _ROUND_MAGIC_BITS
        high = (y.imag + _ROUND_MAGIC).view(np.int64)
        high -= _ROUND_MAGIC_BITS
        low += high << _LIMB_BITS
        low &= self.mask
        return low.view(np.uint64)


def negacyclic_multiply_reference(a: np.ndarray, s: np.ndarray, q: int) -> np.ndarray:
    """Schoolbook negacyclic product with Python integers (slow; for tests only)."""
    n = a.size
    out = [0] * n
    coeffs = [int(v) for v in a]
    for j in np.nonzero(s)[0]:
        sj = int(s[j])
        for i, ai in enumerate(coeffs):
            k = i + int(j)
            if k >= n:
                out[k - n] -= ai * sj
            else:
                out[k] += ai * sj
    return np.array([v % q for v in out], dtype=np.uint64)


def expand_a(seed: bytes, num_polys: int, params: ParamSet) -> np.ndarray:
    """The uniform polynomials ``a`` (uint64, shape (num_polys, n)) from a 16-byte seed (SHAKE-128).

    Each coefficient is 6 bytes (three little-endian 16-bit words) of the XOF stream, so
    it is uniform in [0, 2^48) = Z_q with no rejection needed.
    """
    count = num_polys * params.n
    raw = hashlib.shake_128(b"scfl-rlwe-a|" + seed).digest(count * _BYTES_PER_COEFF)
    wide = np.zeros((count, 4), dtype="<u2")
    wide[:, :3] = np.frombuffer(raw, dtype="<u2").reshape(count, 3)
    return wide.view("<u8").reshape(num_polys, params.n).astype(np.uint64, copy=False)


def pack_coeffs(values: np.ndarray) -> bytes:
    """uint64 coefficients < 2^48 -> 6 bytes each: all low 32-bit words, then all high 16-bit words."""
    flat = np.asarray(values, dtype=np.uint64).reshape(-1)
    low = (flat & np.uint64(0xFFFFFFFF)).astype("<u4")
    high = (flat >> np.uint64(32)).astype("<u2")
    return low.tobytes() + high.tobytes()


def unpack_coeffs(raw: bytes, count: int) -> np.ndarray:
    if len(raw) != count * _BYTES_PER_COEFF:
        raise ValueError(f"expected {count * _BYTES_PER_COEFF} coefficient bytes, got {len(raw)}")
    low = np.frombuffer(raw, dtype="<u4", count=count).astype(np.uint64)
    high = np.frombuffer(raw, dtype="<u2", offset=4 * count).astype(np.uint64)
    low |= high << np.uint64(32)
    return low


def num_polys(num_values: int, params: ParamSet) -> int:
    return max(1, -(-num_values // params.n))


class RlweSecret:
    """The fleet secret ``s`` with its cached FFT multiplier."""

    def __init__(self, s: np.ndarray, params: ParamSet):
        s = np.asarray(s, dtype=np.int8)
        if params.plain_modulus & (params.plain_modulus - 1) or int(params.log_q) != params.log_q:
            raise ValueError("RLWE needs a power-of-two plaintext modulus t and an integral log_q")
        if s.shape != (params.n,) or np.abs(s).max(initial=0) > 1:
            raise ValueError("RLWE secret must be a ternary vector of length n")
        self.s = s
        self.params = params
        self.q = 1 << int(params.log_q)
        self._mul = NegacyclicMultiplier(s, params.n, int(params.log_q))

    @classmethod
    def generate(cls, params: ParamSet, rng: RandomSource) -> RlweSecret:
        return cls(rng.ternary(params.n), params)

    def to_bytes(self) -> bytes:
        return (self.s + 1).astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes, params: ParamSet) -> RlweSecret:
        s = np.frombuffer(raw, dtype=np.uint8).astype(np.int8) - 1
        return cls(s, params)

    def encrypt(self, plain_mod_t: np.ndarray, seed: bytes, rng: RandomSource) -> np.ndarray:
        """Encrypt values already reduced mod t (uint64, any length); returns ``b`` uint64 (k, n)."""
        p = self.params
        k = num_polys(plain_mod_t.size, p)
        b = self._mul.multiply(expand_a(seed, k, p)).reshape(-1)
        b += rng.gaussian(k * p.n, p.sigma).view(np.uint64)  # two's complement; reduced below
        shift = np.uint64(int(p.log_q) - (p.plain_modulus.bit_length() - 1))  # q/t = 2^shift
        b[: plain_mod_t.size] += plain_mod_t.astype(np.uint64, copy=False) << shift
        b &= np.uint64(self.q - 1)
        return b.reshape(k, p.n)

    def decrypt(self, a_sum: np.ndarray, b_sum: np.ndarray, num_values: int) -> np.ndarray:
        """Centered plaintext sum (int64) of the first ``num_values`` coefficients."""
        p = self.params
        v = (b_sum - self._mul.multiply(a_sum)) & np.uint64(self.q - 1)
        log_t = p.plain_modulus.bit_length() - 1
        shift = int(p.log_q) - log_t
        m = ((v + np.uint64(1 << (shift - 1))) >> np.uint64(shift)) & np.uint64(p.plain_modulus - 1)
        m = m.reshape(-1)[:num_values].astype(np.int64)
        m[m > p.plain_modulus // 2] -= p.plain_modulus
        return m


class RlweSum:
    """Running sum of RLWE ciphertexts, kept in split form so each add is one cheap pass.

    Why: the cloud's per-upload cost is dominated by expanding ``a`` (SHAKE-128) and by
    converting bytes to 48-bit integers. Instead of assembling each ``a`` and ``b`` and
    reducing mod q, the 16-bit words of ``a`` and ``b`` are added straight from the byte
    buffers into uint32 accumulators (same-width adds, half the memory traffic of
    uint64); they are folded into reduced uint64 totals every 65,535 uploads (before a
    uint32 word sum could overflow) and whenever the sum is read.
    """

    _FLUSH_EVERY = 0xFFFF

    def __init__(self, params: ParamSet, num_polys: int):
        self.params = params
        self.shape = (num_polys, params.n)
        count = num_polys * params.n
        self._mask = np.uint64((1 << int(params.log_q)) - 1)
        self._a_words = np.zeros((count, 3), dtype=np.uint32)
        self._b_low_words = np.zeros((count, 2), dtype=np.uint32)  # the payload's low 32 bits as 2 x u16
        self._b_high_words = np.zeros(count, dtype=np.uint32)
        self._pending = 0
        self._a_total = np.zeros(count, dtype=np.uint64)
        self._b_total = np.zeros(count, dtype=np.uint64)

    @property
    def count(self) -> int:
        return self._b_total.size

    def add_ciphertext(self, seed: bytes, payload: bytes) -> None:
        count = self.count
        if len(payload) != count * _BYTES_PER_COEFF:
            raise ValueError(f"expected {count * _BYTES_PER_COEFF} payload bytes, got {len(payload)}")
        if self._pending == self._FLUSH_EVERY:
            self._flush()
        raw_a = hashlib.shake_128(b"scfl-rlwe-a|" + seed).digest(count * _BYTES_PER_COEFF)
        np.add(self._a_words, np.frombuffer(raw_a, dtype="<u2").reshape(count, 3), out=self._a_words)
        np.add(self._b_low_words, np.frombuffer(payload, dtype="<u2", count=2 * count).reshape(count, 2), out=self._b_low_words)
        np.add(self._b_high_words, np.frombuffer(payload, dtype="<u2", offset=4 * count), out=self._b_high_words)
        self._pending += 1

    def _pending_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """The pending word sums as integers mod 2^64 (q = 2^48 divides it, so wrap-around is harmless)."""
        sixteen = np.uint64(16)
        # Horner in place: one uint64 temporary per sum instead of one per word column
        a = self._a_words[:, 2].astype(np.uint64)
        a <<= sixteen
        a += self._a_words[:, 1]
        a <<= sixteen
        a += self._a_words[:, 0]
        b = self._b_high_words.astype(np.uint64)
        b <<= sixteen
        b += self._b_low_words[:, 1]
        b <<= sixteen
        b += self._b_low_words[:, 0]
        return a, b

    def _flush(self) -> None:
        a, b = self._pending_sums()
        self._a_total = (self._a_total + a) & self._mask
        self._b_total = (self._b_total + b) & self._mask
        for arr in (self._a_words, self._b_low_words, self._b_high_words):
            arr.fill(0)
        self._pending = 0

    def a_sum(self) -> np.ndarray:
        a, _ = self._pending_sums()
        a += self._a_total
        a &= self._mask
        return a.reshape(self.shape)

    def b_sum(self) -> np.ndarray:
        _, b = self._pending_sums()
        b += self._b_total
        b &= self._mask
        return b.reshape(self.shape)

    def sums(self) -> tuple[np.ndarray, np.ndarray]:
        """(a_sum, b_sum) in one pass over the word accumulators."""
        a, b = self._pending_sums()
        a += self._a_total
        a &= self._mask
        b += self._b_total
        b &= self._mask
        return a.reshape(self.shape), b.reshape(self.shape)

    def add_plaintext(self, values_mod_t: np.ndarray) -> None:
        """b += (q/t) m: a noiseless trivial encryption of public values m mod t."""
        shift = np.uint64(int(self.params.log_q) - (self.params.plain_modulus.bit_length() - 1))
        m = np.zeros(self._b_total.size, dtype=np.uint64)
        m[: values_mod_t.size] = values_mod_t.astype(np.uint64) << shift
        self._b_total = (self._b_total + m) & self._mask

    def to_bytes(self) -> bytes:
        a, b = self.sums()
        return pack_coeffs(a) + pack_coeffs(b)

    @classmethod
    def from_sums(cls, params: ParamSet, a_sum: np.ndarray, b_sum: np.ndarray) -> RlweSum:
        out = cls(params, a_sum.size // params.n)
        out._a_total = a_sum.reshape(-1).astype(np.uint64) & out._mask
        out._b_total = b_sum.reshape(-1).astype(np.uint64) & out._mask
        return out


def add_mod_q(x: np.ndarray, y: np.ndarray, log_q: int) -> np.ndarray:
    out = x + y
    out &= np.uint64((1 << log_q) - 1)
    return out
