"""Authentication computations against the spec formulas, recorded values and PyMySQL.

The strongest check, a real login with `native_password` that MariaDB accepted,
is replayed in test_vectors.py.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from protocols.mysql import auth

NONCE = bytes(range(0x41, 0x41 + 20))  # b"ABCDEFGHIJKLMNOPQRST"
# Computed once with PyMySQL 1.2.4 (pymysql._auth) for password b"secret" and NONCE.
NATIVE_SECRET = bytes.fromhex("28441590674285e7d03cae7af237504797f70e91")
SHA2_SECRET = bytes.fromhex("d721e183c1f036a196c1389201b8d53f38064a16f1d0923683ab886763152d75")
# MariaDB 10.11: SELECT PASSWORD('secret')
STORED_SECRET = "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_native_password_recorded_vector() -> None:
    assert auth.native_password(b"secret", NONCE) == NATIVE_SECRET


def test_native_password_spec_formula() -> None:
    stage1 = _sha1(b"secret")
    stage2 = _sha1(stage1)
    # The intermediate is what the server stores.
    assert "*" + stage2.hex().upper() == STORED_SECRET == auth.native_password_hash(b"secret")
    mask = _sha1(NONCE + stage2)
    expected = bytes(a ^ b for a, b in zip(stage1, mask, strict=True))
    assert auth.native_password(b"secret", NONCE) == expected
    # And the server's check: SHA1(response XOR SHA1(nonce + stage2)) == stage2.
    recovered = bytes(a ^ b for a, b in zip(expected, mask, strict=True))
    assert _sha1(recovered) == stage2


def test_native_password_empty() -> None:
    assert auth.native_password(b"", NONCE) == b""
    assert auth.native_password_hash(b"") == ""


def test_verify_native_password() -> None:
    response = auth.native_password(b"secret", NONCE)
    assert auth.verify_native_password(response, NONCE, STORED_SECRET)
    assert not auth.verify_native_password(response, NONCE[::-1], STORED_SECRET)
    assert not auth.verify_native_password(
        auth.native_password(b"Secret", NONCE), NONCE, STORED_SECRET
    )
    assert not auth.verify_native_password(response[:19], NONCE, STORED_SECRET)
    assert not auth.verify_native_password(response, NONCE, "*XYZ" + "0" * 37)
    assert not auth.verify_native_password(response, NONCE, STORED_SECRET[1:])
    assert auth.verify_native_password(b"", NONCE, "")
    assert not auth.verify_native_password(response, NONCE, "")


def test_caching_sha2_recorded_vector() -> None:
    assert auth.caching_sha2(b"secret", NONCE) == SHA2_SECRET


def test_verify_caching_sha2_checks_the_recorded_scramble_as_a_server() -> None:
    stored = auth.caching_sha2_hash(b"secret")
    assert stored == _sha256(_sha256(b"secret"))
    assert auth.verify_caching_sha2(SHA2_SECRET, NONCE, stored)  # PyMySQL's scramble
    assert not auth.verify_caching_sha2(SHA2_SECRET, NONCE[::-1], stored)
    assert not auth.verify_caching_sha2(auth.caching_sha2(b"Secret", NONCE), NONCE, stored)
    assert not auth.verify_caching_sha2(SHA2_SECRET[:31], NONCE, stored)
    assert not auth.verify_caching_sha2(b"", NONCE, stored)
    assert not auth.verify_caching_sha2(SHA2_SECRET, NONCE, stored[:31])
    # The check needs only the stored hash: a fresh password and nonce round-trip.
    password, nonce = os.urandom(24), auth.new_nonce()
    scramble = auth.caching_sha2(password, nonce)
    assert auth.verify_caching_sha2(scramble, nonce, auth.caching_sha2_hash(password))


def test_caching_sha2_spec_formula() -> None:
    digest1 = _sha256(b"secret")
    digest2 = _sha256(digest1)
    mask = _sha256(digest2 + NONCE)  # note: nonce after the hash, unlike native
    expected = bytes(a ^ b for a, b in zip(digest1, mask, strict=True))
    assert len(expected) == 32
    assert auth.caching_sha2(b"secret", NONCE) == expected
    assert auth.caching_sha2(b"", NONCE) == b""


def test_against_pymysql() -> None:
    pymysql_auth = pytest.importorskip("pymysql._auth")
    for password in (b"secret", b"p\xc3\xa4ss w0rd", b"x" * 200):
        for _ in range(3):
            nonce = auth.new_nonce()
            assert auth.native_password(password, nonce) == pymysql_auth.scramble_native_password(
                password, nonce
            )
            assert auth.caching_sha2(password, nonce) == pymysql_auth.scramble_caching_sha2(
                password, nonce
            )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _decrypt(key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes:
    sha1 = hashes.SHA1()  # noqa: S303 (the protocol's choice)
    return key.decrypt(
        ciphertext, padding.OAEP(mgf=padding.MGF1(algorithm=sha1), algorithm=sha1, label=None)
    )


def test_rsa_encrypt_password(rsa_key: rsa.RSAPrivateKey) -> None:
    password = b"a-password-longer-than-the-twenty-byte-nonce"
    ciphertext = auth.rsa_encrypt_password(password, NONCE, _public_pem(rsa_key))
    assert len(ciphertext) == 256
    plain = _decrypt(rsa_key, ciphertext)
    mask = (NONCE * 3)[: len(password) + 1]
    assert bytes(a ^ b for a, b in zip(plain, mask, strict=True)) == password + b"\0"


def test_rsa_encrypt_password_matches_pymysql(rsa_key: rsa.RSAPrivateKey) -> None:
    pymysql_auth = pytest.importorskip("pymysql._auth")
    pem = _public_pem(rsa_key)
    ours = _decrypt(rsa_key, auth.rsa_encrypt_password(b"secret", NONCE, pem))
    theirs = _decrypt(rsa_key, pymysql_auth.sha2_rsa_encrypt(b"secret", NONCE, pem))
    assert ours == theirs  # OAEP is randomized: compare the plaintexts


def test_rsa_encrypt_password_rejects_other_keys() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="RSA"):
        auth.rsa_encrypt_password(b"secret", NONCE, pem)
    with pytest.raises(ValueError, match="nonce"):
        auth.rsa_encrypt_password(b"secret", b"", pem)


def test_new_nonce() -> None:
    nonces = {auth.new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    for nonce in nonces:
        assert len(nonce) == auth.NONCE_LENGTH == 20
        assert all(1 <= byte <= 127 for byte in nonce)
        assert b"\0" not in nonce
        assert b"$" not in nonce


def test_more_data_constants() -> None:
    assert (auth.REQUEST_PUBLIC_KEY, auth.FAST_AUTH_OK, auth.PERFORM_FULL_AUTH) == (
        b"\x02",
        b"\x03",
        b"\x04",
    )


def test_random_passwords_round_trip_through_the_server_check() -> None:
    for _ in range(5):
        password = os.urandom(12)
        nonce = auth.new_nonce()
        response = auth.native_password(password, nonce)
        assert auth.verify_native_password(response, nonce, auth.native_password_hash(password))
