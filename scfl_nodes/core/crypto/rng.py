"""Randomness for key generation and encryption.

Production code draws from the operating system CSPRNG (``os.urandom``). Tests need
reproducible ciphertexts (known-answer vectors), so a :class:`RandomSource` can instead
be seeded explicitly; it then expands the seed with SHAKE-256 in counter mode. The
seeded mode exists for testing only: a reused seed reuses the encryption randomness,
which leaks plaintext differences.
"""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np


class RandomSource:
    """Byte source: ``os.urandom`` by default, or a deterministic SHAKE-256 stream for tests."""

    def __init__(self, seed_for_testing: bytes | None = None):
        self._seed = None if seed_for_testing is None else bytes(seed_for_testing)
        self._counter = 0

    @property
    def deterministic(self) -> bool:
        return self._seed is not None

    def bytes(self, n: int) -> bytes:
        if self._seed is None:
            return os.urandom(n)
        self._counter += 1
        return hashlib.shake_256(b"scfl-test-rng" + struct.pack("<Q", self._counter) + self._seed).digest(n)

    def uint32(self, count: int) -> np.ndarray:
        return np.frombuffer(self.bytes(4 * count), dtype="<u4").astype(np.uint32)

    def ternary(self, count: int) -> np.ndarray:
        """Uniform values in {-1, 0, 1} by rejection sampling bytes (255 = 3 x 85 values kept)."""
        out = np.empty(0, dtype=np.int8)
        while out.size < count:
            raw = np.frombuffer(self.bytes(2 * (count - out.size) + 16), dtype=np.uint8)
            kept = raw[raw < 255]
            out = np.concatenate([out, (kept % 3).astype(np.int8) - 1])
        return out[:count]

    def gaussian(self, count: int, sigma: float) -> np.ndarray:
        """Discrete Gaussian samples (int64) by inversion of a 32-bit cumulative table."""
        cdf = _cdt(sigma)
        u = self.uint32(count)
        return np.searchsorted(cdf, u, side="right").astype(np.int64) - (cdf.size // 2)


_CDT_CACHE: dict[float, np.ndarray] = {}


def _cdt(sigma: float) -> np.ndarray:
    """Cumulative table of the discrete Gaussian on [-tail, tail] scaled to 2**32."""
    table = _CDT_CACHE.get(sigma)
    if table is None:
        tail = int(np.ceil(12 * sigma))
        xs = np.arange(-tail, tail + 1)
        p = np.exp(-(xs.astype(np.float64) ** 2) / (2 * sigma * sigma))
        p /= p.sum()
        # thresholds between consecutive support points; searchsorted(u) - tail = sample
        table = np.round(np.cumsum(p)[:-1] * 2**32).astype(np.uint64)
        _CDT_CACHE[sigma] = table
    return table
