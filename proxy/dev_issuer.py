"""A development OIDC issuer, so Airlock can be tried with no Okta.

Off unless the config says `dev_issuer: true`. It serves a discovery document
and a JWKS on the API listener, and the gateway verifies its tokens through the
very same discovery/JWKS path as a real issuer's: nothing is trusted because it
is local. Its RSA key is kept in data_dir so `airlock dev-token` (another
process) can mint tokens the running gateway accepts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from proxy.config import DEV_ISSUER_PATH

KEY_FILE = "dev-issuer/signing-key.pem"


class DevIssuer:
    def __init__(self, data_dir: Path, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._key = _load_or_create_key(data_dir / KEY_FILE)
        public_jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        self.kid = _thumbprint(public_jwk)
        self._jwk = {**public_jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/v1/keys",
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["token"],
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

    def routes(self) -> list[web.RouteDef]:
        async def discovery(_request: web.Request) -> web.Response:
            return web.json_response(self.discovery())

        async def keys(_request: web.Request) -> web.Response:
            return web.json_response(self.jwks())

        return [
            web.get(f"{DEV_ISSUER_PATH}/.well-known/openid-configuration", discovery),
            web.get(f"{DEV_ISSUER_PATH}/v1/keys", keys),
        ]


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
