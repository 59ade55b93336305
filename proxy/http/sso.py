"""SSO sign-in for the web page: the OIDC authorization code flow with PKCE (S256).

The gateway is the OIDC client (`web.client_id`). `SsoClient.start` makes a sign-in:
a random `state`, `nonce` and PKCE verifier, kept here under a random key that the
browser holds in a short-lived cookie, and the issuer's authorization URL to send the
browser to. `SsoClient.finish` takes the browser back: the cookie's sign-in (used once,
whatever happens), its `state` compared with the one the issuer sent back, the code
exchanged at the token endpoint (with the verifier, and the client secret for a
confidential client), the ID token checked for this client and this sign-in's nonce.
It returns the access token, which the page verifies exactly as the API verifies
every token before it makes a page session of it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from policy.errors import AirlockError
from proxy.config import WebClientSettings
from proxy.http.oidc import MAX_DOCUMENT_BYTES, SignInEndpoints

#: How long a person has between leaving for the issuer and coming back.
SIGN_IN_TTL_S = 600.0
#: Sign-ins in progress kept at most; the oldest go first when a new one needs room.
MAX_SIGN_INS = 1_000
TOKEN_REQUEST_TIMEOUT_S = 10.0


class SignInFailed(Exception):
    """A sign-in that makes no session; the message says why, for the person, and never
    carries a code, a token or a secret."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SignInIssuer(Protocol):
    async def sign_in_endpoints(self) -> SignInEndpoints: ...

    async def verify_id_token(self, token: str, *, client_id: str, nonce: str) -> str: ...


@dataclass(frozen=True, slots=True)
class _SignIn:
    state: str
    nonce: str
    verifier: str
    token_endpoint: str
    started_at: float


@dataclass(frozen=True, slots=True)
class SignedIn:
    """What the issuer answered: the access token for the page session, and the
    subject its ID token names (which must be the access token's)."""

    access_token: str
    subject: str


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class SsoClient:
    def __init__(
        self,
        web: WebClientSettings,
        issuer: SignInIssuer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.web = web
        self.issuer = issuer
        self.clock = clock
        self._sign_ins: dict[str, _SignIn] = {}

    async def start(self) -> tuple[str, str]:
        """A new sign-in: (the key for the browser's cookie, the URL to send it to)."""
        endpoints = await self.issuer.sign_in_endpoints()
        self._forget_expired()
        while len(self._sign_ins) >= MAX_SIGN_INS:
            del self._sign_ins[next(iter(self._sign_ins))]
        sign_in = _SignIn(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),  # 64 characters: RFC 7636 wants 43 to 128
            token_endpoint=endpoints.token,
            started_at=self.clock(),
        )
        key = secrets.token_urlsafe(32)
        self._sign_ins[key] = sign_in
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.web.client_id,
                "redirect_uri": self.web.redirect_url,
                "scope": " ".join(self.web.scopes),
                "state": sign_in.state,
                "nonce": sign_in.nonce,
                "code_challenge": pkce_challenge(sign_in.verifier),
                "code_challenge_method": "S256",
            },
            quote_via=urllib.parse.quote,
        )
        separator = "&" if urllib.parse.urlsplit(endpoints.authorization).query else "?"
        return key, f"{endpoints.authorization}{separator}{query}"

    async def finish(self, key: str, answer: Mapping[str, str]) -> SignedIn:
        """The issuer's answer (the callback's query) for the sign-in under `key`."""
        # Taken out first: a sign-in is answered once, whether this answer is good or not.
        sign_in = self._sign_ins.pop(key, None)
        if sign_in is None or self.clock() - sign_in.started_at > SIGN_IN_TTL_S:
            raise SignInFailed(
                "this browser has no sign-in in progress (it expired, was already used, "
                "or was started elsewhere); sign in again"
            )
        state = answer.get("state", "")
        if not state or not hmac.compare_digest(state.encode(), sign_in.state.encode()):
            raise SignInFailed(
                "the answer from the identity provider does not belong to this browser's "
                "sign-in (its state does not match); sign in again"
            )
        error = answer.get("error")
        if error:
            description = answer.get("error_description", "")
            said = f"{error}: {description}" if description else error
            raise SignInFailed(f"the identity provider refused the sign-in ({said})")
        code = answer.get("code", "")
        if not code:
            raise SignInFailed("the identity provider sent no authorization code")
        tokens = await self._exchange(sign_in, code)
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str) or not id_token:
            raise SignInFailed(
                "the identity provider returned no ID token (the web client needs the openid scope)"
            )
        if not isinstance(access_token, str) or not access_token:
            raise SignInFailed("the identity provider returned no access token")
        try:
            subject = await self.issuer.verify_id_token(
                id_token, client_id=self.web.client_id, nonce=sign_in.nonce
            )
        except AirlockError as refused:
            raise SignInFailed(f"the ID token was refused: {refused.message}") from None
        return SignedIn(access_token=access_token, subject=subject)

    async def _exchange(self, sign_in: _SignIn, code: str) -> dict[str, object]:
        """The token endpoint's answer to the code, or SignInFailed with its error."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.web.redirect_url,
            "code_verifier": sign_in.verifier,
        }
        headers = {"Accept": "application/json"}
        if self.web.client_secret is None:
            form["client_id"] = self.web.client_id  # a public client names itself
        else:
            # client_secret_basic, which RFC 6749 says every server supports: each part
            # form-encoded, then base64 (section 2.3.1).
            user = urllib.parse.quote_plus(self.web.client_id)
            password = urllib.parse.quote_plus(self.web.client_secret)
            credentials = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {credentials}"
        timeout = aiohttp.ClientTimeout(total=TOKEN_REQUEST_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(
                    sign_in.token_endpoint,
                    data=form,
                    allow_redirects=False,
                    headers=headers,
                ) as response,
            ):
                body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            raise SignInFailed(
                "the identity provider's token endpoint could not be reached; try again"
            ) from None
        try:
            document = json.loads(body) if len(body) <= MAX_DOCUMENT_BYTES else None
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            raise SignInFailed(
                f"the identity provider's token endpoint answered HTTP {status} without JSON"
            )
        if status != 200:
            error = document.get("error")
            description = document.get("error_description")
            said = ": ".join(str(part) for part in (error, description) if part)
            raise SignInFailed(
                f"the identity provider refused the code ({said or f'HTTP {status}'})"
            )
        return document

    def _forget_expired(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._sign_ins.items() if now - s.started_at > SIGN_IN_TTL_S]:
            del self._sign_ins[key]
