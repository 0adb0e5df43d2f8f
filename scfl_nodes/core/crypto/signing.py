"""Ed25519 robot signing keys (``cryptography``) and secret-file helpers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import KeyFileError, SignatureError


def write_secret_file(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Create ``path`` with mode 0600 from the start (no window where it is readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key file") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)
    return path


def read_secret_file(path: str | os.PathLike) -> bytes:
    """Read a secret key file, refusing one that group or others can read (like ssh)."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"key file {path} does not exist")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"key file {path} has permissions {mode:o}; run `chmod 600 {path}`")
    return path.read_bytes()


class RobotSigningKey:
    """A robot's Ed25519 identity: signs the SHA-256 digest of each upload."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self._key = private_key

    def public_bytes(self) -> bytes:
        """Raw 32-byte public key (what the cloud registers)."""
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.public_bytes()).hexdigest()[:16]

    def sign(self, digest: bytes) -> bytes:
        return self._key.sign(digest)

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        return write_secret_file(path, self.to_pem(), overwrite=overwrite)

    def save_public(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Raw 32-byte public key file (0600 like every key file here)."""
        return write_secret_file(path, self.public_bytes(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RobotSigningKey:
        return cls.from_pem(read_secret_file(path))

    @classmethod
    def from_pem(cls, pem: bytes) -> RobotSigningKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise KeyFileError("not a PEM Ed25519 private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError("PEM key is not an Ed25519 key")
        return cls(key)


def generate_signing_key() -> RobotSigningKey:
    return RobotSigningKey(Ed25519PrivateKey.generate())


def load_signing_key(path: str | os.PathLike) -> RobotSigningKey:
    return RobotSigningKey.from_pem(read_secret_file(path))


def load_public_key_bytes(path: str | os.PathLike) -> bytes:
    raw = Path(path).read_bytes()
    if len(raw) != 32:
        raise KeyFileError(f"{path}: expected a raw 32-byte Ed25519 public key, got {len(raw)} bytes")
    return raw


def verify_signature(public_key_bytes: bytes, digest: bytes, signature: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key_bytes)).verify(signature, digest)
    except InvalidSignature:
        raise SignatureError("Ed25519 signature does not verify under this robot's public key") from None
    except ValueError as exc:
        raise SignatureError(f"invalid Ed25519 public key ({exc})") from None
