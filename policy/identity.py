"""Who a client is: verifying an OIDC access token against a key set, purely.

Fetching keys (discovery, JWKS, caching) is I/O and lives in proxy/http/oidc.py; this
module only decides, given the token, the keys and the clock, whether the token
proves an identity. See ../shared/reference/jwt_attacks.md for the cases it rejects.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.exceptions import InvalidJTIError, InvalidSubjectError
from jwt.types import Options

from policy.errors import AuthenticationFailed


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    issuer: str
    audience: str
    groups_claim: str = "groups"
    #: Fixed allowlist; never "none", never HMAC.
    algorithms: tuple[str, ...] = ("RS256",)
    leeway_s: float = 60.0
    #: Oldest `iat` accepted, so a long-lived token minted long ago is refused.
    max_token_age_s: float = 24 * 3600.0
    max_token_bytes: int = 8192
    #: Okta access tokens carry `cid`; when set, it must match.
    client_id: str | None = None
    #: Refresh the cached JWKS at least this often.
    jwks_lifespan_s: float = 300.0
    #: At most one refetch for an unknown kid per this many seconds.
    jwks_refetch_cooldown_s: float = 30.0
    http_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    issuer: str
    groups: frozenset[str]
    expires_at: float
    email: str | None = None
    token_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


class InvalidToken(AuthenticationFailed):
    """The token does not prove an identity. The message says why, never what it was."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class UnknownKeyId(InvalidToken):
    """The token names a key id the key set lacks: the caller may refetch the JWKS once."""


MIN_RSA_KEY_BITS = 2048

#: Claims a token must carry whatever the configuration says.
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def verify_token(
    token: str, keys: Mapping[str, jwt.PyJWK], settings: IdentitySettings, now: float
) -> Identity:
    """Verify `token` with `keys` at time `now`, or raise InvalidToken with the reason."""
    # Cheap structural checks come first so an oversized or malformed token costs
    # no decoding, no key lookup and no signature check.
    if not isinstance(token, str):
        raise InvalidToken("token is not text")
    # Characters, not bytes, but a non-ASCII token is refused just below anyway.
    if len(token) > settings.max_token_bytes:
        raise InvalidToken("token too large")
    if not token.isascii():
        raise InvalidToken("malformed token: not ASCII")
    segments = token.split(".")
    if len(segments) != 3:
        raise InvalidToken("malformed token: expected 3 segments")
    header = _json_object(_b64url(segments[0], "header"), "header")
    # The payload is parsed strictly here as well: PyJWT's own json.loads lets
    # the last duplicate win, which another component might read differently.
    payload = _json_object(_b64url(segments[1], "payload"), "payload")
    _b64url(segments[2], "signature")

    algorithms = allowed_algorithms(settings)
    alg = header.get("alg")
    if alg is None:
        raise InvalidToken("malformed token: no algorithm")
    if alg not in algorithms:
        raise InvalidToken("algorithm not allowed")
    if "crit" in header:
        raise InvalidToken("critical header extensions are not supported")
    if "b64" in header:
        raise InvalidToken("unencoded payloads are not supported")
    # jku, x5u, jwk and x5c are deliberately never read: the key comes only from
    # the issuer's JWKS, looked up by kid.
    if "kid" not in header:
        raise InvalidToken("token has no key id")
    kid = header["kid"]
    if not isinstance(kid, str):
        raise InvalidToken("key id is not a string")
    key = keys.get(kid)
    if key is None:
        raise UnknownKeyId("unknown key id")
    if key.algorithm_name != alg:
        raise InvalidToken("algorithm does not match the key")
    if isinstance(key.key, RSAPublicKey | RSAPrivateKey) and key.key.key_size < MIN_RSA_KEY_BITS:
        raise InvalidToken("signing key too weak")

    _check_signature_and_claims(token, key, algorithms, settings)
    return _identity(payload, settings, now)


def allowed_algorithms(settings: IdentitySettings) -> tuple[str, ...]:
    """The configured algorithms minus those no setting may enable (none, HMAC)."""
    # HMAC would let anyone holding the public key (everyone) sign tokens.
    return tuple(
        alg
        for alg in settings.algorithms
        if isinstance(alg, str) and alg.lower() != "none" and not alg.upper().startswith("HS")
    )


