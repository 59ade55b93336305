"""verify_token against the attack cases of shared/reference/jwt_attacks.md, section 1.

verify_token is pure, so every case runs at a fixed `NOW` with a key set built
in memory. Tokens come from the test issuer's keys (minted with PyJWT, or forged
segment by segment when PyJWT would refuse to produce them).

Audience policy (case 15): `aud` must be exactly our audience as a string. A
list is refused even when it contains ours: Okta access tokens carry a string
`aud`, and a list means a token minted for several APIs at once.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from policy.identity import (
    Identity,
    IdentitySettings,
    InvalidToken,
    UnknownKeyId,
    allowed_algorithms,
    verify_token,
)
from tests.support.issuer import SigningKey, TestIssuer, b64url, new_key

NOW = 1_750_000_000.0
HOUR = 3600


@dataclass
class Kit:
    issuer: TestIssuer
    #: Signs the good tokens; published.
    signer: SigningKey
    #: Also published, under its own kid.
    other: SigningKey
    #: Published, but only 1024 bits.
    weak: SigningKey
    #: Never published.
    attacker: SigningKey
    settings: IdentitySettings
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims = self.issuer.claims(now=NOW)
        claims.update(overrides)
        return claims

    def mint(self, *, now: float = NOW, **kwargs: Any) -> str:
        kwargs.setdefault("key", self.signer)
        return self.issuer.mint(now=now, **kwargs)

    def forge(
        self,
        header: dict[str, Any] | bytes | None = None,
        payload: dict[str, Any] | bytes | None = None,
        *,
        key: SigningKey | None = None,
        signature: bytes | None = None,
    ) -> str:
        """Sign raw parts with `key` (the good signer by default) unless `signature` is given."""
        if header is None:
            header = {"alg": "RS256", "typ": "JWT", "kid": self.signer.kid}
        if payload is None:
            payload = self.claims()
        if signature is None and key is None:
            key = self.signer
        return self.issuer.forge(header, payload, key, signature=signature)

    def header(self, **overrides: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"alg": "RS256", "typ": "JWT", "kid": self.signer.kid}
        header.update(overrides)
        return {name: value for name, value in header.items() if value is not _DROP}

    def verify(self, token: str, **setting_overrides: Any) -> Identity:
        settings = dataclasses.replace(self.settings, **setting_overrides)
        return verify_token(token, self.keys, settings, now=NOW)


_DROP = object()


@pytest.fixture(scope="module")
def kit(session_issuer: TestIssuer) -> Kit:
    signer, other, weak = new_key(), new_key(), new_key(bits=1024)
    kit = Kit(
        issuer=session_issuer,
        signer=signer,
        other=other,
        weak=weak,
        attacker=new_key(),
        settings=IdentitySettings(issuer=session_issuer.url, audience=session_issuer.audience),
    )
    kit.keys = {key.kid: key.pyjwk() for key in (signer, other, weak)}
    return kit


def _hs256_with_public_pem(kit: Kit) -> str:
    """Key confusion: HMAC keyed with the RSA public key, which everyone has."""
    pem = kit.signer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps(kit.header(alg="HS256")).encode())
    payload = b64url(json.dumps(kit.claims()).encode())
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


def _non_canonical_signature(kit: Kit) -> str:
    # A 256-byte signature leaves 4 unused bits in its last base64 character;
    # flipping one of them decodes to the same bytes: a malleated spelling.
    token = kit.mint()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    flipped = alphabet[alphabet.index(token[-1]) ^ 1]
    return token[:-1] + flipped


def _tampered_groups(kit: Kit) -> str:
    header, _, signature = kit.mint().split(".")
    payload = b64url(json.dumps(kit.claims(groups=["oncall-dba"])).encode())
    return f"{header}.{payload}.{signature}"


def _unb64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _with_segment(kit: Kit, index: int, transform: Callable[[str], str]) -> str:
    segments = kit.mint().split(".")
    segments[index] = transform(segments[index])
    return ".".join(segments)


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Kit], str]
    reason: str
    settings: dict[str, Any] = field(default_factory=dict)
    error: type[InvalidToken] = InvalidToken


FAKE_SIG = b"\x01" * 256

REJECTED = [
    # 1: alg none, with and without a signature part.
    Case(
        "01-alg-none",
        lambda k: k.forge(k.header(alg="none"), signature=FAKE_SIG),
        "algorithm not allowed",
    ),
    Case(
        "01-alg-None",
        lambda k: k.forge(k.header(alg="None"), signature=FAKE_SIG),
        "algorithm not allowed",
    ),
    Case(
        "01-alg-none-empty-signature",
        lambda k: k.forge(k.header(alg="none"), signature=b""),
        "malformed token",
    ),
    Case(
        "01-alg-none-even-if-configured",
        lambda k: k.forge(k.header(alg="none"), signature=FAKE_SIG),
        "algorithm not allowed",
        settings={"algorithms": ("RS256", "none")},
    ),
    Case(
        "01-alg-missing", lambda k: k.forge(k.header(alg=_DROP), signature=FAKE_SIG), "no algorithm"
    ),
    # 2: HS256 keyed with the RSA public key.
    Case("02-hs256-public-key", _hs256_with_public_pem, "algorithm not allowed"),
    Case(
        "02-hs256-even-if-configured",
        _hs256_with_public_pem,
        "algorithm not allowed",
        settings={"algorithms": ("RS256", "HS256")},
    ),
    # 3: signed by one published key, kid of another.
    Case(
        "03-wrong-kid",
        lambda k: k.mint(headers_overrides={"kid": k.other.kid}),
        "signature invalid",
    ),
    # 4: kid the key set lacks; the caller may refetch.
    Case(
        "04-unknown-kid",
        lambda k: k.mint(headers_overrides={"kid": "nope"}),
        "unknown key id",
        error=UnknownKeyId,
    ),
    # 5: no kid.
    Case("05-no-kid", lambda k: k.forge(k.header(kid=_DROP)), "token has no key id"),
    # 6: kid that is not a string, or an injection attempt.
    Case("06-kid-int", lambda k: k.forge(k.header(kid=1)), "key id is not a string"),
    Case("06-kid-list", lambda k: k.forge(k.header(kid=[k.signer.kid])), "key id is not a string"),
    Case("06-kid-null", lambda k: k.forge(k.header(kid=None)), "key id is not a string"),
    Case(
        "06-kid-path",
        lambda k: k.forge(k.header(kid="../../../etc/passwd")),
        "unknown key id",
        error=UnknownKeyId,
    ),
    Case(
        "06-kid-sql",
        lambda k: k.forge(k.header(kid="' OR '1'='1")),
        "unknown key id",
        error=UnknownKeyId,
    ),
    # 7-10: time claims (leeway 60 s, max age 24 h).
    Case("07-expired", lambda k: k.mint(now=NOW - 2 * HOUR, ttl_s=HOUR), "token expired"),
    Case(
        "08-nbf-future",
        lambda k: k.mint(claims_overrides={"nbf": NOW + HOUR}),
        "token not yet valid",
    ),
    Case("09-iat-future", lambda k: k.mint(now=NOW + HOUR), "token issued in the future"),
    Case("10-iat-too-old", lambda k: k.mint(now=NOW - 48 * HOUR, ttl_s=72 * HOUR), "token too old"),
    # 11: required claims.
    Case("11-no-exp", lambda k: k.mint(drop_claims=["exp"]), "missing required claim: exp"),
    Case("11-no-iat", lambda k: k.mint(drop_claims=["iat"]), "missing required claim: iat"),
    Case("11-no-iss", lambda k: k.mint(drop_claims=["iss"]), "missing required claim: iss"),
    Case("11-no-aud", lambda k: k.mint(drop_claims=["aud"]), "missing required claim: aud"),
    Case("11-no-sub", lambda k: k.mint(drop_claims=["sub"]), "missing required claim: sub"),
    # 12, 13, 34: issuer compared exactly.
    Case(
        "12-other-issuer",
        lambda k: k.mint(claims_overrides={"iss": "https://evil.example/oauth2/default"}),
        "issuer mismatch",
    ),
    Case(
        "13-issuer-suffix",
        lambda k: k.mint(claims_overrides={"iss": k.issuer.url + "2"}),
        "issuer mismatch",
    ),
    Case(
        "13-issuer-trailing-slash",
        lambda k: k.mint(claims_overrides={"iss": k.issuer.url + "/"}),
        "issuer mismatch",
    ),
    Case(
        "13-issuer-case",
        lambda k: k.mint(claims_overrides={"iss": k.issuer.url.upper()}),
        "issuer mismatch",
    ),
    Case(
        "13-issuer-list",
        lambda k: k.forge(payload=k.claims(iss=[k.issuer.url])),
        "issuer mismatch",
    ),
    Case(
        "34-org-authorization-server",
        lambda k: k.mint(claims_overrides={"iss": k.issuer.origin}),
        "issuer mismatch",
    ),
    # 14, 15, 18: audience, strictly one string equal to ours.
    Case(
        "14-wrong-audience",
        lambda k: k.mint(claims_overrides={"aud": "api://other"}),
        "audience mismatch",
    ),
    Case(
        "15-audience-list-with-ours",
        lambda k: k.mint(claims_overrides={"aud": [k.issuer.audience, "api://other"]}),
        "audience mismatch",
    ),
    Case(
        "15-audience-list-only-ours",
        lambda k: k.mint(claims_overrides={"aud": [k.issuer.audience]}),
        "audience mismatch",
    ),
    Case(
        "18-id-token",
        lambda k: k.mint(claims_overrides={"aud": k.issuer.client_id}),
        "audience mismatch",
    ),
    # 16: groups claim present and a list of strings.
    Case(
        "16-groups-missing",
        lambda k: k.mint(drop_claims=["groups"]),
        "missing or malformed groups claim",
    ),
    Case(
        "16-groups-string",
        lambda k: k.mint(claims_overrides={"groups": "data-agents"}),
        "missing or malformed groups claim",
    ),
    Case(
        "16-groups-null",
        lambda k: k.mint(claims_overrides={"groups": None}),
        "missing or malformed groups claim",
    ),
    Case(
        "16-groups-ints",
        lambda k: k.mint(claims_overrides={"groups": ["data-agents", 7]}),
        "missing or malformed groups claim",
    ),
    Case(
        "16-groups-object",
        lambda k: k.mint(claims_overrides={"groups": {"data-agents": True}}),
        "missing or malformed groups claim",
    ),
    Case(
        "16-groups-nested",
        lambda k: k.mint(claims_overrides={"groups": [["data-agents"]]}),
        "missing or malformed groups claim",
    ),
    Case(
        "16-groups-under-another-name",
        lambda k: k.mint(),
        "missing or malformed groups claim",
        settings={"groups_claim": "airlock_groups"},
    ),
    # 17: issued to another client.
    Case(
        "17-other-client",
        lambda k: k.mint(claims_overrides={"cid": "0oa-other"}),
        "client id mismatch",
        settings={"client_id": "0oa-airlock-test"},
    ),
    Case(
        "17-no-client",
        lambda k: k.mint(drop_claims=["cid"]),
        "client id mismatch",
        settings={"client_id": "0oa-airlock-test"},
    ),
    # 19, 20: jku / x5u / jwk / x5c are never used.
    Case(
        "19-jku-attacker-kid",
        lambda k: k.mint(
            key=k.attacker, headers_overrides={"jku": "https://evil.example/jwks.json"}
        ),
        "unknown key id",
        error=UnknownKeyId,
    ),
    Case(
        "19-jku-real-kid",
        lambda k: k.mint(
            key=k.attacker,
            headers_overrides={"kid": k.signer.kid, "jku": "https://evil.example/jwks.json"},
        ),
        "signature invalid",
    ),
    Case(
        "19-x5u-real-kid",
        lambda k: k.mint(
            key=k.attacker,
            headers_overrides={"kid": k.signer.kid, "x5u": "https://evil.example/cert.pem"},
        ),
        "signature invalid",
    ),
    Case(
        "20-embedded-jwk",
        lambda k: k.mint(
            key=k.attacker, headers_overrides={"kid": k.signer.kid, "jwk": k.attacker.public_jwk()}
        ),
        "signature invalid",
    ),
    Case(
        "20-embedded-x5c",
        lambda k: k.mint(
            key=k.attacker, headers_overrides={"kid": k.signer.kid, "x5c": ["MIIBIjANBgkq"]}
        ),
        "signature invalid",
    ),
    # 21: crit, and the b64 extension it would enable.
    Case(
        "21-crit-unknown",
        lambda k: k.forge(k.header(crit=["exp"], exp=1)),
        "critical header extensions are not supported",
    ),
    Case(
        "21-crit-b64",
        lambda k: k.forge(k.header(crit=["b64"], b64=False)),
        "critical header extensions are not supported",
    ),
    Case(
        "21-b64-without-crit",
        lambda k: k.forge(k.header(b64=False)),
        "unencoded payloads are not supported",
    ),
    # 22: header alg differs from the key's.
    Case(
        "22-rs512-against-rs256-key",
        lambda k: jwt.encode(
            k.claims(), k.signer.private_key, algorithm="RS512", headers={"kid": k.signer.kid}
        ),
        "algorithm does not match the key",
        settings={"algorithms": ("RS256", "RS512")},
    ),
    Case(
        "22-rs512-not-allowed",
        lambda k: jwt.encode(
            k.claims(), k.signer.private_key, algorithm="RS512", headers={"kid": k.signer.kid}
        ),
        "algorithm not allowed",
    ),
    Case(
        "22-es256-not-allowed",
        lambda k: k.forge(k.header(alg="ES256"), signature=b"\x01" * 64),
        "algorithm not allowed",
    ),
    # 23: 1024-bit key in the key set.
    Case("23-weak-key", lambda k: k.mint(key=k.weak), "signing key too weak"),
    # 24: size cap before parsing.
    Case(
        "24-one-megabyte-claim",
        lambda k: k.mint(claims_overrides={"blob": "x" * 1_000_000}),
        "token too large",
    ),
    Case(
        "24-just-over-the-cap",
        lambda k: k.mint(claims_overrides={"blob": "x" * 6500}),
        "token too large",
    ),
    Case("24-not-ascii", lambda k: k.mint() + "é", "malformed token"),
    # 25: strict base64url.
    Case(
        "25-junk-characters",
        lambda k: _with_segment(k, 0, lambda s: s[:4] + "!!!!" + s[4:]),
        "header is not base64url",
    ),
    Case(
        "25-padding",
        lambda k: _with_segment(k, 2, lambda s: s + "=="),
        "signature is not base64url",
    ),
    Case(
        "25-standard-alphabet",
        lambda k: _with_segment(k, 2, lambda s: s.replace("-", "+").replace("_", "/") + "+/"),
        "signature is not base64url",
    ),
    Case(
        "25-impossible-length",
        lambda k: _with_segment(k, 1, lambda s: s + "A" * (5 - len(s) % 4)),
        "payload is not base64url",
    ),
    Case(
        "25-whitespace",
        lambda k: _with_segment(k, 1, lambda s: s[:10] + "\n" + s[10:]),
        "payload is not base64url",
    ),
    Case("25-non-canonical", _non_canonical_signature, "signature is not canonical base64url"),
    # 26: segment count.
    Case("26-empty", lambda k: "", "expected 3 segments"),
    Case("26-two-segments", lambda k: k.mint().rsplit(".", 1)[0], "expected 3 segments"),
    Case("26-four-segments", lambda k: k.mint() + ".AAAA", "expected 3 segments"),
    Case(
        "26-jwe-five-segments",
        lambda k: "eyJhbGciOiJSU0EtT0FFUCJ9.QUFB.QUFB.QUFB.QUFB",
        "expected 3 segments",
    ),
    Case("26-empty-segments", lambda k: "..", "malformed token"),
    # 27: duplicate JSON keys, validly signed.
    Case(
        "27-duplicate-sub",
        lambda k: k.forge(payload=json.dumps(k.claims()).encode()[:-1] + b', "sub": "ADMIN"}'),
        "duplicate key in payload",
    ),
    Case(
        "27-duplicate-nested",
        lambda k: k.forge(
            payload=json.dumps(k.claims(ext={}))
            .encode()
            .replace(b'"ext": {}', b'"ext": {"a": 1, "a": 2}')
        ),
        "duplicate key in payload",
    ),
    Case(
        "27-duplicate-alg",
        lambda k: k.forge(
            header=b'{"alg": "none", "alg": "RS256", "kid": "' + k.signer.kid.encode() + b'"}'
        ),
        "duplicate key in header",
    ),
    # Other malformed headers and payloads.
    Case("header-json-list", lambda k: k.forge(header=b'["RS256"]'), "header is not a JSON object"),
    Case("header-not-json", lambda k: k.forge(header=b"RS256"), "header is not JSON"),
    Case("payload-not-utf8", lambda k: k.forge(payload=b'{"sub": "\xff"}'), "payload is not JSON"),
    Case(
        "payload-json-string", lambda k: k.forge(payload=b'"admin"'), "payload is not a JSON object"
    ),
    Case(
        "payload-nan",
        lambda k: k.forge(payload=json.dumps(k.claims()).encode()[:-1] + b', "x": NaN}'),
        "payload is not JSON",
    ),
    Case(
        "payload-deeply-nested",
        lambda k: k.forge(payload=b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}"),
        "payload is not JSON",
    ),
    Case("tampered-payload", _tampered_groups, "signature invalid"),
    Case(
        "unpublished-key-published-kid",
        lambda k: k.mint(key=k.attacker, headers_overrides={"kid": k.signer.kid}),
        "signature invalid",
    ),
    Case(
        "truncated-signature",
        lambda k: _with_segment(k, 2, lambda s: b64url(_unb64url(s)[:-3])),
        "signature invalid",
    ),
    Case(
        "exp-string",
        lambda k: k.mint(claims_overrides={"exp": str(int(NOW) + HOUR)}),
        "malformed exp claim",
    ),
    Case("exp-bool", lambda k: k.mint(claims_overrides={"exp": True}), "malformed exp claim"),
    Case(
        "exp-infinite",
        lambda k: k.forge(
            payload=json.dumps(k.claims()).encode().replace(b'"exp": ', b'"exp": 1e400, "x": ')
        ),
        "malformed exp claim",
    ),
    Case(
        "iat-string", lambda k: k.mint(claims_overrides={"iat": "yesterday"}), "malformed iat claim"
    ),
    Case("nbf-string", lambda k: k.mint(claims_overrides={"nbf": "now"}), "malformed nbf claim"),
    Case("sub-empty", lambda k: k.mint(sub=""), "subject is empty"),
    Case(
        "sub-not-string", lambda k: k.mint(claims_overrides={"sub": 42}), "subject is not a string"
    ),
    Case(
        "jti-not-string", lambda k: k.mint(claims_overrides={"jti": 42}), "token id is not a string"
    ),
    Case(
        "no-algorithm-allowed",
        lambda k: k.mint(),
        "algorithm not allowed",
        settings={"algorithms": ("none", "HS256", "hs512")},
    ),
]


@pytest.mark.parametrize("case", REJECTED, ids=[case.id for case in REJECTED])
def test_rejected(kit: Kit, case: Case) -> None:
    token = case.build(kit)
    with pytest.raises(case.error) as caught:
        kit.verify(token, **case.settings)
    assert case.reason in caught.value.message
    assert caught.value.sqlstate == "28P01"
    assert caught.value.mysql_errno == 1045


@pytest.mark.parametrize("case", REJECTED, ids=[case.id for case in REJECTED])
def test_rejection_never_echoes_the_token(kit: Kit, case: Case) -> None:
    token = case.build(kit)
    with pytest.raises(InvalidToken) as caught:
        kit.verify(token, **case.settings)
    exc = caught.value
    shown = " ".join([str(exc), repr(exc), exc.message, str(exc.detail), str(exc.hint)])
    # Short segments ("", "AAAA") could appear by chance; real ones are long.
    for part in [part for part in [token, *token.split(".")] if len(part) >= 8]:
        assert part not in shown
    assert "passwd" not in shown
    assert "OR '1'" not in shown
    # Nothing derived from the token may ride along as an exception cause.
    assert exc.__cause__ is None


def test_valid_token(kit: Kit) -> None:
    token = kit.mint(
        sub="agent-7",
        groups=("data-agents", "readers"),
        claims_overrides={"email": "agent-7@example.com", "jti": "AT.abc"},
    )
    identity = kit.verify(token)
    assert identity.subject == "agent-7"
    assert identity.issuer == kit.issuer.url
    assert identity.groups == frozenset({"data-agents", "readers"})
    assert identity.expires_at == NOW + 600
    assert isinstance(identity.expires_at, float)
    assert identity.email == "agent-7@example.com"
    assert identity.token_id == "AT.abc"
    assert identity.claims["cid"] == kit.issuer.client_id
    assert identity.claims["aud"] == kit.issuer.audience


def test_valid_token_from_another_published_key(kit: Kit) -> None:
    assert kit.verify(kit.mint(key=kit.other)).subject == "agent-1"


def test_optional_claims_of_the_wrong_type_are_dropped(kit: Kit) -> None:
    identity = kit.verify(
        kit.mint(claims_overrides={"email": ["a@example.com"]}, drop_claims=["jti"])
    )
    assert identity.email is None
    assert identity.token_id is None


def test_empty_groups_verify_and_leave_authorization_to_the_rules(kit: Kit) -> None:
    assert kit.verify(kit.mint(groups=())).groups == frozenset()


def test_groups_claim_name_is_configurable(kit: Kit) -> None:
    token = kit.mint(claims_overrides={"airlock_groups": ["dba"]})
    assert kit.verify(token, groups_claim="airlock_groups").groups == frozenset({"dba"})


def test_matching_client_id(kit: Kit) -> None:
    assert kit.verify(kit.mint(), client_id=kit.issuer.client_id).subject == "agent-1"


@pytest.mark.parametrize(
    ("expired_ago_s", "leeway_s", "accepted"),
    [(30, 60, True), (120, 60, False), (30, 0, False), (0, 0, False), (-1, 0, True)],
)
def test_expiry_leeway(kit: Kit, expired_ago_s: float, leeway_s: float, accepted: bool) -> None:
    token = kit.mint(now=NOW - 600 - expired_ago_s, ttl_s=600)
    if accepted:
        assert kit.verify(token, leeway_s=leeway_s).expires_at == NOW - expired_ago_s
    else:
        with pytest.raises(InvalidToken, match="token expired"):
            kit.verify(token, leeway_s=leeway_s)


def test_leeway_applies_to_nbf_and_iat(kit: Kit) -> None:
    assert kit.verify(kit.mint(claims_overrides={"nbf": NOW + 30})).subject == "agent-1"
    assert kit.verify(kit.mint(now=NOW + 30)).subject == "agent-1"
    with pytest.raises(InvalidToken, match="not yet valid"):
        kit.verify(kit.mint(claims_overrides={"nbf": NOW + 90}))


def test_max_token_age(kit: Kit) -> None:
    token = kit.mint(now=NOW - 2 * HOUR, ttl_s=4 * HOUR)
    assert kit.verify(token).subject == "agent-1"
    with pytest.raises(InvalidToken, match="token too old"):
        kit.verify(token, max_token_age_s=HOUR)


def test_only_now_is_the_clock(kit: Kit) -> None:
    # Tokens at NOW (2025) verify although the wall clock says otherwise, and a
    # token valid by the wall clock fails at NOW: no hidden time.time().
    token = kit.mint(now=time.time())
    with pytest.raises(InvalidToken, match="issued in the future"):
        kit.verify(token)


def test_token_at_the_size_cap_is_parsed(kit: Kit) -> None:
    token = kit.mint()
    assert len(token) < kit.settings.max_token_bytes
    assert kit.verify(token, max_token_bytes=len(token)).subject == "agent-1"
    with pytest.raises(InvalidToken, match="token too large"):
        kit.verify(token, max_token_bytes=len(token) - 1)


def test_allowed_algorithms_never_include_none_or_hmac() -> None:
    settings = IdentitySettings(
        issuer="https://example.okta.com/oauth2/default",
        audience="api://airlock",
        algorithms=("RS256", "none", "NONE", "HS256", "hs384", "ES256"),
    )
    assert allowed_algorithms(settings) == ("RS256", "ES256")


def test_unknown_key_id_is_an_invalid_token() -> None:
    assert issubclass(UnknownKeyId, InvalidToken)
    assert UnknownKeyId("unknown key id").message == "unknown key id"


def test_token_base64_helper_matches_pyjwt(kit: Kit) -> None:
    # The forged tokens above rely on b64url producing what PyJWT produces.
    header = kit.mint().split(".")[0]
    assert b64url(_unb64url(header)) == header
