"""Encrypted skill deltas: packed ring-LWE (numpy) and TenSEAL BFV backends.

Robots share a :class:`FleetSecretKey`; each robot signs its uploads with its own
Ed25519 :class:`RobotSigningKey`; the cloud holds a :class:`CloudContext` that can only
add ciphertexts. See docs/encryption.md for the parameters and their security.
"""

from .delta import EncryptedAggregate, EncryptedDelta, check_expected, sign_aggregate, verify_aggregate
from .errors import (
    CryptoError,
    InsecureParametersError,
    InvalidDeltaError,
    KeyFileError,
    KeyMismatchError,
    MaskCohortError,
    TensorOrderError,
    NonceReuseError,
    OverflowRiskError,
    ReplayError,
    RoundMismatchError,
    SignatureError,
    TamperedError,
    TruncatedError,
    WrongBackendError,
    WrongParametersError,
)
from .keys import (
    CloudContext,
    FleetSecretKey,
    IncompleteMaskError,
    dequantize,
    encrypt_delta,
    generate_fleet_keys,
    load_cloud_context,
    load_fleet_key,
    quantize,
)
from .params import (
    DEFAULT_PARAMS,
    HE_STANDARD_MAX_LOG_Q,
    PARAM_SETS,
    ParamSet,
    check_overflow,
    check_security,
    estimate_security_bits,
    get_params,
)
from .signing import RobotSigningKey, generate_signing_key, load_public_key_bytes, load_signing_key

__all__ = [
    "MaskCohortError",
    "TensorOrderError",
    "NonceReuseError",
    "sign_aggregate",
    "verify_aggregate",
    "CloudContext",
    "CryptoError",
    "DEFAULT_PARAMS",
    "EncryptedAggregate",
    "EncryptedDelta",
    "FleetSecretKey",
    "HE_STANDARD_MAX_LOG_Q",
    "IncompleteMaskError",
    "InsecureParametersError",
    "InvalidDeltaError",
    "KeyFileError",
    "KeyMismatchError",
    "OverflowRiskError",
    "PARAM_SETS",
    "ParamSet",
    "ReplayError",
    "RobotSigningKey",
    "RoundMismatchError",
    "SignatureError",
    "TamperedError",
    "TruncatedError",
    "WrongBackendError",
    "WrongParametersError",
    "check_expected",
    "check_overflow",
    "check_security",
    "dequantize",
    "encrypt_delta",
    "estimate_security_bits",
    "generate_fleet_keys",
    "generate_signing_key",
    "get_params",
    "load_cloud_context",
    "load_fleet_key",
    "load_public_key_bytes",
    "load_signing_key",
    "quantize",
]
