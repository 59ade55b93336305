"""A development OIDC issuer, so Airlock can be tried with no Okta.

Off unless the config says `dev_issuer: true`. It serves a discovery document
and a JWKS on the API listener, and the gateway verifies its tokens through the
very same discovery/JWKS path as a real issuer's: nothing is trusted because it
is local. Its RSA key is kept in data_dir so `airlock dev-token` (another
process) can mint tokens the running gateway accepts.

It also signs people in as an identity provider does, so the web page's SSO sign-in
(authorization code + PKCE) runs end to end with no Okta: its authorize endpoint shows
a small form to pick a subject and groups (development only: whoever reaches it may be
anyone), and its token endpoint exchanges a code as a real issuer must: once, within a
minute, for the client and redirect it was issued for, with the PKCE verifier whose
S256 challenge the authorization request sent, and the client secret of a
confidential client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from proxy.config import DEV_ISSUER_PATH

KEY_FILE = "dev-issuer/signing-key.pem"
#: A code not exchanged within this is refused.
CODE_TTL_S = 60.0
#: Codes outstanding at most; the oldest go first.
MAX_CODES = 1_000
TOKEN_TTL_S = 3600.0

_AUTHORIZE_PARAMETERS = (
    "client_id",
    "redirect_uri",
    "state",
    "nonce",
    "scope",
    "code_challenge",
    "code_challenge_method",
)


@dataclass(frozen=True, slots=True)
class DevClient:
    redirect_uris: frozenset[str]
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class _Grant:
    """What an authorization code stands for, until it is exchanged."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    subject: str
    groups: tuple[str, ...]
    issued_at: float


