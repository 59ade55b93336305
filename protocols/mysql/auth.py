"""MySQL/MariaDB authentication plugins' client computations, sans-I/O.

- mysql_native_password: SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password))).
- caching_sha2_password: SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce);
  after it the server sends AuthMoreData: FAST_AUTH_OK, or PERFORM_FULL_AUTH,
  upon which the client sends the cleartext password + NUL over TLS, or asks for
  the server's RSA key (REQUEST_PUBLIC_KEY) and sends it RSA-encrypted.
https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods.html
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NONCE_LENGTH = 20

#: caching_sha2_password AuthMoreData payloads (after the 0x01 header).
REQUEST_PUBLIC_KEY = b"\x02"  # client -> server: send me your RSA public key
FAST_AUTH_OK = b"\x03"
PERFORM_FULL_AUTH = b"\x04"

# Bytes a server puts in a scramble: 7-bit, never NUL, never '$' (MySQL's
# generate_user_salt; '$' separates fields in caching_sha2's stored hashes).
_NONCE_ALPHABET = bytes(b for b in range(1, 128) if b != ord("$"))


def _xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right, strict=True))


def native_password(password: bytes, nonce: bytes) -> bytes:
    """The mysql_native_password response to `nonce` (20 bytes, no trailing NUL)."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password, usedforsecurity=False).digest()
    stage2 = hashlib.sha1(stage1, usedforsecurity=False).digest()
    return _xor(stage1, hashlib.sha1(nonce + stage2, usedforsecurity=False).digest())


def native_password_hash(password: bytes) -> str:
    """What MariaDB/MySQL store for the password: '*' + HEX(SHA1(SHA1(password)))."""
    if not password:
        return ""
    return (
        "*"
        + hashlib.sha1(
            hashlib.sha1(password, usedforsecurity=False).digest(), usedforsecurity=False
        )
        .hexdigest()
        .upper()
    )


def verify_native_password(response: bytes, nonce: bytes, stored_hash: str) -> bool:
    """Check a client's mysql_native_password response as a server does, against the
    stored '*HEX' hash (the password itself is never needed)."""
    if not stored_hash:
        return response == b""
    if len(response) != 20 or len(stored_hash) != 41 or not stored_hash.startswith("*"):
        return False
    try:
        stage2 = bytes.fromhex(stored_hash[1:])
    except ValueError:
        return False
    stage1 = _xor(response, hashlib.sha1(nonce + stage2, usedforsecurity=False).digest())
    return hmac.compare_digest(hashlib.sha1(stage1, usedforsecurity=False).digest(), stage2)


def caching_sha2(password: bytes, nonce: bytes) -> bytes:
    """The caching_sha2_password fast-auth scramble of `nonce` (20 bytes, no NUL)."""
    if not password:
        return b""
    digest1 = hashlib.sha256(password).digest()
    digest2 = hashlib.sha256(digest1).digest()
    return _xor(digest1, hashlib.sha256(digest2 + nonce).digest())


def caching_sha2_hash(password: bytes) -> bytes:
    """What a server keeps to check caching_sha2_password's fast path: SHA256(SHA256(pw))."""
    return hashlib.sha256(hashlib.sha256(password).digest()).digest()


def verify_caching_sha2(response: bytes, nonce: bytes, stored_hash: bytes) -> bool:
    """Check a client's caching_sha2_password scramble as a server's fast path does,
    against `caching_sha2_hash` of the password (the password itself is never needed)."""
    if len(response) != 32 or len(stored_hash) != 32:
        return False
    digest1 = _xor(response, hashlib.sha256(stored_hash + nonce).digest())
    return hmac.compare_digest(hashlib.sha256(digest1).digest(), stored_hash)


def rsa_encrypt_password(password: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """caching_sha2/sha256_password full auth without TLS: (password + NUL) XOR the
    nonce (repeated), RSA-OAEP (SHA-1) encrypted with the server's public key."""
    if not nonce:
        raise ValueError("an empty nonce")
    plain = password + b"\0"
    mask = (nonce * (len(plain) // len(nonce) + 1))[: len(plain)]
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the server's public key is not an RSA key")
    # The protocol fixes OAEP with SHA-1 (MySQL's RSA_PKCS1_OAEP_PADDING).
    sha1 = hashes.SHA1()  # noqa: S303
    return key.encrypt(
        _xor(plain, mask),
        padding.OAEP(mgf=padding.MGF1(algorithm=sha1), algorithm=sha1, label=None),
    )


def new_nonce() -> bytes:
    """A fresh 20-byte scramble as servers make them: every byte in 1..127, no NUL."""
    return bytes(secrets.choice(_NONCE_ALPHABET) for _ in range(NONCE_LENGTH))
