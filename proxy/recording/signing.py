"""The gateway's Ed25519 key, which seals session transcripts.

The private key lives in `data_dir/keys/transcript_ed25519.pem` (PKCS#8 PEM, mode 0600,
directory 0700) and is generated there on first start; the public key is written next
to it as `transcript_ed25519.pub.pem` so auditors can take it away (`airlock keys
export-public`) and verify transcripts without the private key. A key is named by its
key id, `ed25519:` and the first 16 hex digits of the SHA-256 of its raw public bytes.

Auditor commands read keys with `load_public_key`, which never creates one: verifying
against a fresh key would only say every transcript is signed by another key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_DIR = "keys"
PRIVATE_KEY_FILE = "transcript_ed25519.pem"
PUBLIC_KEY_FILE = "transcript_ed25519.pub.pem"


class SigningKeyError(Exception):
    """A key file is missing, unreadable, or holds something other than an Ed25519 key."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem_of(public_key: Ed25519PublicKey) -> str:
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


class SigningKey:
    """The gateway's private key, with what transcripts need of it."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def public_key_pem(self) -> str:
        return public_key_pem_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._private_key.sign(data)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())


def verify(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether `signature` is `public_key`'s signature over `data`."""
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def private_key_path(data_dir: Path) -> Path:
    return data_dir / KEY_DIR / PRIVATE_KEY_FILE


def public_key_path(data_dir: Path) -> Path:
    return data_dir / KEY_DIR / PUBLIC_KEY_FILE


def load_or_create(data_dir: Path) -> SigningKey:
    """The key in data_dir, generated there first if there is none."""
    path = private_key_path(data_dir)
    if not path.exists():
        _create(path)
    key = SigningKey(_load_private(path))
    public_path = public_key_path(data_dir)
    if not public_path.exists():
        _write_new(public_path, key.public_key_pem().encode("ascii"), 0o644)
    return key


def load_public_key(data_dir: Path) -> Ed25519PublicKey:
    """The public key of data_dir's key: from the public file, else from the private one."""
    public_path = public_key_path(data_dir)
    if public_path.exists():
        return load_public_key_file(public_path)
    private_path = private_key_path(data_dir)
    if private_path.exists():
        return _load_private(private_path).public_key()
    raise SigningKeyError(
        f"no transcript signing key in {data_dir / KEY_DIR} "
        "(the gateway creates it on first start; or pass the exported public key)"
    )


def load_public_key_file(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as error:
        raise SigningKeyError(f"{path}: {error.strerror or error}") from None
    except ValueError:
        raise SigningKeyError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: not an Ed25519 public key")
    return key


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as error:
        raise SigningKeyError(f"{path}: {error.strerror or error}") from None
    except (ValueError, TypeError):
        raise SigningKeyError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 private key")
    return key


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(path, pem, 0o600)


def _write_new(path: Path, content: bytes, mode: int) -> None:
    """Write a whole file under its final name, or leave an existing one alone.

    Written aside and linked into place, so a crash never leaves half a key under the
    real name, and two gateways starting at once on one data_dir agree on one key.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(content)
            key_file.flush()
            os.fsync(key_file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
