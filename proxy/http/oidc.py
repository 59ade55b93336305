"""The I/O side of identity: OIDC discovery, JWKS fetching and caching.

`OidcVerifier` finds the issuer's JWKS by discovery, caches the key set, refetches
it (rate limited, one fetch shared by all waiters) when a token names an unknown
kid, and keeps the last good set through an issuer outage. Deciding whether a
token is valid is policy/identity.py's pure `verify_token`; only fetching is here.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt

from policy.identity import (
    Identity,
    IdentitySettings,
    InvalidToken,
    UnknownKeyId,
    allowed_algorithms,
    verify_token,
)
from proxy.addresses import is_loopback
from proxy.errors import IssuerUnavailable

log = logging.getLogger("airlock.oidc")

#: Discovery documents and key sets are a few KiB; anything near this is not one.
MAX_DOCUMENT_BYTES = 1024 * 1024

DISCOVERY_PATH = "/.well-known/openid-configuration"


class OidcConfigError(ValueError):
    """The identity configuration, or what the issuer advertises, cannot be trusted."""


@dataclass(frozen=True, slots=True)
class SignInEndpoints:
    """Where a browser signs in (authorization code flow), from the discovery document."""

    authorization: str
    token: str


class _FetchFailed(Exception):
    """A fetch failed in a way that may heal by itself (network, 5xx, bad body)."""


def check_endpoint_url(url: str, what: str) -> None:
    """Require https, or plain http to a loopback host only (local test issuers)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise OidcConfigError(f"{what} {url!r} is not a URL") from None
    if not host:
        raise OidcConfigError(f"{what} {url!r} has no host")
    if parts.scheme == "https":
        return
    if parts.scheme == "http":
        if is_loopback(host):
            return
        raise OidcConfigError(
            f"{what} {url!r} must use https (plain http is allowed on loopback only)"
        )
    raise OidcConfigError(f"{what} {url!r} must be an https URL")


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """Signing keys by kid; keys for encryption, without a kid, or unusable are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchFailed("JWKS is not an object with a 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use") not in (None, "sig"):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if kid in keys:
            # Two keys under one kid would make the choice of key arbitrary.
            log.warning("JWKS publishes kid %r twice; keeping the first", kid)
            continue
        try:
            keys[kid] = jwt.PyJWK(jwk)
        # PyJWK reports most bad keys as PyJWTError, but a non-string `alg` or
        # `kty` surfaces as TypeError; one bad key must not sink the whole set.
        except (jwt.PyJWTError, TypeError, ValueError, KeyError) as exc:
            log.warning("JWKS key %r skipped: %s", kid, exc)
    if not keys:
        raise _FetchFailed("JWKS has no usable signing key")
    return keys


class OidcVerifier:
    """Verifies access tokens against the configured issuer's published keys."""

    def __init__(
        self, settings: IdentitySettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        # Checked before any network access, so a bad config fails at startup.
        check_endpoint_url(settings.issuer, "issuer")
        self._settings = settings
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._jwks_uri: str | None = None
        self._sign_in: SignInEndpoints | None = None
        self._keys: Mapping[str, jwt.PyJWK] = {}
        self._keys_fetched_at: float | None = None
        self._last_attempt_at: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        #: JWKS fetches attempted (successful or not), for tests and metrics.
        self.fetch_count = 0

    @property
    def keys(self) -> Mapping[str, jwt.PyJWK]:
        """The key set in use (the last good one)."""
        return self._keys

    async def start(self) -> None:
        """Discover the JWKS and fetch it; an unreachable issuer is retried on first use."""
        if self._session is not None:
            raise RuntimeError("OidcVerifier already started")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.http_timeout_s)
        )
        try:
            await self._discover()
        except _FetchFailed as exc:
            log.warning("issuer discovery failed at start, will retry on first use: %s", exc)
            return
        except OidcConfigError:
            await self.close()
            raise
        await self._refresh()

    async def close(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.cancel()
            # wait() rather than await: the task's CancelledError is expected and
            # must not be confused with a cancellation of close() itself.
            await asyncio.wait([inflight])
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def verify(self, token: str) -> Identity:
        """The identity the token proves, or InvalidToken / IssuerUnavailable."""
        if self._session is None:
            raise RuntimeError("OidcVerifier.start() was not awaited")
        if self._keys_stale():
            await self._refresh()
        if not self._keys:
            raise IssuerUnavailable()
        try:
            return verify_token(token, self._keys, self._settings, now=self._clock())
        except UnknownKeyId:
            # Maybe the issuer rotated keys: refetch (rate limited), then try once more.
            await self._refresh()
            return verify_token(token, self._keys, self._settings, now=self._clock())

    async def sign_in_endpoints(self) -> SignInEndpoints:
        """The issuer's authorization and token endpoints, discovered on first need; raises
        IssuerUnavailable when the issuer cannot be reached, OidcConfigError when it does
        not advertise them."""
        if self._session is None:
            raise RuntimeError("OidcVerifier.start() was not awaited")
        if self._sign_in is None:
            try:
                await self._discover()
            except _FetchFailed as exc:
                log.warning("issuer discovery failed: %s", exc)
                raise IssuerUnavailable() from None
        if self._sign_in is None:
            raise OidcConfigError(
                "the issuer's discovery document has no authorization_endpoint and "
                "token_endpoint: it does not offer the authorization code flow"
            )
        return self._sign_in

    async def verify_id_token(self, token: str, *, client_id: str, nonce: str) -> str:
        """The subject of an OIDC ID token issued to `client_id` for the sign-in that sent
        `nonce`, checked with the issuer's keys (issuer, audience, algorithm, expiry), or
        InvalidToken. The session's identity comes from the access token, verified as every
        API token is; the ID token proves the sign-in answers this browser's request."""
        if self._session is None:
            raise RuntimeError("OidcVerifier.start() was not awaited")
        if self._keys_stale():
            await self._refresh()
        try:
            claims = self._id_token_claims(token, client_id)
        except UnknownKeyId:
            await self._refresh()
            claims = self._id_token_claims(token, client_id)
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent, nonce):
            raise InvalidToken("ID token nonce does not match this sign-in")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("ID token subject is empty")
        return subject

    def _id_token_claims(self, token: str, client_id: str) -> dict[str, Any]:
        settings = self._settings
        if len(token) > settings.max_token_bytes:
            raise InvalidToken("ID token too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed ID token") from None
        algorithms = allowed_algorithms(settings)
        kid, alg = header.get("kid"), header.get("alg")
        if alg not in algorithms:
            raise InvalidToken("ID token algorithm not allowed")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise UnknownKeyId("ID token names an unknown key id")
        if key.algorithm_name != alg:
            raise InvalidToken("ID token algorithm does not match the key")
        now = self._clock()
        try:
            claims: dict[str, Any] = jwt.PyJWT().decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=client_id,
                issuer=settings.issuer,
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub", "nonce"],
                    "strict_aud": False,  # an ID token may name other audiences beside us
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        # Dropped (`from None`): nothing derived from the token rides along in a traceback.
        except jwt.InvalidAudienceError:
            raise InvalidToken("ID token was issued to another client") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("ID token issuer mismatch") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("ID token invalid") from None
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise InvalidToken("ID token has a malformed exp claim")
        if exp <= now - settings.leeway_s:
            raise InvalidToken("ID token expired")
        return claims

    async def ensure_keys(self) -> bool:
        """Whether a key set is held, refetching it first (rate limited) when it is stale
        or missing: the readiness check of the issuer's keys."""
        if self._session is not None and self._keys_stale():
            await self._refresh()
        return bool(self._keys)

    def _keys_stale(self) -> bool:
        if not self._keys or self._keys_fetched_at is None:
            return True
        return self._clock() - self._keys_fetched_at >= self._settings.jwks_lifespan_s

    async def _refresh(self) -> None:
        """Fetch the JWKS unless a fetch ran within the cooldown; join one in flight."""
        if self._inflight is None:
            now = self._clock()
            if (
                self._last_attempt_at is not None
                and now - self._last_attempt_at < self._settings.jwks_refetch_cooldown_s
            ):
                return
            self._last_attempt_at = now
            task = asyncio.get_running_loop().create_task(self._fetch_keys())
            task.add_done_callback(self._fetch_done)
            self._inflight = task
        # Shielded: a client giving up on its login must not cancel the fetch
        # other logins are waiting for.
        await asyncio.shield(self._inflight)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch_keys(self) -> None:
        try:
            jwks_uri = self._jwks_uri or await self._discover()
            self.fetch_count += 1
            keys = parse_jwks(await self._get_json(jwks_uri))
        except OidcConfigError as exc:
            log.error("issuer misconfigured, cannot fetch its keys: %s", exc)
            return
        except _FetchFailed as exc:
            if self._keys:
                log.warning("JWKS refresh failed, keeping the last good key set: %s", exc)
            else:
                log.warning("JWKS fetch failed and no key set is held yet: %s", exc)
            return
        self._keys = keys
        self._keys_fetched_at = self._clock()
        log.info("JWKS fetched: %d signing keys", len(keys))

    async def _discover(self) -> str:
        """The issuer's jwks_uri, from its discovery document."""
        issuer = self._settings.issuer
        document = await self._get_json(issuer.rstrip("/") + DISCOVERY_PATH)
        if not isinstance(document, dict):
            raise _FetchFailed("discovery document is not a JSON object")
        if document.get("issuer") != issuer:
            raise OidcConfigError(
                f"discovery document names issuer {document.get('issuer')!r}, "
                f"configured issuer is {issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise OidcConfigError("discovery document has no jwks_uri")
        check_endpoint_url(jwks_uri, "jwks_uri")
        authorization = document.get("authorization_endpoint")
        token = document.get("token_endpoint")
        if isinstance(authorization, str) and isinstance(token, str):
            check_endpoint_url(authorization, "authorization_endpoint")
            check_endpoint_url(token, "token_endpoint")
            self._sign_in = SignInEndpoints(authorization, token)
        self._jwks_uri = jwks_uri
        return jwks_uri

    async def _get_json(self, url: str) -> Any:
        if self._session is None:
            raise RuntimeError("OidcVerifier is closed")
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise _FetchFailed(f"GET {url} answered HTTP {response.status}")
                too_large = f"GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes"
                if (response.content_length or 0) > MAX_DOCUMENT_BYTES:
                    raise _FetchFailed(too_large)
                body = bytearray()
                # Read in chunks and stop at the cap, so a huge (or endless) body
                # is never held in memory whole.
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise _FetchFailed(too_large)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _FetchFailed(f"GET {url} failed: {exc!r}") from exc
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _FetchFailed(f"GET {url}: body is not JSON") from exc
