"""Gateway configuration: the one frozen `Settings` object, loaded from YAML and validated.

This module owns the shape of `airlock.yaml` (SPEC "Policy (YAML config)"): listeners,
identity (OIDC) settings, named upstream targets with their credentials, access rules,
TLS files and limits. Every mistake becomes a `ConfigError` whose text names the file,
the dotted key and the problem, so a bad config stops startup with one clear line.
Nothing here is global: `load_settings` returns `Settings` and the caller passes it on.

Upstream passwords are read here (from the environment, a file or the URL) and are never
written into an error message or a repr.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import json
import math
import os
import re
import urllib.parse
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
import yaml.constructor
import yaml.nodes

from policy.identity import IdentitySettings
from policy.rules import STATEMENT_CLASSES, Action, HoldMode, Preview, Rule
from proxy.addresses import is_loopback
from proxy.approvals.webhooks import WebhookEndpoint
from proxy.logs import LOG_FORMATS

__all__ = [
    "ConfigError",
    "Endpoint",
    "ListenSettings",
    "Settings",
    "TargetSettings",
    "TlsSettings",
    "UpstreamSettings",
    "load_settings",
    "parse_duration",
    "parse_settings",
]


_DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_DEFAULT_MAX_STATEMENT_BYTES = 1024 * 1024
_MIN_STATEMENT_BYTES = 1024
_DEFAULT_CLASSIFY_TIMEOUT_S = 5.0
_MAX_CLASSIFY_TIMEOUT_S = 60.0
#: How long before a session's end PostgreSQL clients are told of it (0: never).
_DEFAULT_SESSION_END_WARNING_S = 300.0
_MAX_SESSION_END_WARNING_S = 24 * 3600.0
_DEFAULT_DRAIN_TIMEOUT_S = 30.0
#: Longer than a service manager waits after SIGTERM (systemd: 90s by default) is a typo.
_MAX_DRAIN_TIMEOUT_S = 3600.0


class ConfigError(Exception):
    """A config that cannot be used: `str(e)` is "<file>: <dotted.key>: <problem>"."""

    def __init__(self, source: Path | str, key: str, problem: str) -> None:
        self.source = str(source)
        #: Dotted path of the offending key ("rules[0].write"); empty for whole-file problems.
        self.key = key
        self.problem = problem
        super().__init__(f"{self.source}: {key}: {problem}" if key else f"{self.source}: {problem}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ListenSettings:
    postgres: Endpoint | None
    mysql: Endpoint | None
    api: Endpoint | None


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    protocol: str
    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    database: str = ""
    sslmode: str = "prefer"
    sslrootcert: Path | None = None
    connect_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class TargetSettings:
    name: str
    protocol: str
    upstream: UpstreamSettings
    #: Defence in depth (SPEC, "Connecting as an agent"): the upstream session runs as
    #: `read_role`, and switches to `write_role` only for a statement the rules allow or
    #: an approver approved, and back right after. Both set, or neither.
    read_role: str | None = None
    write_role: str | None = None
    #: MySQL: the databases the target exposes (default: the one in its upstream URL).
    databases: tuple[str, ...] = ()
    #: MySQL: the target a client that names no database reaches (at most one).
    default: bool = False


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    #: When a session's transcript cannot be created (directory unwritable, disk full):
    #: "refuse" the session (fail closed, the default) or "allow" it unrecorded.
    on_failure: str = "refuse"
    #: Also record result rows (DataRow bodies), up to max_row_bytes per session.
    capture_rows: bool = False
    max_row_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """Connections that have not finished logging in (`limits.*`): how long one may take,
    and how many may wait at once, from one source address and in total."""

    timeout_s: float = 10.0
    max_pending: int = 1024
    max_pending_per_address: int = 128


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Both files or neither; neither means a self-signed pair generated into data_dir."""

    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class WebClientSettings:
    """The web page as an OIDC client: SSO sign-in by authorization code with PKCE."""

    client_id: str
    #: Where the issuer sends the browser back: this gateway's `/sso/callback`.
    redirect_url: str
    #: For a confidential client (read from `client_secret_env` or `_file`); never shown.
    client_secret: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = ("openid", "profile", "email")


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where approvals live: SQLite in data_dir (url None, one gateway), or a PostgreSQL
    database several gateways share (proxy/approvals/store_pg.py)."""

    url: str | None = None
    #: How often each gateway re-reads its held requests without a notification, and
    #: records its heartbeat.
    poll_s: float = 5.0
    #: A gateway whose heartbeat is older than this is taken for dead by the others:
    #: its open requests are marked gone and its held statements withdrawn.
    heartbeat_timeout_s: float = 30.0

    def __repr__(self) -> str:  # the URL may carry a password
        shown = "sqlite" if self.url is None else "postgresql://..."
        timeout_s = self.heartbeat_timeout_s
        return f"StoreSettings({shown}, poll_s={self.poll_s}, heartbeat_timeout_s={timeout_s})"


@dataclass(frozen=True, slots=True)
class Settings:
    source: Path
    listen: ListenSettings
    allow_insecure_loopback: bool
    data_dir: Path
    identity: IdentitySettings
    targets: Mapping[str, TargetSettings]
    rules: tuple[Rule, ...]
    tls: TlsSettings
    max_message_bytes: int = _DEFAULT_MAX_MESSAGE_BYTES
    #: Longer SQL text is refused unparsed (54000 / MySQL 1153).
    max_statement_bytes: int = _DEFAULT_MAX_STATEMENT_BYTES
    #: A classification running longer is `unknown` and its worker is replaced.
    classify_timeout_s: float = _DEFAULT_CLASSIFY_TIMEOUT_S
    #: Serve a development OIDC issuer on the API listener (`airlock dev-token`
    #: mints its tokens). Off unless the config turns it on.
    dev_issuer: bool = False
    #: Told of every approval request and decision (rules may add their own).
    webhooks: tuple[WebhookEndpoint, ...] = ()
    #: SHA-256 of the rules as written (canonical JSON): which policy a session ran under.
    policy_hash: str = ""
    #: Groups whose members may read transcripts through the API.
    auditors: frozenset[str] = frozenset()
    recording: RecordingSettings = RecordingSettings()
    logins: LoginLimits = LoginLimits()
    #: PostgreSQL clients get a notice this long before their session ends (0: none).
    session_end_warning_s: float = _DEFAULT_SESSION_END_WARNING_S
    #: "text" (for people) or "json" (one object per line, for pipelines): proxy/logs.py.
    log_format: str = "text"
    #: On SIGTERM, how long running statements get to finish before their sessions end.
    drain_timeout_s: float = _DEFAULT_DRAIN_TIMEOUT_S
    #: SSO sign-in on the web page; None: people sign in by pasting a token.
    web: WebClientSettings | None = None
    store: StoreSettings = StoreSettings()
    #: `web.public_url`: where people reach the web page (webhook messages link to it).
    public_url: str | None = None


# --- durations and sizes -------------------------------------------------------------------

_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# "ms" is tried before "m" so "250ms" is not read as 250 minutes and a stray "s".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION_HINT = "use seconds or units ms, s, m, h, d, e.g. 250ms, 30s, 5m, 1h30m"


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration: "5m", "1h30m", "250ms", or a bare number of seconds.

    Raises ValueError for negatives, NaN/infinity and anything else unparseable. Units
    must appear largest first and at most once ("5m1h" is more likely a typo than intent).
    """
    if isinstance(text, bool):  # bool is an int; `hold_timeout: yes` is never a duration
        raise ValueError(f"expected a duration, got a boolean ({_DURATION_HINT})")
    if isinstance(text, int | float):
        seconds = float(text)
    elif isinstance(text, str):
        seconds = _parse_duration_text(text)
    else:
        raise TypeError(f"expected a duration string or number, got {type(text).__name__}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"duration must be finite (got {text!r})")
    if seconds < 0:
        raise ValueError(f"duration must not be negative (got {text!r})")
    return seconds


def _parse_duration_text(text: str) -> float:
    stripped = text.strip()
    if stripped.startswith("-"):
        raise ValueError(f"duration must not be negative (got {_quote(text)})")
    if _PLAIN_NUMBER.fullmatch(stripped):
        return float(stripped)
    seconds = 0.0
    position = 0
    last_unit_size = math.inf
    for part in _DURATION_PART.finditer(stripped):
        unit_size = _DURATION_UNITS[part.group(2)]
        if part.start() != position or unit_size >= last_unit_size:
            break
        seconds += float(part.group(1)) * unit_size
        position = part.end()
        last_unit_size = unit_size
    else:
        if stripped and position == len(stripped):
            return seconds
    raise ValueError(f"invalid duration {_quote(text)} ({_DURATION_HINT})")


_SIZE_UNITS = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = re.compile(r"(\d+)\s*([A-Za-z]*)")


def _parse_size(value: object) -> int:
    """Bytes in an int or "64KiB"/"16MiB"; ValueError otherwise.

    Decimal units (MB) are refused rather than guessed: 16MB and 16MiB differ by 5%.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is None or match.group(2) not in _SIZE_UNITS:
            raise ValueError(
                f"invalid size {_quote(value)} (use bytes or units B, KiB, MiB, GiB, e.g. 16MiB)"
            )
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    else:
        raise ValueError(f"must be a size such as 16MiB or a number of bytes (got {_shown(value)})")
    if size <= 0:
        raise ValueError(f"must be a positive size (got {_shown(value)})")
    return size


# --- how values are shown in messages ------------------------------------------------------


def _quote(text: str, limit: int = 60) -> str:
    # Long values are cut so one error stays one readable line.
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _shown(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        # Unquoted yes/no/on/off are booleans in YAML; showing `true` hints at that.
        return "true" if value else "false"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _suggestion(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


# --- YAML ----------------------------------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: plain PyYAML keeps the last one silently,
    so a second `write: allow` further down a rule would quietly win."""

    def construct_mapping(
        self, node: yaml.nodes.MappingNode, deep: bool = False
    ) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.nodes.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            identity = (key_node.tag, str(key_node.value))
            if identity in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {_quote(str(key_node.value))}",
                    problem_mark=key_node.start_mark,
                )
            seen.add(identity)
        return super().construct_mapping(node, deep)