class _TokenError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class DevIssuer:
    def __init__(self, data_dir: Path, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._key = _load_or_create_key(data_dir / KEY_FILE)
        public_jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        self.kid = _thumbprint(public_jwk)
        self._jwk = {**public_jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}
        self.clients: dict[str, DevClient] = {}
        self._codes: dict[str, _Grant] = {}

    def register_client(
        self, client_id: str, redirect_uris: Iterable[str], secret: str | None = None
    ) -> None:
        """Let `client_id` sign people in, sending them back to one of `redirect_uris`
        (a client registered again gets these redirects added)."""
        known = self.clients.get(client_id)
        uris = frozenset(redirect_uris) | (known.redirect_uris if known else frozenset())
        self.clients[client_id] = DevClient(uris, secret)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/v1/keys",
            "authorization_endpoint": f"{self.issuer}/v1/authorize",
            "token_endpoint": f"{self.issuer}/v1/token",
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["code", "token"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": [
                "none",
                "client_secret_basic",
                "client_secret_post",
            ],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._jwk]}

    def mint(
        self,
        sub: str,
        groups: Iterable[str],
        *,
        ttl_s: float = 3600.0,
        email: str | None = None,
        now: float | None = None,
    ) -> str:
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "groups": list(groups),
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(ttl_s),
            "jti": uuid.uuid4().hex,
        }
        if email:
            claims["email"] = email
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    def mint_id_token(
        self, sub: str, client_id: str, nonce: str | None, *, now: float | None = None
    ) -> str:
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": client_id,
            "sub": sub,
            "iat": issued,
            "exp": issued + int(TOKEN_TTL_S),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    # --- the authorization code flow

    async def authorize_form(self, request: web.Request) -> web.Response:
        """GET: the sign-in form, for a known client and one of its redirects."""
        query = request.query
        refused = self._check_client(query.get("client_id", ""), query.get("redirect_uri", ""))
        if refused is not None:
            return refused
        if query.get("response_type") != "code":
            return _back(query, "unsupported_response_type", "only response_type=code")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return _back(query, "invalid_request", "PKCE with S256 is required")
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(query[name])}">'
            for name in _AUTHORIZE_PARAMETERS
            if name in query
        )
        return _page(
            "<h1>Development issuer: sign in</h1>"
            f"<p>Signing in to <strong>{html.escape(query['client_id'])}</strong>. "
            "Pick who you are; this issuer is for development only.</p>"
            f'<form method="post" action="{DEV_ISSUER_PATH}/v1/authorize">{hidden}'
            '<p><label>Subject <input name="subject" required value="dba-1"></label></p>'
            '<p><label>Groups (comma-separated) <input name="groups" value="oncall-dba">'
            "</label></p>"
            '<p><button type="submit">Sign in</button></p></form>'
        )

    async def authorize(self, request: web.Request) -> web.Response:
        """POST (the form): a one-time code, and the browser back to the client with it."""
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        client_id, redirect_uri = form.get("client_id", ""), form.get("redirect_uri", "")
        refused = self._check_client(client_id, redirect_uri)
        if refused is not None:
            return refused
        challenge = form.get("code_challenge", "")
        if form.get("code_challenge_method") != "S256" or not challenge:
            return _back(form, "invalid_request", "PKCE with S256 is required")
        subject = form.get("subject", "").strip()
        if not subject:
            return _back(form, "access_denied", "no subject was given")
        groups = tuple(g.strip() for g in form.get("groups", "").split(",") if g.strip())
        now = time.time()
        for stale in [c for c, g in self._codes.items() if now - g.issued_at > CODE_TTL_S]:
            del self._codes[stale]
        while len(self._codes) >= MAX_CODES:
            del self._codes[next(iter(self._codes))]
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Grant(
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=challenge,
            nonce=form.get("nonce") or None,
            subject=subject,
            groups=groups,
            issued_at=now,
        )
        return _redirect(redirect_uri, {"code": code, "state": form.get("state")})

    async def token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        try:
            body = self._exchange(request, form)
        except _TokenError as error:
            body = {"error": error.error, "error_description": error.description}
            return web.json_response(body, status=error.status, headers=_NO_STORE)
        return web.json_response(body, headers=_NO_STORE)

    def _exchange(self, request: web.Request, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != "authorization_code":
            raise _TokenError("unsupported_grant_type", "only authorization_code")
        client_id, secret = _client_credentials(request, form)
        client = self.clients.get(client_id)
        if client is None:
            raise _TokenError("invalid_client", "unknown client", 401)
        if client.secret is not None and (
            secret is None or not hmac.compare_digest(secret.encode(), client.secret.encode())
        ):
            raise _TokenError("invalid_client", "client authentication failed", 401)
        # Taken out first: a code is exchanged once, whether this try is good or not.
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or time.time() - grant.issued_at > CODE_TTL_S:
            raise _TokenError("invalid_grant", "the code is unknown, expired or already used")
        if grant.client_id != client_id:
            raise _TokenError("invalid_grant", "the code was issued to another client")
        if grant.redirect_uri != form.get("redirect_uri"):
            raise _TokenError("invalid_grant", "redirect_uri does not match the authorization")
        verifier = form.get("code_verifier", "")
        if not verifier or not hmac.compare_digest(
            _s256(verifier).encode(), grant.code_challenge.encode()
        ):
            raise _TokenError("invalid_grant", "PKCE verification failed")
        return {
            "token_type": "Bearer",
            "expires_in": int(TOKEN_TTL_S),
            "access_token": self.mint(grant.subject, grant.groups, ttl_s=TOKEN_TTL_S),
            "id_token": self.mint_id_token(grant.subject, client_id, grant.nonce),
            "scope": "openid",
        }

    def _check_client(self, client_id: str, redirect_uri: str) -> web.Response | None:
        """An error page (never a redirect) for an unknown client or redirect."""
        client = self.clients.get(client_id)
        if client is None:
            return _page("<h1>Unknown client</h1><p>No such client_id.</p>", status=400)
        if redirect_uri not in client.redirect_uris:
            return _page(
                "<h1>Unknown redirect</h1><p>redirect_uri is not registered for this client.</p>",
                status=400,
            )
        return None

    def routes(self) -> list[web.RouteDef]:
        async def discovery(_request: web.Request) -> web.Response:
            return web.json_response(self.discovery())

        async def keys(_request: web.Request) -> web.Response:
            return web.json_response(self.jwks())

        return [
            web.get(f"{DEV_ISSUER_PATH}/.well-known/openid-configuration", discovery),
            web.get(f"{DEV_ISSUER_PATH}/v1/keys", keys),
            web.get(f"{DEV_ISSUER_PATH}/v1/authorize", self.authorize_form),
            web.post(f"{DEV_ISSUER_PATH}/v1/authorize", self.authorize),
            web.post(f"{DEV_ISSUER_PATH}/v1/token", self.token),
        ]


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _client_credentials(request: web.Request, form: dict[str, str]) -> tuple[str, str | None]:
    """(client_id, secret) from HTTP Basic (client_secret_basic) or the form."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except ValueError:
            raise _TokenError("invalid_client", "malformed Basic credentials", 401) from None
        user, _, password = decoded.partition(":")
        return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)
    return form.get("client_id", ""), form.get("client_secret")


def _back(params: Mapping[str, str], error: str, description: str) -> NoReturn:
    """The browser back to the (checked) redirect with an OAuth error."""
    _redirect(
        params.get("redirect_uri", ""),
        {"error": error, "error_description": description, "state": params.get("state")},
    )


def _redirect(uri: str, params: dict[str, str | None]) -> NoReturn:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if urllib.parse.urlsplit(uri).query else "?"
    raise web.HTTPSeeOther(f"{uri}{separator}{query}")


def _page(content: str, status: int = 200) -> web.Response:
    return web.Response(
        text=(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Development issuer</title></head>"
            f'<body style="font: 15px system-ui, sans-serif; margin: 2rem">{content}</body></html>'
        ),
        status=status,
        content_type="text/html",
        # No form-action: the form's answer redirects to the client's site.
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "frame-ancestors 'none'; base-uri 'none'",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint: a stable kid for the same key across restarts."""
    members = json.dumps(
        {k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(members.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an RSA key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(pem)
    return key
