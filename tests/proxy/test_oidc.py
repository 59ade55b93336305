"""OidcVerifier against a real issuer over HTTP on 127.0.0.1 (tests/support/issuer.py).

Time is a fake clock the tests advance, so lifespans and cooldowns are exercised
without sleeping; tokens are minted at the real time, which the fake clock starts at.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from policy.identity import IdentitySettings, InvalidToken, UnknownKeyId
from proxy.errors import IssuerUnavailable
from proxy.http.oidc import (
    OidcConfigError,
    OidcVerifier,
    check_endpoint_url,
    parse_jwks,
)
from tests.support.issuer import REDIRECT_SUFFIX, TestIssuer, new_key


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings_for(issuer: TestIssuer, /, **overrides: Any) -> IdentitySettings:
    settings = IdentitySettings(
        issuer=issuer.url,
        audience=issuer.audience,
        client_id=issuer.client_id,
        jwks_lifespan_s=300,
        jwks_refetch_cooldown_s=5,
        http_timeout_s=2,
    )
    return dataclasses.replace(settings, **overrides)


@asynccontextmanager
async def running(
    settings: IdentitySettings, clock: FakeClock | None = None
) -> AsyncIterator[OidcVerifier]:
    verifier = OidcVerifier(settings, clock=clock or FakeClock())
    try:
        await verifier.start()
        yield verifier
    finally:
        await verifier.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_valid_token_verifies(issuer: TestIssuer, clock: FakeClock) -> None:
    async with running(settings_for(issuer), clock) as verifier:
        identity = await verifier.verify(issuer.mint(sub="agent-9", groups=("data-agents",)))
        assert identity.subject == "agent-9"
        assert identity.groups == frozenset({"data-agents"})
        assert identity.issuer == issuer.url
        # Keys are cached: more verifies, no more fetches.
        for _ in range(5):
            await verifier.verify(issuer.mint())
        assert verifier.fetch_count == 1
        assert issuer.jwks_fetches == 1
        assert issuer.discovery_fetches == 1


async def test_invalid_token_is_rejected_without_fetching(issuer: TestIssuer) -> None:
    async with running(settings_for(issuer)) as verifier:
        with pytest.raises(InvalidToken, match="token expired"):
            await verifier.verify(issuer.mint(now=time.time() - 3600, ttl_s=60))
        with pytest.raises(InvalidToken, match="malformed"):
            await verifier.verify("not-a-jwt")
        assert verifier.fetch_count == 1


async def test_discovery_with_mismatched_issuer_fails_start(issuer: TestIssuer) -> None:
    issuer.advertised_issuer = "https://evil.example/oauth2/default"
    verifier = OidcVerifier(settings_for(issuer))
    with pytest.raises(OidcConfigError, match="configured issuer is"):
        await verifier.start()
    assert issuer.jwks_fetches == 0
    with pytest.raises(RuntimeError, match="start"):
        await verifier.verify(issuer.mint())


async def test_configured_issuer_with_trailing_slash_does_not_match(issuer: TestIssuer) -> None:
    # Discovery strips the slash to find the document, but the issuer it names
    # must still equal the configured one exactly.
    verifier = OidcVerifier(settings_for(issuer, issuer=issuer.url + "/"))
    with pytest.raises(OidcConfigError, match="discovery document names issuer"):
        await verifier.start()


async def test_insecure_jwks_uri_from_discovery_fails_start(issuer: TestIssuer) -> None:
    issuer.advertised_jwks_uri = "http://example.com/oauth2/default/v1/keys"
    verifier = OidcVerifier(settings_for(issuer))
    with pytest.raises(OidcConfigError, match=r"jwks_uri .* must use https"):
        await verifier.start()


async def test_rotated_key_is_picked_up_after_the_cooldown(
    issuer: TestIssuer, clock: FakeClock
) -> None:
    async with running(settings_for(issuer, jwks_refetch_cooldown_s=5), clock) as verifier:
        await verifier.verify(issuer.mint())
        issuer.rotate()
        rotated = issuer.mint()

        # Within the cooldown of the start-up fetch the new kid is not fetched for.
        clock.advance(1)
        with pytest.raises(UnknownKeyId):
            await verifier.verify(rotated)
        assert verifier.fetch_count == 1

        clock.advance(5)
        assert (await verifier.verify(rotated)).subject == "agent-1"
        assert verifier.fetch_count == 2
        # The old key stays published, so tokens it signed still verify.
        assert len(verifier.keys) == 2


async def _verify_random_kids(verifier: OidcVerifier, issuer: TestIssuer, count: int) -> None:
    tokens = [issuer.mint(headers_overrides={"kid": uuid.uuid4().hex}) for _ in range(count)]
    results = await asyncio.gather(
        *(verifier.verify(token) for token in tokens), return_exceptions=True
    )
    assert all(isinstance(result, UnknownKeyId) for result in results)


async def test_unknown_kids_cause_at_most_one_fetch_per_cooldown(
    issuer: TestIssuer, clock: FakeClock
) -> None:
    async with running(settings_for(issuer, jwks_refetch_cooldown_s=5), clock) as verifier:
        assert verifier.fetch_count == 1

        # Within the cooldown: 50 unknown kids, no fetch at all.
        clock.advance(1)
        await _verify_random_kids(verifier, issuer, 50)
        assert verifier.fetch_count == 1

        # Past it: 50 concurrent unknown kids share a single fetch.
        clock.advance(5)
        await _verify_random_kids(verifier, issuer, 50)
        assert verifier.fetch_count == 2
        assert issuer.jwks_fetches == 2

        # And sequentially, still within that new cooldown: nothing more.
        for _ in range(10):
            await _verify_random_kids(verifier, issuer, 1)
        assert verifier.fetch_count == 2


async def test_last_good_key_set_kept_while_issuer_is_down(
    issuer: TestIssuer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="airlock.oidc")
    settings = settings_for(issuer, jwks_lifespan_s=60, jwks_refetch_cooldown_s=5)
    async with running(settings, clock) as verifier:
        await verifier.verify(issuer.mint())

        issuer.down = True
        clock.advance(61)
        token = issuer.mint()
        assert (await verifier.verify(token)).subject == "agent-1"
        assert verifier.fetch_count == 2
        assert "keeping the last good key set" in caplog.text
        assert "503" in caplog.text

        # A down issuer is not hammered: one attempt per cooldown.
        for _ in range(10):
            await verifier.verify(token)
        assert verifier.fetch_count == 2
        clock.advance(5)
        await verifier.verify(token)
        assert verifier.fetch_count == 3

        # Back up: the next attempt succeeds and the set is fresh again.
        issuer.down = False
        issuer.rotate()
        clock.advance(5)
        assert (await verifier.verify(issuer.mint())).subject == "agent-1"
        assert verifier.fetch_count == 4
        clock.advance(30)
        await verifier.verify(issuer.mint())
        assert verifier.fetch_count == 4

    for part in token.split("."):
        assert part not in caplog.text


async def test_issuer_down_at_start_is_retried_lazily(
    issuer: TestIssuer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    issuer.down = True
    async with running(settings_for(issuer), clock) as verifier:
        assert "will retry on first use" in caplog.text
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(issuer.mint())
        issuer.down = False
        # The failed retry above started a cooldown.
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(issuer.mint())
        clock.advance(5)
        assert (await verifier.verify(issuer.mint())).subject == "agent-1"


async def test_unpublished_key_with_published_kid_is_rejected(
    issuer: TestIssuer, clock: FakeClock
) -> None:
    async with running(settings_for(issuer), clock) as verifier:
        attacker = issuer.attacker_key()
        forged = issuer.mint(key=attacker, headers_overrides={"kid": issuer.signing_key.kid})
        clock.advance(10)
        with pytest.raises(InvalidToken, match="signature invalid") as caught:
            await verifier.verify(forged)
        assert not isinstance(caught.value, UnknownKeyId)
        # A known kid never triggers a refetch, whatever the signature.
        assert verifier.fetch_count == 1


async def test_unpublished_key_with_its_own_kid_is_unknown(issuer: TestIssuer) -> None:
    async with running(settings_for(issuer)) as verifier:
        with pytest.raises(UnknownKeyId):
            await verifier.verify(issuer.mint(key=issuer.attacker_key()))


async def test_unpublished_key_is_dropped(issuer: TestIssuer, clock: FakeClock) -> None:
    async with running(settings_for(issuer, jwks_lifespan_s=60), clock) as verifier:
        old = issuer.signing_key
        token = issuer.mint()
        issuer.rotate()
        issuer.unpublish(old.kid)
        clock.advance(61)
        with pytest.raises(UnknownKeyId):
            await verifier.verify(token)


async def test_redirects_are_not_followed(issuer: TestIssuer) -> None:
    issuer.advertised_jwks_uri = issuer.url + REDIRECT_SUFFIX
    async with running(settings_for(issuer)) as verifier:
        assert verifier.fetch_count == 1
        assert issuer.jwks_fetches == 0
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(issuer.mint())


async def test_oversized_jwks_is_refused(issuer: TestIssuer) -> None:
    issuer.jwks_padding_bytes = 2 * 1024 * 1024
    async with running(settings_for(issuer)) as verifier:
        assert issuer.jwks_fetches == 1
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(issuer.mint())


async def test_encryption_and_kidless_keys_are_not_used(issuer: TestIssuer) -> None:
    enc = new_key()
    issuer.publish_raw_jwk({**enc.public_jwk(), "use": "enc"})
    kidless = {name: value for name, value in new_key().public_jwk().items() if name != "kid"}
    issuer.publish_raw_jwk(kidless)
    async with running(settings_for(issuer)) as verifier:
        assert set(verifier.keys) == {issuer.signing_key.kid}
        with pytest.raises(UnknownKeyId):
            await verifier.verify(issuer.mint(key=enc))


def test_parse_jwks_skips_unusable_keys() -> None:
    good, enc = new_key(), new_key()
    keys = parse_jwks(
        {
            "keys": [
                good.public_jwk(),
                {**enc.public_jwk(), "use": "enc"},
                {"kty": "RSA", "kid": "broken", "n": "AQAB"},
                {"kty": "nope", "kid": "unknown-type"},
                {**new_key().public_jwk(), "kid": "alg-list", "alg": ["RS256"]},
                {**new_key().public_jwk(), "kid": "kty-list", "kty": ["RSA"]},
                {**new_key().public_jwk(), "kid": 7},
                "not a key",
            ]
        }
    )
    assert set(keys) == {good.kid}


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/oauth2/default",
        "http://10.0.0.1/oauth2/default",
        "http://127.0.0.1.example.com/oauth2/default",
        "http://localhost.example.com/oauth2/default",
        "ftp://127.0.0.1/oauth2/default",
        "file:///etc/passwd",
        "https:///oauth2/default",
        "http://[::1/oauth2/default",
    ],
)
def test_insecure_issuer_rejected_before_any_network_access(url: str) -> None:
    settings = IdentitySettings(issuer=url, audience="api://airlock")
    # The constructor refuses it, so start() (and its network access) is never reached.
    with pytest.raises(OidcConfigError, match="issuer"):
        OidcVerifier(settings)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.okta.com/oauth2/default",
        "http://127.0.0.1:8080/oauth2/default",
        "http://127.8.9.10/oauth2/default",
        "http://[::1]:8080/oauth2/default",
        "http://localhost/oauth2/default",
        "http://LOCALHOST:9000/oauth2/default",
    ],
)
def test_https_or_loopback_endpoints_accepted(url: str) -> None:
    check_endpoint_url(url, "issuer")


async def test_close_is_idempotent_and_verify_needs_start(issuer: TestIssuer) -> None:
    verifier = OidcVerifier(settings_for(issuer))
    with pytest.raises(RuntimeError, match="start"):
        await verifier.verify(issuer.mint())
    await verifier.start()
    await verifier.close()
    await verifier.close()


async def test_sign_in_endpoints_come_from_discovery(issuer: TestIssuer) -> None:
    async with running(settings_for(issuer)) as verifier:
        endpoints = await verifier.sign_in_endpoints()
        assert endpoints.authorization == issuer.url + "/v1/authorize"
        assert endpoints.token == issuer.url + "/v1/token"


def id_token(issuer: TestIssuer, **claims: Any) -> str:
    base = {"aud": "desk-client", "nonce": "n-1", "groups": None}
    return issuer.mint(
        sub="dba-1",
        claims_overrides={k: v for k, v in {**base, **claims}.items() if v is not None},
        drop_claims=[k for k, v in {**base, **claims}.items() if v is None],
    )


async def test_id_token_is_checked_for_the_client_and_the_sign_ins_nonce(
    issuer: TestIssuer, clock: FakeClock
) -> None:
    async with running(settings_for(issuer), clock) as verifier:
        check = verifier.verify_id_token
        # No groups claim needed: the session's groups come from the access token.
        assert await check(id_token(issuer), client_id="desk-client", nonce="n-1") == "dba-1"
        refusals = {
            "ID token nonce does not match this sign-in": id_token(issuer, nonce="n-2"),
            "ID token invalid": id_token(issuer, nonce=None),  # a required claim is missing
            "ID token was issued to another client": id_token(issuer, aud="other-client"),
            "ID token issuer mismatch": id_token(issuer, iss="https://evil.example"),
            "ID token expired": id_token(issuer, exp=int(clock.now) - 3600),
            "ID token names an unknown key id": issuer.mint(
                claims_overrides={"aud": "desk-client", "nonce": "n-1"}, key=new_key()
            ),
            "ID token algorithm not allowed": issuer.forge(
                {"alg": "HS256", "kid": issuer.signing_key.kid},
                {"aud": "desk-client", "nonce": "n-1"},
                signature=b"x",
            ),
        }
        for message, token in refusals.items():
            with pytest.raises(InvalidToken, match=f"^{message}$"):
                await check(token, client_id="desk-client", nonce="n-1")