def _check_signature_and_claims(
    token: str, key: jwt.PyJWK, algorithms: tuple[str, ...], settings: IdentitySettings
) -> None:
    # PyJWT reads the wall clock for exp/nbf/iat; those are checked in _identity
    # against the `now` we were given, so this stays deterministic.
    options: Options = {
        "require": list(REQUIRED_CLAIMS),
        "strict_aud": True,
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "enforce_minimum_key_length": True,
    }
    # PyJWT's messages never carry the token, but its exceptions are dropped
    # (`from None`) so nothing derived from the token rides along in a traceback.
    try:
        jwt.PyJWT().decode(
            token,
            key,
            algorithms=list(algorithms),
            options=options,
            audience=settings.audience,
            issuer=settings.issuer,
        )
    except jwt.InvalidSignatureError:
        raise InvalidToken("signature invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"missing required claim: {_claim_name(exc.claim)}") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("audience mismatch") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("issuer mismatch") from None
    except InvalidSubjectError:
        raise InvalidToken("subject is not a string") from None
    except InvalidJTIError:
        raise InvalidToken("token id is not a string") from None
    except jwt.InvalidAlgorithmError:
        raise InvalidToken("algorithm not allowed") from None
    except jwt.InvalidKeyError:
        raise InvalidToken("signing key rejected") from None
    except jwt.DecodeError:
        raise InvalidToken("malformed token") from None
    except jwt.InvalidTokenError:
        raise InvalidToken("invalid token") from None


def _identity(claims: dict[str, Any], settings: IdentitySettings, now: float) -> Identity:
    leeway = settings.leeway_s
    exp = _numeric_date(claims, "exp")
    iat = _numeric_date(claims, "iat")
    if exp <= now - leeway:
        raise InvalidToken("token expired")
    if "nbf" in claims and _numeric_date(claims, "nbf") > now + leeway:
        raise InvalidToken("token not yet valid")
    if iat > now + leeway:
        raise InvalidToken("token issued in the future")
    if iat < now - settings.max_token_age_s - leeway:
        raise InvalidToken("token too old")

    if settings.client_id is not None and claims.get("cid") != settings.client_id:
        raise InvalidToken("client id mismatch")

    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("subject is empty")
    groups = claims.get(settings.groups_claim)
    # A bare string is refused rather than promoted to a one-element list: the
    # IdP emits a list, and a string here means a misconfigured claim.
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InvalidToken("missing or malformed groups claim")

    email = claims.get("email")
    token_id = claims.get("jti")
    return Identity(
        subject=subject,
        issuer=claims["iss"],
        groups=frozenset(groups),
        expires_at=float(exp),
        email=email if isinstance(email, str) else None,
        token_id=token_id if isinstance(token_id, str) else None,
        claims=claims,
    )


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    # bool is an int subclass; 1e400 parses to inf: neither is a date.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"malformed {name} claim")
    if not math.isfinite(value):
        raise InvalidToken(f"malformed {name} claim")
    return float(value)


def _claim_name(claim: object) -> str:
    # Only our fixed list reaches MissingRequiredClaimError; anything else is not echoed.
    return claim if isinstance(claim, str) and claim in REQUIRED_CLAIMS else "unknown"


def _b64url(segment: str, what: str) -> bytes:
    # Strict: alphabet only, no padding, canonical trailing bits, so a token has
    # exactly one spelling (no malleated variants slipping past a cache or denylist).
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise InvalidToken(f"malformed token: {what} is not base64url")
    padded = segment + "=" * (-len(segment) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded)
    except binascii.Error:
        raise InvalidToken(f"malformed token: {what} is not base64url") from None
    if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != segment:
        raise InvalidToken(f"malformed token: {what} is not canonical base64url")
    return raw


class _DuplicateKey(ValueError):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _DuplicateKey
        result[name] = value
    return result


def _reject_constant(_name: str) -> None:
    raise ValueError("non-finite number")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        value = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except _DuplicateKey:
        raise InvalidToken(f"malformed token: duplicate key in {what}") from None
    except (ValueError, RecursionError):
        raise InvalidToken(f"malformed token: {what} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"malformed token: {what} is not a JSON object")
    return value
