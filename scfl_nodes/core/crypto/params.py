"""Parameter sets, their estimated security, and the overflow guard.

Why this module exists: the paper (Appendix B) claims 128-bit security for LWE with
n=1024, q=2^32, but the Homomorphic Encryption Security Standard (Albrecht et al.,
homomorphicencryption.org, 2018, Table 1, ternary secret, sigma=3.2, classical
attacks) allows at most log2(q)=27 at n=1024 for 128 bits: n=1024/q=2^32 is only
about 109-bit. Its t=2^16 with a quantization scale of 2^15 also overflows as soon as
two clients add values of magnitude >= 0.5. Every key and context creation therefore
goes through :func:`check_security`, and every encryption through
:func:`check_overflow`.
"""

from __future__ import annotations

import dataclasses
import math

from .errors import InsecureParametersError, OverflowRiskError, WrongBackendError, WrongParametersError

#: HE standard (2018), Table 1: maximal log2(q) for a ternary secret, sigma ~ 3.2, classical.
HE_STANDARD_MAX_LOG_Q: dict[int, dict[int, int]] = {
    1024: {128: 27, 192: 19, 256: 14},
    2048: {128: 54, 192: 37, 256: 29},
    4096: {128: 109, 192: 75, 256: 58},
    8192: {128: 218, 192: 152, 256: 118},
    16384: {128: 438, 192: 305, 256: 237},
    32768: {128: 881, 192: 611, 256: 476},
}

MIN_SECURITY_BITS = 128


def estimate_security_bits(n: int, log_q: float) -> float:
    """Rough classical security of (R)LWE with dimension ``n`` and modulus ``2**log_q``.

    Exact at the table's points (128/192/256); elsewhere security is interpolated as
    inversely proportional to log q at fixed n (the usual first-order rule: hardness
    depends on n / log q). n=1024, log q=32 gives 128*27/32 = 108 bits.
    """
    if n not in HE_STANDARD_MAX_LOG_Q:
        smaller = [d for d in HE_STANDARD_MAX_LOG_Q if d <= n]
        if not smaller:
            return 0.0
        n = max(smaller)  # conservative: a larger n is at least as secure
    table = HE_STANDARD_MAX_LOG_Q[n]
    points = sorted(((lq, bits) for bits, lq in table.items()), reverse=True)  # log q desc, bits asc
    if log_q >= points[0][0]:
        return 128.0 * points[0][0] / log_q
    for (lq_hi, bits_lo), (lq_lo, bits_hi) in zip(points, points[1:]):
        if lq_lo <= log_q <= lq_hi:
            frac = (lq_hi - log_q) / (lq_hi - lq_lo)
            return bits_lo + frac * (bits_hi - bits_lo)
    return 256.0 * points[-1][0] / log_q


@dataclasses.dataclass(frozen=True)
class ParamSet:
    """One named parameter set; ``params_id`` travels in every header."""

    params_id: str
    backend: str  # "rlwe" or "tenseal"
    n: int  # ring dimension (poly modulus degree)
    log_q: float  # total ciphertext modulus bits used for the security estimate
    plain_modulus: int  # t
    scale_bits: int  # quantization scale Delta = 2**scale_bits of the real-valued delta
    sigma: float = 3.2
    coeff_mod_bit_sizes: tuple[int, ...] = ()  # tenseal only
    note: str = ""

    @property
    def scale(self) -> int:
        return 1 << self.scale_bits

    @property
    def slots(self) -> int:
        """Plaintext values per ciphertext (one per coefficient / batching slot)."""
        return self.n

    @property
    def security_bits(self) -> float:
        return estimate_security_bits(self.n, self.log_q)

    @property
    def max_abs_sum(self) -> int:
        """Largest |sum| of quantized values that decodes exactly (centered mod t)."""
        return (self.plain_modulus - 1) // 2

    @property
    def max_noise_clients(self) -> int:
        """Independent uploads whose summed noise fails to decrypt with probability <= 2^-40.

        From the written noise analysis in :mod:`.noise` (docs/encryption.md, "Noise
        budgets"); every real upload has fresh encryption randomness.
        """
        from .noise import independent_capacity

        return _cached(independent_capacity, self)

    @property
    def worst_case_noise_clients(self) -> int:
        """Uploads that decrypt even with perfectly correlated noise (an absolute bound)."""
        from .noise import worst_case_capacity

        return _cached(worst_case_capacity, self)

    def max_clients(self, clip: float) -> int:
        """How many clients clipped to ``clip`` can be summed exactly (t/2 and noise budget)."""
        per_client = quantized_bound(clip, self.scale)
        by_modulus = self.max_abs_sum // per_client if per_client else 0
        return min(by_modulus, self.max_noise_clients)