def _yaml_error(source: Path | str, error: yaml.YAMLError) -> ConfigError:
    # Built from the parts, never str(error): PyYAML's text quotes the offending line,
    # which may be an upstream URL carrying a password.
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "invalid YAML"
        if error.context and error.problem:
            problem = f"{problem} ({error.context})"
        if mark is not None:
            return ConfigError(
                source, "", f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
            )
        return ConfigError(source, "", problem)
    return ConfigError(source, "", f"invalid YAML: {type(error).__name__}")


# --- loading -------------------------------------------------------------------------------


def load_settings(path: Path | str, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, parse and validate a config file; any problem is a ConfigError naming it."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as error:
        raise ConfigError(source, "", f"cannot read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not UTF-8 text") from None
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise _yaml_error(source, error) from None
    return parse_settings(document, source=source, environ=environ)


def parse_settings(
    document: object, *, source: Path, environ: Mapping[str, str] | None = None
) -> Settings:
    """Validate an already-loaded YAML document (tests, configs built in code).

    `source` names the file in messages; relative paths resolve against its directory.
    """
    if document is None:
        raise ConfigError(source, "", "the file is empty")
    if not isinstance(document, dict):
        raise ConfigError(source, "", f"the top level must be a mapping (got {_shown(document)})")
    parser = _Parser(source, os.environ if environ is None else environ)
    return parser.settings(document)


#: Where the development issuer lives on the API listener.
DEV_ISSUER_PATH = "/dev-issuer"
DEV_AUDIENCE = "api://airlock"


def dev_issuer_url(listen: ListenSettings, port: int | None = None) -> str:
    """The development issuer's URL; `port` overrides a configured port 0 once bound."""
    assert listen.api is not None
    endpoint = Endpoint(listen.api.host, listen.api.port if port is None else port)
    return f"http://{endpoint}{DEV_ISSUER_PATH}"


_TOP_KEYS = (
    "listen",
    "allow_insecure_loopback",
    "data_dir",
    "identity",
    "targets",
    "rules",
    "tls",
    "limits",
    "dev_issuer",
    "webhooks",
    "auditors",
    "recording",
    "log_format",
    "web",
    "store",
)
_WEB_KEYS = (
    "client_id",
    "client_secret_env",
    "client_secret_file",
    "redirect_url",
    "scopes",
    "public_url",
)
#: The keys of `web` that make the page an SSO client (the rest: `public_url`).
_SSO_KEYS = ("client_id", "client_secret_env", "client_secret_file", "redirect_url", "scopes")
DEFAULT_WEB_SCOPES = ("openid", "profile", "email")
#: The path the gateway serves the sign-in callback on (proxy/http/web.py).
SSO_CALLBACK_PATH = "/sso/callback"
_STORE_KEYS = ("url", "poll_interval", "heartbeat_timeout")
_RECORDING_KEYS = ("on_failure", "capture_rows", "max_row_bytes")
_LISTEN_KEYS = ("postgres", "mysql", "api")
_IDENTITY_KEYS = (
    "issuer",
    "audience",
    "groups_claim",
    "algorithms",
    "leeway",
    "max_token_age",
    "max_token_bytes",
    "client_id",
    "jwks_lifespan",
    "jwks_refetch_cooldown",
    "http_timeout",
)
_TARGET_KEYS = (
    "protocol",
    "upstream",
    "password_env",
    "password_file",
    "roles",
    "databases",
    "default",
)
_ROLE_KEYS = ("read", "write")
_RULE_KEYS = (
    "groups",
    "targets",
    "all",
    *STATEMENT_CLASSES,
    "approvers",
    "hold",
    "hold_timeout",
    "grant_ttl",
    "session_ttl",
    "webhooks",
    "preview",
    "approvals_required",
)
_PREVIEW_KEYS = ("explain", "dry_run", "timeout")
#: More distinct approvers than this for one statement is a typo, not a policy.
_MAX_APPROVALS_REQUIRED = 10
_WEBHOOK_KEYS = ("url", "format", "secret_env", "secret_file", "events")
_WEBHOOK_FORMATS = ("standard", "slack")
_WEBHOOK_EVENTS = (
    "approval.requested",
    "approval.partially_approved",
    "approval.decided",
    "approval.timed_out",
)
_TLS_KEYS = ("cert_file", "key_file")
_LOGIN_LIMITS_KEYS = ("login_timeout", "max_pending_logins", "max_pending_logins_per_address")
_LIMITS_KEYS = (
    "max_message_bytes",
    "max_statement_bytes",
    "classify_timeout",
    "session_end_warning",
    "drain_timeout",
    *_LOGIN_LIMITS_KEYS,
)
#: More than a minute to log in, or a million logins waiting, is a typo.
_MAX_LOGIN_TIMEOUT_S = 60.0
_MAX_PENDING_LOGINS = 1_000_000

_DEFAULT_LISTEN = ListenSettings(
    postgres=Endpoint("127.0.0.1", 6432), mysql=None, api=Endpoint("127.0.0.1", 8080)
)
_PROTOCOLS = ("postgres", "mysql")
_SCHEMES = {"postgresql": "postgres", "postgres": "postgres", "mysql": "mysql"}
_DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}
_SSLMODES = {
    "postgres": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "mysql": ("disable", "prefer", "require", "verify-ca", "verify-full"),
}
_URL_PARAMETERS = ("sslmode", "sslrootcert", "connect_timeout")
# Spellings from other clients' URLs, pointed at ours rather than silently accepted.
_URL_PARAMETER_HINTS = {
    "ssl-mode": "sslmode",
    "ssl_mode": "sslmode",
    "ssl-ca": "sslrootcert",
    "ssl_ca": "sslrootcert",
    "connect-timeout": "connect_timeout",
}
#: Asymmetric only: `none` and HMAC (HS*) would let a public key be used as a shared secret.
_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
#: A leeway larger than this makes `exp` meaningless for short-lived tokens.
_MAX_LEEWAY_S = 300.0
_MIN_MESSAGE_BYTES = 4 * 1024
#: PostgreSQL itself refuses messages over 1 GiB.
_MAX_MESSAGE_BYTES = 1024**3
_MIN_TOKEN_BYTES = 256
_MAX_TOKEN_BYTES = 1024**2


