"""The credential book: what a minted credential keeps, how long, and how many."""

from __future__ import annotations

import dataclasses

import pytest

from policy.identity import Identity
from protocols.mysql import auth as mysql_auth
from protocols.postgres import messages as m
from protocols.postgres.auth import ScramServerExchange, UpstreamLogin
from proxy.approvals.credentials import (
    PREFIX,
    CredentialBook,
    TooManyCredentials,
    is_credential_name,
    new_credential,
)
from proxy.errors import AuthenticationFailed

IDENTITY = Identity(
    subject="agent-1",
    issuer="https://issuer.test",
    groups=frozenset({"data-agents"}),
    expires_at=1_000.0,
    token_id="jti-1",
)


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def scram_login(book: CredentialBook, user: str, password: str) -> None:
    """A libpq-like client's SCRAM exchange against the book, as the gateway runs it."""
    found = book.find(user)
    server = ScramServerExchange(lambda _u: found.scram if found is not None else None, user)
    client = UpstreamLogin(user, password)
    first = client.receive(m.decode_backend(server.start()))
    final = client.receive(m.decode_backend(server.client_first(first)))
    assert client.receive(m.decode_backend(server.client_final(final))) == b""


def test_a_credential_carries_the_identity_until_its_own_expiry_and_keeps_no_password() -> None:
    credential, password = new_credential(IDENTITY, "orders", expires_at=600.0)
    assert is_credential_name(credential.username)
    assert credential.username.startswith(PREFIX)
    assert credential.target == "orders"
    assert credential.identity.subject == "agent-1"
    assert credential.identity.token_id == "jti-1"
    assert credential.expires_at == credential.identity.expires_at == 600.0
    kept = repr(credential) + str(credential.scram) + credential.native_hash
    assert password not in kept
    assert password.encode() not in credential.sha2_hash
    assert "scram" not in repr(credential)  # the verifiers stay out of logs too


def test_the_stored_verifiers_check_the_password_in_each_protocol() -> None:
    book = CredentialBook(Clock())
    credential, password = new_credential(IDENTITY, "orders", expires_at=600.0)
    book.add(credential)
    scram_login(book, credential.username, password)
    with pytest.raises(AuthenticationFailed):
        scram_login(book, credential.username, password + "x")
    with pytest.raises(AuthenticationFailed):
        scram_login(book, PREFIX + "0" * 16, password)  # unknown: fails like a wrong password
    nonce = mysql_auth.new_nonce()
    secret = password.encode()
    assert mysql_auth.verify_native_password(
        mysql_auth.native_password(secret, nonce), nonce, credential.native_hash
    )
    assert mysql_auth.verify_caching_sha2(
        mysql_auth.caching_sha2(secret, nonce), nonce, credential.sha2_hash
    )
    assert not mysql_auth.verify_caching_sha2(
        mysql_auth.caching_sha2(secret + b"x", nonce), nonce, credential.sha2_hash
    )


def test_an_expired_credential_is_not_found_and_is_forgotten() -> None:
    clock = Clock(100.0)
    book = CredentialBook(clock)
    credential, _ = new_credential(IDENTITY, "orders", expires_at=200.0)
    book.add(credential)
    assert book.find(credential.username) is credential
    clock.now = 199.9
    assert book.find(credential.username) is credential
    clock.now = 200.0
    assert book.find(credential.username) is None
    assert len(book) == 0


def test_a_full_book_refuses_until_credentials_expire() -> None:
    clock = Clock(0.0)
    book = CredentialBook(clock, max_live=2)
    for expires_at in (10.0, 20.0):
        book.add(new_credential(IDENTITY, "orders", expires_at)[0])
    with pytest.raises(TooManyCredentials):
        book.make_room("anyone")
    with pytest.raises(TooManyCredentials):
        book.add(new_credential(IDENTITY, "orders", 30.0)[0])
    assert len(book) == 2
    clock.now = 10.0  # the first has expired: room for one
    book.add(new_credential(IDENTITY, "orders", 30.0)[0])
    assert len(book) == 2


def test_one_identity_cannot_take_the_whole_book() -> None:
    book = CredentialBook(Clock(0.0), max_live=10, max_per_subject=2)
    for _ in range(2):
        book.add(new_credential(IDENTITY, "orders", 50.0)[0])
    with pytest.raises(TooManyCredentials, match='"agent-1" has 2 live credentials'):
        book.add(new_credential(IDENTITY, "orders", 50.0)[0])
    other = dataclasses.replace(IDENTITY, subject="agent-2")
    book.add(new_credential(other, "orders", 50.0)[0])
    assert len(book) == 3