PARAM_SETS: dict[str, ParamSet] = {
    p.params_id: p
    for p in (
        ParamSet(
            "rlwe-n2048-q48-t32",
            "rlwe",
            n=2048,
            log_q=48,
            plain_modulus=1 << 32,
            scale_bits=15,
            note="default: ~150-bit (log q 48 <= 54 at n=2048), exact sums of up to 65535 clients at clip 1.0",
        ),
        ParamSet(
            "rlwe-n1024-q32-t16-paper",
            "rlwe",
            n=1024,
            log_q=32,
            plain_modulus=1 << 16,
            scale_bits=15,
            note="the paper's Appendix B values: ~108-bit and overflows for 2 clients at clip 0.5; testing only",
        ),
        ParamSet(
            "rlwe-n1024-q48-t32-insecure",
            "rlwe",
            n=1024,
            log_q=48,
            plain_modulus=1 << 32,
            scale_bits=15,
            note="small ring for fast tests only: ~72-bit",
        ),
        ParamSet(
            "bfv-n4096-q100-t26",
            "tenseal",
            n=4096,
            log_q=100,
            plain_modulus=67084289,  # prime, = 1 mod 8192 (batching), ~2^26
            scale_bits=15,
            coeff_mod_bit_sizes=(50, 50),
            note="default TenSEAL: BFV N=4096 [50,50] (50-bit data prime), t~2^26: 1023 clients at clip 1.0, "
            "exact even for worst-case (correlated) noise",
        ),
        ParamSet(
            "bfv-n4096-q80-t26",
            "tenseal",
            n=4096,
            log_q=80,
            plain_modulus=67084289,
            scale_bits=15,
            coeff_mod_bit_sizes=(40, 40),
            note="BFV N=4096 [40,40], t~2^26: 18% smaller uploads, but the 40-bit data prime leaves noise "
            "room for only ~670 independent (3 correlated) uploads",
        ),
        ParamSet(
            "bfv-n4096-q80-t786433",
            "tenseal",
            n=4096,
            log_q=80,
            plain_modulus=786433,
            scale_bits=15,
            coeff_mod_bit_sizes=(40, 40),
            note="BFV N=4096 [40,40], t=786433 as in the issue: only 12 clients at clip 1.0",
        ),
    )
}

DEFAULT_PARAMS = {"rlwe": "rlwe-n2048-q48-t32", "tenseal": "bfv-n4096-q100-t26"}
BACKENDS = ("rlwe", "tenseal")

_NOISE_CACHE: dict[tuple, int] = {}


def _cached(fn, params: ParamSet) -> int:
    key = (fn.__name__, params)
    if key not in _NOISE_CACHE:
        _NOISE_CACHE[key] = fn(params)
    return _NOISE_CACHE[key]


def get_params(params_id: str | None = None, backend: str | None = None) -> ParamSet:
    """Look up a parameter set by id (or the backend's default) and check it fits the backend."""
    if backend is not None and backend not in BACKENDS:
        raise WrongBackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if params_id is None:
        if backend is None:
            backend = "rlwe"
        params_id = DEFAULT_PARAMS[backend]
    params = PARAM_SETS.get(params_id)
    if params is None:
        raise WrongParametersError(f"unknown parameter set {params_id!r}; known: {', '.join(PARAM_SETS)}")
    if backend is not None and params.backend != backend:
        raise WrongBackendError(f"parameter set {params_id!r} belongs to backend {params.backend!r}, not {backend!r}")
    return params


def check_security(params: ParamSet, insecure_for_testing: bool = False) -> None:
    """Refuse parameter sets estimated below 128-bit unless explicitly flagged for testing."""
    bits = params.security_bits
    if bits >= MIN_SECURITY_BITS or insecure_for_testing:
        return
    limit = HE_STANDARD_MAX_LOG_Q.get(params.n, {}).get(128)
    why = (
        f"the HE security standard allows log2(q) <= {limit} at n={params.n} for 128-bit security "
        f"(log2(q) <= 54 at n=2048), but this set uses log2(q) = {params.log_q:g}"
        if limit
        else f"n={params.n} is not in the HE standard table"
    )
    raise InsecureParametersError(
        f"parameter set {params.params_id!r} is only ~{bits:.0f}-bit secure (< {MIN_SECURITY_BITS}): {why}. "
        f"Use {DEFAULT_PARAMS[params.backend]!r}, or pass insecure_for_testing=True in tests."
    )


def quantized_bound(clip: float, scale: int) -> int:
    """Largest |round(x * scale)| for |x| <= clip."""
    return int(math.floor(clip * scale + 0.5))


def check_overflow(params: ParamSet, clip: float, num_clients: int) -> int:
    """Refuse a round whose worst-case sum ``num_clients x clip x scale`` could exceed t/2.

    Returns the worst-case |sum| (the bound) so callers can report it.
    """
    if not (clip > 0 and math.isfinite(clip)):
        raise OverflowRiskError(f"clip must be a positive finite number, got {clip!r}")
    if num_clients < 1:
        raise OverflowRiskError(f"num_clients must be >= 1, got {num_clients}")
    bound = num_clients * quantized_bound(clip, params.scale)
    if bound > params.max_abs_sum:
        raise OverflowRiskError(
            f"{num_clients} clients x clip {clip:g} x scale 2^{params.scale_bits} = {bound} exceeds "
            f"t/2 = {params.max_abs_sum} of {params.params_id!r}: the sum could wrap around; "
            f"at most {params.max_clients(clip)} clients at this clip (lower clip or use a larger t)"
        )
    if num_clients > params.max_noise_clients:
        raise OverflowRiskError(
            f"{num_clients} clients exceed the noise budget of {params.params_id!r} "
            f"({params.max_noise_clients} uploads); use a parameter set with a larger ciphertext modulus"
        )
    return bound