class _Parser:
    """One pass over a document; each method validates one part and names its key."""

    def __init__(self, source: Path, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        # absolute() rather than resolve(): keep the user's symlinked layout, but make the
        # settings independent of a later chdir.
        self.base_dir = source.absolute().parent

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    # -- generic shapes --

    def mapping(
        self, value: object, key: str, known: Sequence[str], required: Sequence[str] = ()
    ) -> dict[str, object]:
        if not isinstance(value, dict):
            raise self.fail(key or "(top level)", f"must be a mapping (got {_shown(value)})")
        for name in value:
            if not isinstance(name, str):
                raise self.fail(key, f"keys must be strings (got {_shown(name)})")
            if name not in known:
                hint = _suggestion(name, known) or f"known keys: {', '.join(known)}"
                raise self.fail(_join(key, name), f"unknown key ({hint})")
        for name in required:
            if value.get(name) is None:
                raise self.fail(_join(key, name), "is required")
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string (got {_shown(value)})")
        if not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false (got {_shown(value)})")
        return value

    def choice(self, value: object, key: str, choices: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            hint = _suggestion(value, choices) if isinstance(value, str) else ""
            problem = f"must be one of {', '.join(choices)} (got {_shown(value)})"
            raise self.fail(key, f"{problem}; {hint}" if hint else problem)
        return value

    def duration(
        self, value: object, key: str, *, positive: bool = True, maximum: float | None = None
    ) -> float:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.fail(key, f"must be a duration such as 30s, 5m or 1h (got {_shown(value)})")
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            raise self.fail(key, str(error)) from None
        if positive and seconds == 0:
            raise self.fail(key, "must be longer than zero")
        if maximum is not None and seconds > maximum:
            raise self.fail(key, f"must be at most {maximum:g}s (got {seconds:g}s)")
        return seconds

    def size(self, value: object, key: str, minimum: int, maximum: int) -> int:
        try:
            size = _parse_size(value)
        except ValueError as error:
            raise self.fail(key, str(error)) from None
        if not minimum <= size <= maximum:
            raise self.fail(
                key, f"must be between {minimum} and {maximum} bytes (got {size} bytes)"
            )
        return size

    def string_list(self, value: object, key: str, *, what: str) -> tuple[str, ...]:
        if isinstance(value, str):
            # The commonest slip: `groups: data-agents` instead of `groups: [data-agents]`.
            raise self.fail(
                key, f"must be a list of {what} (got {_shown(value)}; write [{value}] for one)"
            )
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of {what} (got {_shown(value)})")
        items = tuple(self.string(item, f"{key}[{index}]") for index, item in enumerate(value))
        return tuple(dict.fromkeys(items))  # drop repeats, keep order

    def path(self, value: object, key: str) -> Path:
        path = Path(self.string(value, key)).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def existing_file(self, value: object, key: str) -> Path:
        path = self.path(value, key)
        if not path.is_file():
            raise self.fail(key, f"no such file: {path}")
        return path

    # -- sections --

    def settings(self, document: dict[Any, Any]) -> Settings:
        top = self.mapping(document, "", _TOP_KEYS, required=("targets",))
        listen = self.listen(top.get("listen"))
        dev_issuer = self.boolean(top.get("dev_issuer", False), "dev_issuer")
        if dev_issuer and listen.api is None:
            raise self.fail("dev_issuer", "needs the API listener (listen.api), which serves it")
        if not dev_issuer and top.get("identity") is None:
            raise self.fail("identity", "is required (or set dev_issuer: true for development)")
        targets = self.targets(top["targets"], listen)
        rules_value = top.get("rules")
        if rules_value is not None and not isinstance(rules_value, list):
            raise self.fail("rules", f"must be a list of rules (got {_shown(rules_value)})")
        rules = tuple(
            self.rule(value, f"rules[{index}]", targets)
            for index, value in enumerate(rules_value or [])
        )
        data_dir = self.path(top.get("data_dir", "./airlock-data"), "data_dir")
        if data_dir.exists() and not data_dir.is_dir():
            raise self.fail("data_dir", f"is not a directory: {data_dir}")
        max_message_bytes = _DEFAULT_MAX_MESSAGE_BYTES
        logins = LoginLimits()
        max_statement_bytes = _DEFAULT_MAX_STATEMENT_BYTES
        classify_timeout_s = _DEFAULT_CLASSIFY_TIMEOUT_S
        session_end_warning_s = _DEFAULT_SESSION_END_WARNING_S
        drain_timeout_s = _DEFAULT_DRAIN_TIMEOUT_S
        limits_value = top.get("limits")
        if limits_value is not None:
            limits = self.mapping(limits_value, "limits", _LIMITS_KEYS)
            logins = self.login_limits(limits)
            if limits.get("max_message_bytes") is not None:
                max_message_bytes = self.size(
                    limits["max_message_bytes"],
                    "limits.max_message_bytes",
                    _MIN_MESSAGE_BYTES,
                    _MAX_MESSAGE_BYTES,
                )
            if limits.get("max_statement_bytes") is not None:
                max_statement_bytes = self.size(
                    limits["max_statement_bytes"],
                    "limits.max_statement_bytes",
                    _MIN_STATEMENT_BYTES,
                    max_message_bytes,
                )
            if limits.get("classify_timeout") is not None:
                classify_timeout_s = self.duration(
                    limits["classify_timeout"],
                    "limits.classify_timeout",
                    maximum=_MAX_CLASSIFY_TIMEOUT_S,
                )
            if limits.get("session_end_warning") is not None:
                session_end_warning_s = self.duration(
                    limits["session_end_warning"],
                    "limits.session_end_warning",
                    positive=False,
                    maximum=_MAX_SESSION_END_WARNING_S,
                )
            if limits.get("drain_timeout") is not None:
                drain_timeout_s = self.duration(
                    limits["drain_timeout"],
                    "limits.drain_timeout",
                    positive=False,
                    maximum=_MAX_DRAIN_TIMEOUT_S,
                )
        insecure = top.get("allow_insecure_loopback", False)
        return Settings(
            source=self.source.absolute(),
            listen=listen,
            allow_insecure_loopback=self.boolean(insecure, "allow_insecure_loopback"),
            data_dir=data_dir,
            identity=self.identity(
                top.get("identity") or {}, dev_issuer_url(listen) if dev_issuer else None
            ),
            targets=MappingProxyType(targets),
            rules=rules,
            tls=self.tls(top.get("tls")),
            recording=self.recording(top.get("recording")),
            logins=logins,
            max_message_bytes=max_message_bytes,
            max_statement_bytes=min(max_statement_bytes, max_message_bytes),
            classify_timeout_s=classify_timeout_s,
            session_end_warning_s=session_end_warning_s,
            drain_timeout_s=drain_timeout_s,
            dev_issuer=dev_issuer,
            webhooks=self.webhooks(top.get("webhooks"), "webhooks"),
            auditors=frozenset(
                self.string_list(top.get("auditors") or [], "auditors", what="groups")
            ),
            log_format=self.choice(top.get("log_format", "text"), "log_format", LOG_FORMATS),
            web=self.web(top.get("web"), listen),
            public_url=self.public_url(top.get("web")),
            store=self.store(top.get("store")),
            policy_hash=hashlib.sha256(
                json.dumps(rules_value or [], sort_keys=True, default=str).encode()
            ).hexdigest(),
        )

    def store(self, value: object) -> StoreSettings:
        """`store: postgresql://...`, or a mapping with `url`, `poll_interval` and
        `heartbeat_timeout`; absent: SQLite in data_dir."""
        if value is None:
            return StoreSettings()
        fields: Mapping[str, object] = (
            {"url": value} if isinstance(value, str) else self.mapping(value, "store", _STORE_KEYS)
        )
        key = "store" if isinstance(value, str) else "store.url"
        url = fields.get("url")
        if url is None or url == "sqlite":
            url = None
        else:
            url = self.string(url, key)
            if not url.startswith(("postgresql://", "postgres://")):
                raise self.fail(
                    key, "must be a postgresql:// URL (or sqlite, the default, for one gateway)"
                )
        default = StoreSettings()
        poll = fields.get("poll_interval")
        timeout = fields.get("heartbeat_timeout")
        poll_s = (
            default.poll_s
            if poll is None
            else self.duration(poll, "store.poll_interval", maximum=60.0)
        )
        timeout_s = (
            default.heartbeat_timeout_s
            if timeout is None
            else self.duration(timeout, "store.heartbeat_timeout", maximum=3600.0)
        )
        if timeout_s < 2 * poll_s:
            raise self.fail(
                "store.heartbeat_timeout",
                f"must be at least twice store.poll_interval ({2 * poll_s:g}s): a live "
                "gateway records its heartbeat once per poll interval",
            )
        return StoreSettings(url=url, poll_s=poll_s, heartbeat_timeout_s=timeout_s)

    def login_limits(self, limits: Mapping[str, Any]) -> LoginLimits:
        default = LoginLimits()
        timeout = limits.get("login_timeout")
        total = limits.get("max_pending_logins")
        per_address = limits.get("max_pending_logins_per_address")
        return LoginLimits(
            timeout_s=default.timeout_s
            if timeout is None
            else self.duration(timeout, "limits.login_timeout", maximum=_MAX_LOGIN_TIMEOUT_S),
            max_pending=default.max_pending
            if total is None
            else self.count(total, "limits.max_pending_logins", _MAX_PENDING_LOGINS),
            max_pending_per_address=default.max_pending_per_address
            if per_address is None
            else self.count(
                per_address, "limits.max_pending_logins_per_address", _MAX_PENDING_LOGINS
            ),
        )

    def count(self, value: object, key: str, maximum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
            raise self.fail(
                key, f"must be a whole number from 1 to {maximum} (got {_shown(value)})"
            )
        return value

    def listen(self, value: object) -> ListenSettings:
        if value is None:
            return _DEFAULT_LISTEN
        section = self.mapping(value, "listen", _LISTEN_KEYS)
        endpoints: dict[str, Endpoint | None] = {}
        for name in _LISTEN_KEYS:
            # An explicit null turns a listener off; an absent key keeps the default.
            if name not in section:
                endpoints[name] = getattr(_DEFAULT_LISTEN, name)
            elif section[name] is None:
                endpoints[name] = None
            else:
                endpoints[name] = self.endpoint(section[name], f"listen.{name}")
        used: dict[tuple[str, int], str] = {}
        for name, endpoint in endpoints.items():
            if endpoint is None or endpoint.port == 0:
                continue
            address = (endpoint.host, endpoint.port)
            if address in used:
                raise self.fail(
                    f"listen.{name}", f"{endpoint} is already used by listen.{used[address]}"
                )
            used[address] = name
        return ListenSettings(
            postgres=endpoints["postgres"], mysql=endpoints["mysql"], api=endpoints["api"]
        )

    def endpoint(self, value: object, key: str) -> Endpoint:
        if not isinstance(value, str):
            raise self.fail(
                key, f"must be a 'host:port' string such as '127.0.0.1:6432' (got {_shown(value)})"
            )
        text = value.strip()
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise self.fail(key, f"must be '[ipv6]:port' (got {_quote(value)})")
            port_text = rest[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise self.fail(key, f"{_quote(host)} is not an IPv6 address") from None
        else:
            host, colon, port_text = text.rpartition(":")
            if not colon:
                raise self.fail(key, f"must be 'host:port' (got {_quote(value)})")
            if ":" in host:
                raise self.fail(
                    key, f"put an IPv6 address in brackets, e.g. '[{host}]:{port_text}'"
                )
        if not host:
            raise self.fail(key, f"has no host (got {_quote(value)}); use 0.0.0.0 for all")
        # Port 0 asks the OS for a free port, which tests rely on.
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise self.fail(key, f"port must be a number from 0 to 65535 (got {_quote(port_text)})")
        return Endpoint(host=host, port=int(port_text))

    def identity(self, value: object, dev_issuer: str | None) -> IdentitySettings:
        key = "identity"
        if dev_issuer is None:
            section = self.mapping(value, key, _IDENTITY_KEYS, required=("issuer", "audience"))
            issuer = self.issuer(section["issuer"], "identity.issuer")
            audience = self.string(section["audience"], "identity.audience")
        else:
            section = self.mapping(value, key, _IDENTITY_KEYS)
            if section.get("issuer") is not None:
                raise self.fail(
                    "identity.issuer", "must be left out with dev_issuer: true (it is the gateway)"
                )
            issuer = dev_issuer
            audience = self.string(section.get("audience", DEV_AUDIENCE), "identity.audience")
        # Any: the values have the types of their fields, which mypy checks at replace().
        changes: dict[str, Any] = {}
        if section.get("groups_claim") is not None:
            changes["groups_claim"] = self.string(section["groups_claim"], "identity.groups_claim")
        if section.get("algorithms") is not None:
            changes["algorithms"] = self.algorithms(section["algorithms"], "identity.algorithms")
        durations = {
            "leeway": ("leeway_s", False, _MAX_LEEWAY_S),
            "max_token_age": ("max_token_age_s", True, None),
            "jwks_lifespan": ("jwks_lifespan_s", True, None),
            "jwks_refetch_cooldown": ("jwks_refetch_cooldown_s", False, None),
            "http_timeout": ("http_timeout_s", True, None),
        }
        for name, (attribute, positive, maximum) in durations.items():
            if section.get(name) is not None:
                changes[attribute] = self.duration(
                    section[name], _join(key, name), positive=positive, maximum=maximum
                )
        if section.get("max_token_bytes") is not None:
            changes["max_token_bytes"] = self.size(
                section["max_token_bytes"],
                "identity.max_token_bytes",
                _MIN_TOKEN_BYTES,
                _MAX_TOKEN_BYTES,
            )
        if section.get("client_id") is not None:
            changes["client_id"] = self.string(section["client_id"], "identity.client_id")
        return dataclasses.replace(IdentitySettings(issuer=issuer, audience=audience), **changes)

    def web(self, value: object, listen: ListenSettings) -> WebClientSettings | None:
        if value is None:
            return None
        key = "web"
        section = self.mapping(value, key, _WEB_KEYS)
        if not any(section.get(name) is not None for name in _SSO_KEYS):
            return None  # only `public_url`: no SSO client
        section = self.mapping(value, key, _WEB_KEYS, required=("client_id", "redirect_url"))
        if listen.api is None:
            raise self.fail(key, "needs the API listener (listen.api), which serves the page")
        client_id = self.string(section["client_id"], "web.client_id")
        redirect_url = self.string(section["redirect_url"], "web.redirect_url")
        try:
            parts = urllib.parse.urlsplit(redirect_url)
            host = parts.hostname
        except ValueError:
            raise self.fail(
                "web.redirect_url", f"is not a URL (got {_quote(redirect_url)})"
            ) from None
        if parts.scheme not in ("https", "http") or not host:
            raise self.fail(
                "web.redirect_url", f"must be an https:// URL (got {_quote(redirect_url)})"
            )
        if parts.scheme == "http" and not is_loopback(host):
            raise self.fail(
                "web.redirect_url",
                "must use https; plain http is accepted only on loopback "
                "(localhost, 127.x.x.x, ::1)",
            )
        if parts.path != SSO_CALLBACK_PATH or parts.query or parts.fragment:
            raise self.fail(
                "web.redirect_url",
                f"must be this gateway's {SSO_CALLBACK_PATH} as the browser reaches it, e.g. "
                f"https://airlock.example.com{SSO_CALLBACK_PATH} (got {_quote(redirect_url)})",
            )
        scopes: tuple[str, ...] = DEFAULT_WEB_SCOPES
        if section.get("scopes") is not None:
            listed = self.string_list(section["scopes"], "web.scopes", what="scopes")
            # The ID token (and its nonce) comes only with the openid scope.
            scopes = tuple(dict.fromkeys(("openid", *listed)))
        return WebClientSettings(
            client_id=client_id,
            redirect_url=redirect_url,
            client_secret=self.secret(section, key, "client_secret"),
            scopes=scopes,
        )

    def issuer(self, value: object, key: str) -> str:
        issuer = self.string(value, key)
        try:
            parts = urllib.parse.urlsplit(issuer)
            host = parts.hostname
        except ValueError:
            raise self.fail(key, f"is not a URL (got {_quote(issuer)})") from None
        if parts.scheme not in ("https", "http") or not host:
            raise self.fail(key, f"must be an https:// URL (got {_quote(issuer)})")
        if parts.query or parts.fragment:
            # OIDC discovery requires an issuer without query or fragment.
            raise self.fail(key, "must not have a ?query or #fragment")
        if parts.scheme == "http" and not is_loopback(host):
            raise self.fail(
                key,
                f"must use https (got {_quote(issuer)}); plain http is accepted only for a "
                "loopback issuer (localhost, 127.x.x.x, ::1)",
            )
        return issuer

    def algorithms(self, value: object, key: str) -> tuple[str, ...]:
        names = self.string_list(value, key, what="algorithms")
        if not names:
            raise self.fail(key, f"must list at least one of {', '.join(_ALGORITHMS)}")
        for index, name in enumerate(names):
            if name in _ALGORITHMS:
                continue
            if name.lower() == "none" or name.upper().startswith("HS"):
                why = "'none' and HMAC (HS*) algorithms are never accepted"
                raise self.fail(f"{key}[{index}]", f"{_quote(name)} is not allowed: {why}")
            self.choice(name, f"{key}[{index}]", _ALGORITHMS)
        return names

    def targets(self, value: object, listen: ListenSettings) -> dict[str, TargetSettings]:
        if not isinstance(value, dict):
            raise self.fail("targets", f"must be a mapping of target names (got {_shown(value)})")
        if not value:
            raise self.fail("targets", "must name at least one target")
        targets: dict[str, TargetSettings] = {}
        defaults: dict[str, str] = {}  # protocol -> its default target's name
        for name, target_value in value.items():
            if not isinstance(name, str) or not name.strip():
                raise self.fail("targets", f"target names must be strings (got {_shown(name)})")
            target = targets[name] = self.target(name, target_value, f"targets.{name}", listen)
            if target.default:
                if target.protocol in defaults:
                    raise self.fail(
                        f"targets.{name}.default",
                        f"only one {target.protocol} target may be the default "
                        f"({defaults[target.protocol]} already is)",
                    )
                defaults[target.protocol] = name
        return targets

    def target(self, name: str, value: object, key: str, listen: ListenSettings) -> TargetSettings:
        section = self.mapping(value, key, _TARGET_KEYS, required=("protocol", "upstream"))
        protocol = self.choice(section["protocol"], f"{key}.protocol", _PROTOCOLS)
        if getattr(listen, protocol) is None:
            # The client's protocol picks the listener, so this target could never be reached.
            raise self.fail(
                f"{key}.protocol", f"is {protocol}, but listen.{protocol} is not configured"
            )
        upstream = self.upstream(section, key, protocol)
        read_role = write_role = None
        if "roles" in section:
            roles = self.mapping(section["roles"], f"{key}.roles", _ROLE_KEYS, required=_ROLE_KEYS)
            read_role = self.string(roles["read"], f"{key}.roles.read")
            write_role = self.string(roles["write"], f"{key}.roles.write")
            if read_role == write_role:
                raise self.fail(f"{key}.roles", "read and write must be different roles")
        databases: tuple[str, ...] = ()
        if "databases" in section:
            if protocol != "mysql":
                raise self.fail(f"{key}.databases", "is for mysql targets only")
            databases = self.string_list(section["databases"], f"{key}.databases", what="databases")
        elif protocol == "mysql" and upstream.database:
            databases = (upstream.database,)
        default = self.boolean(section.get("default", False), f"{key}.default")
        if default and protocol != "mysql":
            # A PostgreSQL client always names a database (libpq: the user name by default).
            raise self.fail(f"{key}.default", "is for mysql targets only")
        return TargetSettings(
            name=name,
            protocol=protocol,
            upstream=upstream,
            read_role=read_role,
            write_role=write_role,
            databases=databases,
            default=default,
        )

    def upstream(self, section: dict[str, object], key: str, protocol: str) -> UpstreamSettings:
        url_key = f"{key}.upstream"
        url = self.string(section["upstream"], url_key)
        # Nothing below echoes any part of the URL: it may carry a password.
        try:
            parts = urllib.parse.urlsplit(url.strip())
        except ValueError:  # an unbalanced IPv6 bracket
            raise self.fail(url_key, "is not a valid URL") from None
        scheme_protocol = _SCHEMES.get(parts.scheme)
        if scheme_protocol is None:
            raise self.fail(url_key, "must start with postgresql://, postgres:// or mysql://")
        try:
            host = parts.hostname
            port = parts.port
        except ValueError as error:
            if str(error).startswith("Port out of range"):
                raise self.fail(url_key, "port must be a number from 1 to 65535") from None
            # Usually an unencoded '/', '?', '#' or '@' in the password moving the split.
            raise self.fail(
                url_key,
                "has no valid host:port (percent-encode / ? # @ : in the user or password)",
            ) from None
        url_password = parts.password
        if scheme_protocol != protocol:
            raise self.fail(url_key, f"is a {parts.scheme}:// URL but {key}.protocol is {protocol}")
        if parts.fragment:
            raise self.fail(url_key, "has a #fragment (percent-encode '#' in a password as %23)")
        if not parts.username:
            raise self.fail(url_key, f"names no user ({parts.scheme}://USER@host:port/database)")
        if not host:
            raise self.fail(url_key, f"names no host ({parts.scheme}://user@HOST:port/database)")
        if port == 0:
            raise self.fail(url_key, "port must be a number from 1 to 65535")
        database = urllib.parse.unquote(parts.path.removeprefix("/"))
        if "/" in database:
            raise self.fail(url_key, "path must be just /database (percent-encode '/' in names)")
        parameters = self.url_parameters(parts.query, url_key, protocol)
        password = self.password(section, key, urllib.parse.unquote(url_password or ""))
        sslrootcert: Path | None = None
        if "sslrootcert" in parameters:
            sslrootcert = Path(parameters["sslrootcert"]).expanduser()
            sslrootcert = sslrootcert if sslrootcert.is_absolute() else self.base_dir / sslrootcert
            if not sslrootcert.is_file():
                raise self.fail(url_key, f"sslrootcert: no such file: {sslrootcert}")
        connect_timeout_s = 10.0
        if "connect_timeout" in parameters:
            try:
                connect_timeout_s = parse_duration(parameters["connect_timeout"])
            except ValueError as error:
                raise self.fail(url_key, f"connect_timeout: {error}") from None
            if connect_timeout_s == 0:
                raise self.fail(url_key, "connect_timeout: must be longer than zero")
        return UpstreamSettings(
            protocol=protocol,
            host=host,
            port=port or _DEFAULT_PORTS[protocol],
            user=urllib.parse.unquote(parts.username),
            password=password,
            database=database,
            sslmode=parameters.get("sslmode", "prefer"),
            sslrootcert=sslrootcert,
            connect_timeout_s=connect_timeout_s,
        )

    def url_parameters(self, query: str, key: str, protocol: str) -> dict[str, str]:
        try:
            pairs = urllib.parse.parse_qsl(
                query, keep_blank_values=True, strict_parsing=bool(query)
            )
        except ValueError:
            raise self.fail(key, "has a malformed ?query (expected name=value&...)") from None
        parameters: dict[str, str] = {}
        for name, value in pairs:
            if name == "password":
                raise self.fail(key, "put the password in password_env or password_file")
            if name not in _URL_PARAMETERS:
                hint = _URL_PARAMETER_HINTS.get(name)
                suggestion = (
                    f"did you mean {hint!r}?" if hint else _suggestion(name, _URL_PARAMETERS)
                )
                known = f"known: {', '.join(_URL_PARAMETERS)}"
                raise self.fail(
                    key, f"unknown query parameter {_quote(name)} ({suggestion or known})"
                )
            if name in parameters:
                raise self.fail(key, f"query parameter {name!r} is given twice")
            parameters[name] = value
        sslmode = parameters.get("sslmode")
        if sslmode is not None and sslmode not in _SSLMODES[protocol]:
            choices = ", ".join(_SSLMODES[protocol])
            raise self.fail(key, f"sslmode must be one of {choices} (got {_quote(sslmode)})")
        return parameters

    def password(self, section: dict[str, object], key: str, url_password: str) -> str | None:
        return self.secret(section, key, "password", url_password, "a password in the upstream URL")

    def secret(
        self,
        section: dict[str, object],
        key: str,
        name: str,
        inline: str = "",
        inline_label: str = "",
    ) -> str | None:
        """A secret given as `<name>_env` (a variable's name) or `<name>_file`, or inline."""
        env_name, file_name = f"{name}_env", f"{name}_file"
        given = [n for n in (env_name, file_name) if section.get(n) is not None]
        if inline:
            given.append(inline_label)
        if len(given) > 1:
            raise self.fail(key, f"give the {name} one way only (got {' and '.join(given)})")
        if section.get(env_name) is not None:
            env_key = f"{key}.{env_name}"
            variable = self.string(section[env_name], env_key)
            secret = self.environ.get(variable)
            if secret is None:
                raise self.fail(env_key, f"environment variable {variable!r} is not set")
            if not secret:
                raise self.fail(env_key, f"environment variable {variable!r} is empty")
            return secret
        if section.get(file_name) is not None:
            file_key = f"{key}.{file_name}"
            path = self.path(section[file_name], file_key)
            try:
                secret = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
                raise self.fail(file_key, f"cannot read {path}: {reason or error}") from None
            # Editors and `echo` add a final newline that is not part of the secret.
            secret = secret.rstrip("\r\n")
            if not secret:
                raise self.fail(file_key, f"{path} is empty")
            return secret
        # Discouraged (the secret sits in the config file), but accepted.
        return inline or None

    def webhooks(self, value: object, key: str) -> tuple[WebhookEndpoint, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of webhooks (got {_shown(value)})")
        return tuple(self.webhook(item, f"{key}[{index}]") for index, item in enumerate(value))

    def webhook(self, value: object, key: str) -> WebhookEndpoint:
        section = self.mapping(value, key, _WEBHOOK_KEYS, required=("url",))
        url = self.string(section["url"], f"{key}.url")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(f"{key}.url", "must be an http(s) URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise self.fail(f"{key}.url", "plain http is accepted on loopback only; use https")
        fmt = self.choice(section.get("format", "standard"), f"{key}.format", _WEBHOOK_FORMATS)
        secret = self.secret(section, key, "secret")
        if secret is not None and not secret.startswith("whsec_"):
            raise self.fail(f"{key}.secret", "must be a Standard Webhooks secret (whsec_...)")
        events: tuple[str, ...] = _WEBHOOK_EVENTS
        if section.get("events") is not None:
            listed = self.string_list(section["events"], f"{key}.events", what="event names")
            for index, event in enumerate(listed):
                if event not in _WEBHOOK_EVENTS:
                    raise self.fail(
                        f"{key}.events[{index}]",
                        f"unknown event {_quote(event)} (known: {', '.join(_WEBHOOK_EVENTS)})",
                    )
            events = listed
        try:
            return WebhookEndpoint(url=url, secret=secret, format=fmt, events=frozenset(events))
        except ValueError as error:  # its message names neither the secret nor the URL's
            raise self.fail(key, str(error)) from None

    def preview(self, value: object, key: str) -> Preview:
        section = self.mapping(value, key, _PREVIEW_KEYS)
        changes: dict[str, Any] = {}
        for name in ("explain", "dry_run"):
            if section.get(name) is not None:
                changes[name] = self.boolean(section[name], f"{key}.{name}")
        if section.get("timeout") is not None:
            changes["timeout_s"] = self.duration(section["timeout"], f"{key}.timeout", maximum=60)
        return dataclasses.replace(Preview(), **changes)

    def rule(self, value: object, key: str, targets: Mapping[str, TargetSettings]) -> Rule:
        section = self.mapping(value, key, _RULE_KEYS, required=("groups", "targets"))
        groups = self.string_list(section["groups"], f"{key}.groups", what="group names")
        if not groups:
            raise self.fail(f"{key}.groups", "must name at least one group")
        target_names = self.string_list(section["targets"], f"{key}.targets", what="target names")
        if not target_names:
            raise self.fail(f"{key}.targets", "must name at least one target")
        for index, name in enumerate(target_names):
            if name not in targets:
                hint = _suggestion(name, list(targets)) or f"configured: {', '.join(targets)}"
                raise self.fail(
                    f"{key}.targets[{index}]", f"no target named {_quote(name)} ({hint})"
                )
        changes: dict[str, Any] = {}  # field name -> value, as in identity() above
        actions = tuple(action.value for action in Action)
        if section.get("all") is not None:
            # One action for every class; a class named as well overrides it.
            every = Action(self.choice(section["all"], f"{key}.all", actions))
            changes.update(dict.fromkeys(STATEMENT_CLASSES, every))
        for statement_class in STATEMENT_CLASSES:
            if section.get(statement_class) is not None:
                choice = self.choice(section[statement_class], f"{key}.{statement_class}", actions)
                changes[statement_class] = Action(choice)
        if section.get("approvers") is not None:
            approvers = self.string_list(section["approvers"], f"{key}.approvers", what="groups")
            changes["approvers"] = frozenset(approvers)
        if section.get("hold") is not None:
            hold = self.choice(section["hold"], f"{key}.hold", tuple(m.value for m in HoldMode))
            changes["hold"] = HoldMode(hold)
        for name in ("hold_timeout", "grant_ttl", "session_ttl"):
            if section.get(name) is not None:
                changes[f"{name}_s"] = self.duration(section[name], f"{key}.{name}")
        changes["webhooks"] = self.webhooks(section.get("webhooks"), f"{key}.webhooks")
        if section.get("preview") is not None:
            changes["preview"] = self.preview(section["preview"], f"{key}.preview")
        rule = dataclasses.replace(
            Rule(groups=frozenset(groups), targets=frozenset(target_names)), **changes
        )
        if section.get("approvals_required") is not None:
            rule = dataclasses.replace(
                rule,
                approvals_required=self.approvals_required(
                    section["approvals_required"], f"{key}.approvals_required", rule
                ),
            )
        approving = [c for c in STATEMENT_CLASSES if rule.action_for(c) is Action.APPROVE]
        if approving and not rule.approvers:
            listed = ", ".join(c if c in changes else f"{c} (by default)" for c in approving)
            raise self.fail(
                f"{key}.approvers",
                f"is required: {listed} statements need approval, so name the groups "
                "allowed to decide (or set those classes to allow or deny)",
            )
        return rule

    def approvals_required(
        self, value: object, key: str, rule: Rule
    ) -> tuple[tuple[str, int], ...]:
        """`{ddl: 2}`: how many distinct approvers each listed class needs."""
        section = self.mapping(value, key, STATEMENT_CLASSES)
        required = []
        for statement_class, count in section.items():
            count_key = f"{key}.{statement_class}"
            number = self.count(count, count_key, _MAX_APPROVALS_REQUIRED)
            action = rule.action_for(statement_class)
            if action is not Action.APPROVE:
                raise self.fail(
                    count_key,
                    f"{statement_class} statements are {action.value} in this rule, never "
                    f"held: set {statement_class}: approve to require approvals for them",
                )
            required.append((statement_class, number))
        return tuple(required)

    def public_url(self, value: object) -> str | None:
        """The web page's public URL (links in webhook messages), without a trailing /."""
        if value is None:
            return None
        section = self.mapping(value, "web", _WEB_KEYS)
        if section.get("public_url") is None:
            return None
        url = self.string(section["public_url"], "web.public_url")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(
                "web.public_url", "must be an http(s) URL, e.g. https://airlock.example.com"
            )
        if parts.query or parts.fragment:
            raise self.fail("web.public_url", "must have no query or fragment")
        return url.rstrip("/")

    def recording(self, value: object) -> RecordingSettings:
        if value is None:
            return RecordingSettings()
        section = self.mapping(value, "recording", _RECORDING_KEYS)
        on_failure = self.choice(
            section.get("on_failure", "refuse"), "recording.on_failure", ("refuse", "allow")
        )
        capture = self.boolean(section.get("capture_rows", False), "recording.capture_rows")
        max_row_bytes = RecordingSettings().max_row_bytes
        if section.get("max_row_bytes") is not None:
            max_row_bytes = self.size(
                section["max_row_bytes"], "recording.max_row_bytes", 0, _MAX_MESSAGE_BYTES
            )
        return RecordingSettings(
            on_failure=on_failure, capture_rows=capture, max_row_bytes=max_row_bytes
        )

    def tls(self, value: object) -> TlsSettings:
        if value is None:
            return TlsSettings()
        section = self.mapping(value, "tls", _TLS_KEYS)
        cert, key = section.get("cert_file"), section.get("key_file")
        if (cert is None) != (key is None):
            missing, present = (
                ("key_file", "cert_file") if key is None else ("cert_file", "key_file")
            )
            raise self.fail(
                f"tls.{missing}",
                f"is required when tls.{present} is set (give both, or neither for a "
                "self-signed certificate)",
            )
        if cert is None:
            return TlsSettings()
        return TlsSettings(
            cert_file=self.existing_file(cert, "tls.cert_file"),
            key_file=self.existing_file(key, "tls.key_file"),
        )
