"""Exceptions of the crypto layer.

Every failure a caller may want to handle differently has its own class, all under
:class:`CryptoError`, so the cloud can map them to precise HTTP errors and the CLI to
one-line messages.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error raised by ``scfl_nodes.core.crypto``."""


class InsecureParametersError(CryptoError):
    """Parameters estimated below 128-bit security were requested without the testing flag."""


class OverflowRiskError(CryptoError):
    """``num_clients x clip x scale`` could exceed t/2: the decrypted sum could wrap around."""


class WrongBackendError(CryptoError):
    """A ciphertext, key or context of another backend (rlwe vs tenseal) was given."""


class WrongParametersError(CryptoError):
    """A ciphertext or context uses another parameter set than expected."""


class KeyMismatchError(CryptoError):
    """A ciphertext was made under another fleet key (key id differs)."""


class SignatureError(CryptoError):
    """The Ed25519 signature does not verify under the given public key."""


class TamperedError(CryptoError):
    """The bytes do not match their own digest, or are not a valid container at all."""


class TruncatedError(CryptoError):
    """The bytes end before the lengths declared in the container."""


class ReplayError(CryptoError):
    """An upload of an old round, or one already counted in this aggregate, was replayed."""


class RoundMismatchError(CryptoError):
    """A ciphertext belongs to another skill, base version or tensor layout than the round."""


class NonceReuseError(ReplayError):
    """A ciphertext nonce was already used (by this or another robot): replay or a broken RNG."""


class TensorOrderError(RoundMismatchError):
    """Tensor names are not in canonical (sorted, unique) order."""


class MaskCohortError(RoundMismatchError):
    """A delta's pairwise-mask cohort is malformed or differs from the round's."""


class InvalidDeltaError(CryptoError):
    """The plaintext delta cannot be encrypted (NaN/inf values, empty, wrong dtype)."""


class KeyFileError(CryptoError):
    """A key file is missing, not a key file, world-readable or would be overwritten."""
