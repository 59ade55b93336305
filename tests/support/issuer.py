"""A real OIDC-style issuer for tests: discovery and JWKS over HTTP on 127.0.0.1.

It mints RS256 access tokens shaped like Okta's (iss, aud, sub, iat, exp, cid,
groups, jti), rotates and unpublishes keys, can go down (503), and can sign with
keys it never publishes, which is how tests play the attacker.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

AUDIENCE = "api://airlock"
CLIENT_ID = "0oa-airlock-test"
ISSUER_PATH = "/oauth2/default"
DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
JWKS_SUFFIX = "/v1/keys"
#: Answers 302 to the JWKS, for checking that redirects are not followed.
REDIRECT_SUFFIX = "/v1/keys-moved"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    alg: str = "RS256"

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, use="sig", alg=self.alg)
        return jwk

    def pyjwk(self) -> jwt.PyJWK:
        return jwt.PyJWK(self.public_jwk())

    def sign(self, signing_input: bytes) -> bytes:
        """A raw RS256 signature, for tokens PyJWT would refuse to encode."""
        return self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


def new_key(kid: str | None = None, *, bits: int = 2048, alg: str = "RS256") -> SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return SigningKey(kid=kid or f"kid-{uuid.uuid4().hex[:12]}", private_key=private_key, alg=alg)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


class TestIssuer:
    """An issuer at http://127.0.0.1:PORT/oauth2/default, served from a thread."""

    __test__ = False

    def __init__(self, *, audience: str = AUDIENCE, client_id: str = CLIENT_ID) -> None:
        self.audience = audience
        self.client_id = client_id
        #: When True, discovery and JWKS answer 503.
        self.down = False
        #: Overrides what discovery claims as `issuer` / `jwks_uri`.
        self.advertised_issuer: str | None = None
        self.advertised_jwks_uri: str | None = None
        #: Pads the JWKS document with this many bytes (size-cap tests).
        self.jwks_padding_bytes = 0
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self._lock = threading.Lock()
        self._signing_key = new_key()
        self._published: dict[str, SigningKey] = {self._signing_key.kid: self._signing_key}
        self._extra_jwks: list[dict[str, Any]] = []
        self._server: _IssuerServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("TestIssuer already started")
        self._server = _IssuerServer(self)
        # A short poll interval keeps stop() (which waits for one poll) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="test-issuer",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    @property
    def origin(self) -> str:
        if self._server is None:
            raise RuntimeError("TestIssuer not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        return self.origin + ISSUER_PATH

    @property
    def jwks_uri(self) -> str:
        return self.url + JWKS_SUFFIX

    # -- keys ------------------------------------------------------------------

    @property
    def signing_key(self) -> SigningKey:
        return self._signing_key

    def rotate(self) -> SigningKey:
        """Publish a new key and sign new tokens with it; the old key stays published."""
        key = new_key()
        with self._lock:
            self._published[key.kid] = key
            self._signing_key = key
        return key

    def publish(self, key: SigningKey) -> None:
        with self._lock:
            self._published[key.kid] = key

    def unpublish(self, kid: str) -> None:
        with self._lock:
            self._published.pop(kid, None)

    def publish_raw_jwk(self, jwk: dict[str, Any]) -> None:
        """Add a JWK as is (an encryption key, one without kid, ...)."""
        with self._lock:
            self._extra_jwks.append(jwk)

    def attacker_key(self, kid: str | None = None, *, bits: int = 2048) -> SigningKey:
        """A key that is never published; pass it to mint(key=...)."""
        return new_key(kid, bits=bits)

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            keys = [key.public_jwk() for key in self._published.values()]
            keys.extend(self._extra_jwks)
        return {"keys": keys}

    def pyjwks(self) -> dict[str, jwt.PyJWK]:
        """The published keys as the verifier would hold them."""
        with self._lock:
            return {kid: key.pyjwk() for kid, key in self._published.items()}

    # -- tokens ----------------------------------------------------------------

    def claims(
        self,
        sub: str = "agent-1",
        groups: Iterable[str] = ("data-agents",),
        *,
        ttl_s: float = 600,
        now: float | None = None,
    ) -> dict[str, Any]:
        issued_at = int(time.time() if now is None else now)
        return {
            "ver": 1,
            "jti": f"AT.{uuid.uuid4().hex}",
            "iss": self.url,
            "aud": self.audience,
            "iat": issued_at,
            "exp": int(issued_at + ttl_s),
            "cid": self.client_id,
            "uid": "00u-" + sub,
            "scp": ["openid"],
            "sub": sub,
            "groups": list(groups),
        }

    def mint(
        self,
        sub: str = "agent-1",
        groups: Iterable[str] = ("data-agents",),
        *,
        ttl_s: float = 600,
        claims_overrides: dict[str, Any] | None = None,
        drop_claims: Iterable[str] = (),
        headers_overrides: dict[str, Any] | None = None,
        key: SigningKey | None = None,
        now: float | None = None,
    ) -> str:
        payload = self.claims(sub, groups, ttl_s=ttl_s, now=now)
        payload.update(claims_overrides or {})
        for name in drop_claims:
            payload.pop(name, None)
        signer = key or self._signing_key
        headers: dict[str, Any] = {"kid": signer.kid}
        headers.update(headers_overrides or {})
        with warnings.catch_warnings():
            # Weak keys are minted on purpose to check that the verifier refuses them.
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            return jwt.encode(payload, signer.private_key, algorithm=signer.alg, headers=headers)

    @staticmethod
    def forge(
        header: dict[str, Any] | bytes,
        payload: dict[str, Any] | bytes,
        key: SigningKey | None = None,
        *,
        signature: bytes | None = None,
    ) -> str:
        """A token from raw parts, signed with `key` when given (RS256) or with `signature`."""
        header_raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        payload_raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        signing_input = f"{b64url(header_raw)}.{b64url(payload_raw)}"
        if signature is None:
            signature = key.sign(signing_input.encode("ascii")) if key is not None else b""
        return f"{signing_input}.{b64url(signature)}"

    # -- HTTP ------------------------------------------------------------------

    def _discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.advertised_issuer or self.url,
            "jwks_uri": self.advertised_jwks_uri or self.jwks_uri,
            "authorization_endpoint": self.url + "/v1/authorize",
            "token_endpoint": self.url + "/v1/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def _answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if path == ISSUER_PATH + DISCOVERY_SUFFIX:
            with self._lock:
                self.discovery_fetches += 1
            if self.down:
                return 503, {}, b"unavailable"
            return 200, {}, json.dumps(self._discovery()).encode()
        if path == ISSUER_PATH + JWKS_SUFFIX:
            with self._lock:
                self.jwks_fetches += 1
            if self.down:
                return 503, {}, b"unavailable"
            document = self.jwks()
            if self.jwks_padding_bytes:
                document["padding"] = "x" * self.jwks_padding_bytes
            return 200, {}, json.dumps(document).encode()
        if path == ISSUER_PATH + REDIRECT_SUFFIX:
            return 302, {"Location": self.jwks_uri}, b""
        return 404, {}, b"not found"


class _IssuerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, issuer: TestIssuer) -> None:
        super().__init__(("127.0.0.1", 0), _IssuerHandler)
        self.issuer = issuer


class _IssuerHandler(BaseHTTPRequestHandler):
    server: _IssuerServer

    def do_GET(self) -> None:
        status, headers, body = self.server.issuer._answer(urlsplit(self.path).path)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: request lines on stderr would only clutter test output.
        return


@pytest.fixture
def issuer() -> Iterator[TestIssuer]:
    test_issuer = TestIssuer()
    test_issuer.start()
    try:
        yield test_issuer
    finally:
        test_issuer.stop()


@pytest.fixture(scope="session")
def session_issuer() -> Iterator[TestIssuer]:
    """Shared across the session: mint from it, never rotate, unpublish or take it down."""
    test_issuer = TestIssuer()
    test_issuer.start()
    try:
        yield test_issuer
    finally:
        test_issuer.stop()
