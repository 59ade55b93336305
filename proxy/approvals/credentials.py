"""Short-lived gateway credentials: a user name and password that stand for a token.

Some drivers cannot send a JWT as their password: a length limit, a login that only
speaks SCRAM-SHA-256 or mysql_native_password. An agent trades its token for a
credential at `POST /api/v1/credentials`. The credential logs in to one target,
through SCRAM-SHA-256 (PostgreSQL) or mysql_native_password / caching_sha2_password
(MySQL); it carries the token's identity (the rules that apply, who may approve its
writes, what its transcripts name) and dies at `expires_at`, never later than the
token.

The gateway keeps only what checks a password (SCRAM's salted keys, MySQL's two
hashes), never the password, and keeps it in memory: a restart forgets every
credential. With a shared store (`store: postgresql://...`) the verifiers are kept
there too, so a credential minted through one gateway logs in on any (and outlives a
restart of the one that minted it); the limits then count every gateway's
credentials. User names start with `PREFIX`, which is how a login is told apart from
one that sends a token.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from policy.errors import AuthenticationFailed
from policy.identity import Identity
from protocols.mysql.auth import caching_sha2_hash, native_password_hash
from protocols.postgres.auth import ScramAuthInfo, make_scram_auth_info
from proxy.approvals.store import StoreUnavailable

#: Every credential's user name starts with this; other user names are ignored at login.
PREFIX = "airlock_"

#: Live credentials one gateway keeps at most; minting more is refused until some expire.
MAX_LIVE = 10_000
#: Live credentials of one identity (token subject) at most, so one agent cannot use up
#: the gateway's room.
MAX_LIVE_PER_SUBJECT = 100


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    target: str
    #: The minting token's identity; its `expires_at` is the credential's.
    identity: Identity
    scram: ScramAuthInfo
    native_hash: str  # '*' + HEX(SHA1(SHA1(password))), as MySQL stores it
    sha2_hash: bytes  # SHA256(SHA256(password)): caching_sha2_password's fast path

    @property
    def expires_at(self) -> float:
        return self.identity.expires_at

    def __repr__(self) -> str:  # without the verifiers
        subject = self.identity.subject
        return f"Credential({self.username!r}, target={self.target!r}, sub={subject!r})"


def is_credential_name(user: str) -> bool:
    return user.startswith(PREFIX)


def new_credential(identity: Identity, target: str, expires_at: float) -> tuple[Credential, str]:
    """A fresh credential and its password. Costs a PBKDF2 (SCRAM's 4096 rounds): run it
    off the event loop."""
    password = secrets.token_urlsafe(24)
    secret = password.encode()
    credential = Credential(
        username=PREFIX + secrets.token_hex(8),
        target=target,
        identity=dataclasses.replace(identity, expires_at=expires_at),
        scram=make_scram_auth_info(password),
        native_hash=native_password_hash(secret),
        sha2_hash=caching_sha2_hash(secret),
    )
    return credential, password


class TooManyCredentials(Exception):
    pass


class SharedCredentials(Protocol):
    """Where gateways sharing a store keep credentials (proxy/approvals/store_pg.py PgStore). Its
    calls raise proxy.store.StoreUnavailable when the store cannot be reached."""

    def put_credential(self, credential: Credential) -> None: ...

    def find_credential(self, username: str, now: float) -> Credential | None: ...

    def live_credentials(self, subject: str, now: float) -> tuple[int, int]: ...


class CredentialBook:
    """The live credentials of one gateway, by user name."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        max_live: int = MAX_LIVE,
        max_per_subject: int = MAX_LIVE_PER_SUBJECT,
        shared: SharedCredentials | None = None,
    ) -> None:
        self.clock = clock
        self.max_live = max_live
        self.max_per_subject = max_per_subject
        self.shared = shared
        self._live: dict[str, Credential] = {}

    def __len__(self) -> int:
        return len(self._live)

    def make_room(self, subject: str) -> None:
        """Forget expired credentials; raise TooManyCredentials when the book, or the
        subject's share of it, is still full."""
        now = self.clock()
        for name in [name for name, c in self._live.items() if c.expires_at <= now]:
            del self._live[name]
        if self.shared is not None:
            live, held = self.shared.live_credentials(subject, now)
        else:
            live = len(self._live)
            held = sum(1 for c in self._live.values() if c.identity.subject == subject)
        if live >= self.max_live:
            raise TooManyCredentials(f"{live} credentials are live, the most this gateway keeps")
        if held >= self.max_per_subject:
            raise TooManyCredentials(
                f'"{subject}" has {held} live credentials, the most one identity may hold'
            )

    def add(self, credential: Credential) -> None:
        self.make_room(credential.identity.subject)
        if self.shared is not None:
            self.shared.put_credential(credential)
        self._live[credential.username] = credential

    def find(self, username: str) -> Credential | None:
        """The live credential of that name; None when there is none or it has expired."""
        credential = self._live.get(username)
        if credential is not None and credential.expires_at <= self.clock():
            del self._live[username]
            return None
        if credential is None and self.shared is not None:
            # Minted through another gateway (a store that cannot be reached: unknown).
            try:
                credential = self.shared.find_credential(username, self.clock())
            except StoreUnavailable:
                raise AuthenticationFailed(
                    "the credential store is unreachable: try again, or log in with the token"
                ) from None
            if credential is not None:
                self._live[username] = credential
        return credential
