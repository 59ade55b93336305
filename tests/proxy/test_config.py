"""Tests for proxy/config.py: good files load, and every bad one names file, key and problem."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy.rules import Action, HoldMode, Preview, effective_policy
from proxy.approvals.webhooks import WebhookEndpoint
from proxy.config import (
    ConfigError,
    Endpoint,
    Settings,
    load_settings,
    parse_duration,
    parse_settings,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Pa55word"

SPEC_EXAMPLE = """\
listen: {postgres: "127.0.0.1:6432", mysql: "127.0.0.1:3307", api: "127.0.0.1:8080"}
allow_insecure_loopback: false    # true: loopback clients may send a JWT without TLS
data_dir: ./airlock-data          # store, recordings, signing key, TLS cert
identity:
  issuer: https://example.okta.com/oauth2/default
  audience: api://airlock
  groups_claim: groups            # plain-http issuers are accepted on loopback only
targets:
  orders:
    protocol: postgres
    upstream: postgresql://airlock_svc@127.0.0.1:5432/orders
  shop:
    protocol: mysql
    upstream: mysql://airlock_svc@127.0.0.1:3306/shop
rules:
  - groups: [data-agents]
    targets: [orders]
    read: allow                   # allow | approve | deny, per class
    write: approve
    ddl: deny
    approvers: [oncall-dba]       # groups allowed to decide
    hold: wait                    # wait | reject
    hold_timeout: 5m
    grant_ttl: 15m                # longest an approval may grant
    session_ttl: 1h
"""

Document = dict[str, Any]


def base_document() -> Document:
    """A small valid config; each bad case below breaks exactly one thing in it."""
    return {
        "listen": {"postgres": "127.0.0.1:6432", "mysql": "127.0.0.1:3307"},
        "identity": {"issuer": "https://idp.example.com/oauth2/default", "audience": "api://a"},
        "targets": {
            "orders": {
                "protocol": "postgres",
                "upstream": "postgresql://svc@db.internal:5432/orders",
                "password_env": "ORDERS_PASSWORD",
            },
            "shop": {"protocol": "mysql", "upstream": "mysql://svc@db.internal/shop"},
        },
        "rules": [
            {
                "groups": ["data-agents"],
                "targets": ["orders"],
                "write": "approve",
                "approvers": ["oncall-dba"],
            }
        ],
    }


ENVIRON = {"ORDERS_PASSWORD": SECRET}


def write_config(directory: Path, document: object, name: str = "airlock.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def load_text(directory: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    path = directory / "airlock.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ=ENVIRON if environ is None else environ)


# --- good files ----------------------------------------------------------------------------


def test_example_file_loads() -> None:
    settings = load_settings(REPO / "examples" / "airlock.yaml", environ={})
    orders = settings.targets["orders"]
    assert orders.protocol == "postgres"
    assert (orders.upstream.host, orders.upstream.port) == ("127.0.0.1", 5432)
    assert (orders.upstream.user, orders.upstream.database) == ("airlock_svc", "airlock_example")
    assert (orders.read_role, orders.write_role) == ("airlock_reader", "airlock_writer")
    assert orders.upstream.password is None
    shop = settings.targets["shop"]
    assert (shop.protocol, shop.upstream.port, shop.upstream.database) == (
        "mysql",
        3306,
        "airlock_example",
    )
    assert settings.listen.mysql == Endpoint("127.0.0.1", 3307)
    assert settings.allow_insecure_loopback is True
    # The example runs on the gateway's own development issuer, on the API listener.
    assert settings.dev_issuer is True
    assert settings.identity.issuer == "http://127.0.0.1:8080/dev-issuer"
    assert settings.data_dir == REPO / "examples" / "airlock-data"


def test_spec_example_loads(tmp_path: Path) -> None:
    settings = load_text(tmp_path, SPEC_EXAMPLE, environ={})
    assert settings.listen.mysql == Endpoint("127.0.0.1", 3307)
    assert list(settings.targets) == ["orders", "shop"]
    shop = settings.targets["shop"].upstream
    assert (shop.protocol, shop.host, shop.port, shop.user, shop.database) == (
        "mysql",
        "127.0.0.1",
        3306,
        "airlock_svc",
        "shop",
    )
    (rule,) = settings.rules
    assert rule.groups == frozenset({"data-agents"})
    assert (rule.read, rule.write, rule.ddl) == (Action.ALLOW, Action.APPROVE, Action.DENY)
    assert rule.approvers == frozenset({"oncall-dba"})
    assert rule.hold is HoldMode.WAIT
    assert (rule.hold_timeout_s, rule.grant_ttl_s, rule.session_ttl_s) == (300, 900, 3600)
    assert settings.data_dir == tmp_path / "airlock-data"


def test_defaults(tmp_path: Path) -> None:
    document = base_document()
    del document["listen"]
    del document["targets"]["shop"]
    settings = load_settings(write_config(tmp_path, document), environ=ENVIRON)
    assert settings.listen.postgres == Endpoint("127.0.0.1", 6432)
    assert settings.listen.mysql is None
    assert settings.listen.api == Endpoint("127.0.0.1", 8080)
    assert settings.allow_insecure_loopback is False
    assert settings.data_dir == tmp_path / "airlock-data"
    assert settings.tls.cert_file is None
    assert settings.tls.key_file is None
    assert settings.max_message_bytes == 16 * 1024 * 1024
    assert settings.max_statement_bytes == 1024 * 1024
    assert settings.classify_timeout_s == 5.0
    assert settings.identity.algorithms == ("RS256",)
    upstream = settings.targets["orders"].upstream
    assert (upstream.sslmode, upstream.connect_timeout_s) == ("prefer", 10.0)
    assert upstream.password == SECRET
    assert settings.source == tmp_path / "airlock.yaml"
    with pytest.raises(TypeError):
        settings.targets["x"] = settings.targets["orders"]  # type: ignore[index]


def test_every_option(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "tls").mkdir(parents=True)
    for name in ("tls/gw.crt", "tls/gw.key", "ca.pem"):
        (conf / name).write_text("x", encoding="utf-8")
    (conf / "shop.pw").write_text(SECRET + "\n", encoding="utf-8")
    text = """\
listen: {postgres: "[::1]:6432", mysql: "0.0.0.0:3307", api: null}
allow_insecure_loopback: true
data_dir: state
identity:
  issuer: http://localhost:8099/oauth2/default
  audience: api://airlock
  groups_claim: roles
  algorithms: [RS256, ES256, PS256]
  leeway: 30s
  max_token_age: 12h
  max_token_bytes: 16KiB
  client_id: 0oa123
  jwks_lifespan: 10m
  jwks_refetch_cooldown: 1m
  http_timeout: 2500ms
targets:
  orders:
    protocol: postgres
    upstream: postgres://svc@db:6543/orders?sslmode=verify-full&sslrootcert=ca.pem&connect_timeout=3
  shop:
    protocol: mysql
    upstream: mysql://svc@db/shop?sslmode=require
    password_file: shop.pw
rules:
  - groups: [readers]
    targets: [orders, shop]
    write: deny
    unknown: deny
  - groups: [writers, data-agents]
    targets: [shop]
    ddl: approve
    approvers: [dba]
    hold: reject
    hold_timeout: 90
    grant_ttl: 1h30m
    session_ttl: 8h
tls: {cert_file: tls/gw.crt, key_file: tls/gw.key}
limits: {max_message_bytes: 64KiB, max_statement_bytes: 32KiB, classify_timeout: 2s}
"""
    (conf / "airlock.yaml").write_text(text, encoding="utf-8")
    settings = load_settings(conf / "airlock.yaml", environ={})
    assert settings.listen == type(settings.listen)(
        postgres=Endpoint("::1", 6432), mysql=Endpoint("0.0.0.0", 3307), api=None
    )
    assert str(settings.listen.postgres) == "[::1]:6432"
    assert settings.data_dir == conf / "state"
    identity = settings.identity
    assert identity.groups_claim == "roles"
    assert identity.algorithms == ("RS256", "ES256", "PS256")
    assert (identity.leeway_s, identity.max_token_age_s) == (30, 12 * 3600)
    assert (identity.max_token_bytes, identity.client_id) == (16384, "0oa123")
    assert (identity.jwks_lifespan_s, identity.jwks_refetch_cooldown_s) == (600, 60)
    assert identity.http_timeout_s == 2.5
    orders = settings.targets["orders"].upstream
    assert (orders.host, orders.port, orders.sslmode) == ("db", 6543, "verify-full")
    assert (orders.sslrootcert, orders.connect_timeout_s) == (conf / "ca.pem", 3.0)
    shop = settings.targets["shop"].upstream
    assert (shop.port, shop.sslmode, shop.password) == (3306, "require", SECRET)
    readers, writers = settings.rules
    assert readers.approvers == frozenset()
    assert readers.targets == frozenset({"orders", "shop"})
    assert writers.ddl is Action.APPROVE
    assert writers.hold is HoldMode.REJECT
    assert (writers.hold_timeout_s, writers.grant_ttl_s, writers.session_ttl_s) == (
        90,
        5400,
        8 * 3600,
    )
    assert settings.tls.cert_file == conf / "tls" / "gw.crt"
    assert settings.tls.key_file == conf / "tls" / "gw.key"
    assert settings.max_message_bytes == 64 * 1024
    assert settings.max_statement_bytes == 32 * 1024
    assert settings.classify_timeout_s == 2.0


def test_login_limits(tmp_path: Path) -> None:
    defaults = load_settings(write_config(tmp_path, base_document()), environ=ENVIRON)
    assert (defaults.logins.timeout_s, defaults.logins.max_pending) == (10.0, 1024)
    assert defaults.logins.max_pending_per_address == 128
    document = base_document()
    document["limits"] = {
        "login_timeout": "2500ms",
        "max_pending_logins": 50,
        "max_pending_logins_per_address": 5,
    }
    settings = load_settings(write_config(tmp_path, document), environ=ENVIRON)
    assert settings.logins.timeout_s == 2.5
    assert (settings.logins.max_pending, settings.logins.max_pending_per_address) == (50, 5)


def test_a_rule_opts_in_to_a_dry_run_and_the_strictest_rule_wins() -> None:
    document = base_document()
    assert parse_settings(document, source=Path("a.yaml"), environ=ENVIRON).rules[0].preview == (
        Preview(explain=True, dry_run=False, timeout_s=2.0)
    )
    document["rules"][0]["preview"] = {"dry_run": True, "timeout": "5s"}
    opted = parse_settings(document, source=Path("a.yaml"), environ=ENVIRON).rules[0]
    assert opted.preview == Preview(explain=True, dry_run=True, timeout_s=5.0)
    # A dry run executes the write: only when every matching rule opts in.
    other = replace(opted, preview=Preview(explain=False, timeout_s=1.0))
    combined = effective_policy([opted, other], opted.groups, next(iter(opted.targets)))
    assert combined is not None
    assert combined.preview == Preview(explain=False, dry_run=False, timeout_s=1.0)


def test_parse_settings_builds_from_a_document() -> None:
    settings = parse_settings(base_document(), source=Path("in-code.yaml"), environ=ENVIRON)
    assert settings.targets["orders"].upstream.password == SECRET
    required = r"^in-code\.yaml: identity: is required \(or set dev_issuer: true"
    with pytest.raises(ConfigError, match=required):
        parse_settings({"targets": {}}, source=Path("in-code.yaml"))


# --- bad documents -------------------------------------------------------------------------

Mutation = Callable[[Document], None]


def set_path(*path: str | int, value: object) -> Mutation:
    def mutate(document: Document) -> None:
        node: Any = document
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


def delete_path(*path: str | int) -> Mutation:
    def mutate(document: Document) -> None:
        node: Any = document
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return mutate


def then(*mutations: Mutation) -> Mutation:
    def mutate(document: Document) -> None:
        for mutation in mutations:
            mutation(document)

    return mutate


UPSTREAM = ("targets", "orders", "upstream")
RULE = ("rules", 0)

BAD_CASES: list[tuple[str, Mutation, str, str]] = [
    # (id, mutation, dotted key, problem pattern)
    (
        "unknown-top-key",
        set_path("rule", value=[]),
        "rule",
        r"unknown key \(did you mean 'rules'\?\)",
    ),
    (
        "unknown-rule-key",
        set_path(*RULE, "aprovers", value=["x"]),
        "rules[0].aprovers",
        r"unknown key \(did you mean 'approvers'\?\)",
    ),
    (
        "unknown-key-no-suggestion",
        set_path("tls", value={"zzz": 1}),
        "tls.zzz",
        r"unknown key \(known keys: cert_file, key_file\)",
    ),
    (
        "bad-enum",
        set_path(*RULE, "write", value="yes"),
        "rules[0].write",
        r"must be one of allow, approve, deny \(got 'yes'\)$",
    ),
    (
        "bad-all",
        set_path(*RULE, "all", value="everything"),
        "rules[0].all",
        r"must be one of allow, approve, deny \(got 'everything'\)$",
    ),
    (
        "default-not-boolean",
        set_path("targets", "shop", "default", value="yes"),
        "targets.shop.default",
        r"must be true or false",
    ),
    (
        "default-on-postgres",
        set_path("targets", "orders", "default", value=True),
        "targets.orders.default",
        r"is for mysql targets only",
    ),
    (
        "two-defaults-of-a-protocol",
        then(
            set_path("targets", "shop", "default", value=True),
            set_path(
                "targets",
                "shop2",
                value={
                    "protocol": "mysql",
                    "upstream": "mysql://svc@db2.internal/shop",
                    "default": True,
                },
            ),
        ),
        "targets.shop2.default",
        r"only one mysql target may be the default \(shop already is\)",
    ),
    (
        "yaml-boolean-enum",
        set_path(*RULE, "read", value=True),
        "rules[0].read",
        r"must be one of allow, approve, deny \(got true\)$",
    ),
    (
        "enum-typo-suggests",
        set_path(*RULE, "hold", value="wiat"),
        "rules[0].hold",
        r"must be one of wait, reject \(got 'wiat'\); did you mean 'wait'\?",
    ),
    (
        "preview-typo",
        set_path(*RULE, "preview", value={"dryrun": True}),
        "rules[0].preview.dryrun",
        r"unknown key \(did you mean 'dry_run'\?\)",
    ),
    (
        "preview-dry-run-not-boolean",
        set_path(*RULE, "preview", value={"dry_run": "yes"}),
        "rules[0].preview.dry_run",
        r"must be true or false",
    ),
    (
        "preview-timeout-too-long",
        set_path(*RULE, "preview", value={"timeout": "5m"}),
        "rules[0].preview.timeout",
        r"must be at most 60s",
    ),
    (
        "bad-duration",
        set_path(*RULE, "hold_timeout", value="5 minutes"),
        "rules[0].hold_timeout",
        r"invalid duration '5 minutes'",
    ),
    (
        "negative-duration",
        set_path(*RULE, "grant_ttl", value="-15m"),
        "rules[0].grant_ttl",
        r"must not be negative",
    ),
    (
        "zero-duration",
        set_path(*RULE, "session_ttl", value="0s"),
        "rules[0].session_ttl",
        r"must be longer than zero",
    ),
    (
        "duration-wrong-type",
        set_path(*RULE, "session_ttl", value=[1]),
        "rules[0].session_ttl",
        r"must be a duration such as 30s, 5m or 1h \(got a list\)",
    ),
    (
        "leeway-too-large",
        set_path("identity", "leeway", value="1h"),
        "identity.leeway",
        r"must be at most 300s",
    ),
    (
        "listen-port-out-of-range",
        set_path("listen", "postgres", value="127.0.0.1:70000"),
        "listen.postgres",
        r"port must be a number from 0 to 65535 \(got '70000'\)",
    ),
    (
        "listen-port-missing",
        set_path("listen", "api", value="localhost"),
        "listen.api",
        r"must be 'host:port' \(got 'localhost'\)",
    ),
    (
        "listen-int",
        set_path("listen", "postgres", value=6432),
        "listen.postgres",
        r"must be a 'host:port' string .*\(got integer 6432\)",
    ),
    (
        "listen-ipv6-without-brackets",
        set_path("listen", "postgres", value="::1:6432"),
        "listen.postgres",
        r"put an IPv6 address in brackets, e\.g\. '\[::1\]:6432'",
    ),
    (
        "listen-clash",
        set_path("listen", "api", value="127.0.0.1:6432"),
        "listen.api",
        r"127\.0\.0\.1:6432 is already used by listen\.postgres",
    ),
    (
        "upstream-port-out-of-range",
        set_path(*UPSTREAM, value="postgresql://svc@db:99999/orders"),
        "targets.orders.upstream",
        r"port must be a number from 1 to 65535$",
    ),
    (
        "upstream-port-not-a-number",
        set_path(*UPSTREAM, value="postgresql://svc:pass/word@db:5432/orders"),
        "targets.orders.upstream",
        r"has no valid host:port \(percent-encode / \? # @ : in the user or password\)",
    ),
    (
        "upstream-scheme-mismatch",
        set_path(*UPSTREAM, value="mysql://svc@db/orders"),
        "targets.orders.upstream",
        r"is a mysql:// URL but targets\.orders\.protocol is postgres",
    ),
    (
        "upstream-bad-scheme",
        set_path(*UPSTREAM, value="http://svc@db/orders"),
        "targets.orders.upstream",
        r"must start with postgresql://, postgres:// or mysql://$",
    ),
    (
        "upstream-no-user",
        set_path(*UPSTREAM, value="postgresql://db/orders"),
        "targets.orders.upstream",
        r"names no user",
    ),
    (
        "upstream-unknown-parameter",
        set_path(*UPSTREAM, value="postgresql://svc@db/orders?ssl-mode=require"),
        "targets.orders.upstream",
        r"unknown query parameter 'ssl-mode' \(did you mean 'sslmode'\?\)",
    ),
    (
        "upstream-mysql-sslmode-allow",
        set_path("targets", "shop", "upstream", value="mysql://svc@db/shop?sslmode=allow"),
        "targets.shop.upstream",
        r"sslmode must be one of disable, prefer, require, verify-ca, verify-full "
        r"\(got 'allow'\)",
    ),
    (
        "upstream-missing-sslrootcert",
        set_path(*UPSTREAM, value="postgresql://svc@db/orders?sslrootcert=nope.pem"),
        "targets.orders.upstream",
        r"sslrootcert: no such file: .*nope\.pem",
    ),
    (
        "bad-protocol",
        set_path("targets", "orders", "protocol", value="oracle"),
        "targets.orders.protocol",
        r"must be one of postgres, mysql \(got 'oracle'\)",
    ),
    (
        "mysql-target-without-listener",
        set_path("listen", "mysql", value=None),
        "targets.shop.protocol",
        r"is mysql, but listen\.mysql is not configured",
    ),
    (
        "target-missing-upstream",
        delete_path("targets", "shop", "upstream"),
        "targets.shop.upstream",
        r"is required$",
    ),
    (
        "no-targets",
        set_path("targets", value={}),
        "targets",
        r"must name at least one target",
    ),
    (
        "rule-unknown-target",
        set_path(*RULE, "targets", value=["ordrs"]),
        "rules[0].targets[0]",
        r"no target named 'ordrs' \(did you mean 'orders'\?\)",
    ),
    (
        "rule-unknown-target-no-suggestion",
        set_path(*RULE, "targets", value=["orders", "billing"]),
        "rules[0].targets[1]",
        r"no target named 'billing' \(configured: orders, shop\)",
    ),
    (
        "approve-without-approvers",
        delete_path(*RULE, "approvers"),
        "rules[0].approvers",
        r"is required: write, unknown \(by default\) statements need approval",
    ),
    (
        "approve-with-empty-approvers",
        set_path(*RULE, "approvers", value=[]),
        "rules[0].approvers",
        r"is required",
    ),
    (
        "groups-as-string",
        set_path(*RULE, "groups", value="data-agents"),
        "rules[0].groups",
        r"must be a list of group names \(got 'data-agents'; write \[data-agents\] for one\)",
    ),
    (
        "groups-item-wrong-type",
        set_path(*RULE, "groups", value=["ok", 7]),
        "rules[0].groups[1]",
        r"must be a string \(got integer 7\)",
    ),
    (
        "rules-not-a-list",
        set_path("rules", value={"groups": ["x"]}),
        "rules",
        r"must be a list of rules \(got a mapping\)",
    ),
    (
        "rule-not-a-mapping",
        set_path("rules", value=["data-agents"]),
        "rules[0]",
        r"must be a mapping \(got 'data-agents'\)",
    ),
    (
        "bool-wrong-type",
        set_path("allow_insecure_loopback", value="yes"),
        "allow_insecure_loopback",
        r"must be true or false \(got 'yes'\)",
    ),
    (
        "http-issuer-not-loopback",
        set_path("identity", "issuer", value="http://idp.example.com/oauth2/default"),
        "identity.issuer",
        r"must use https .*plain http is accepted only for a loopback issuer",
    ),
    (
        "issuer-not-a-url",
        set_path("identity", "issuer", value="idp.example.com"),
        "identity.issuer",
        r"must be an https:// URL",
    ),
    (
        "missing-audience",
        delete_path("identity", "audience"),
        "identity.audience",
        r"is required$",
    ),
    (
        "hs256-algorithm",
        set_path("identity", "algorithms", value=["RS256", "HS256"]),
        "identity.algorithms[1]",
        r"'HS256' is not allowed: 'none' and HMAC \(HS\*\) algorithms are never accepted",
    ),
    (
        "none-algorithm",
        set_path("identity", "algorithms", value=["none"]),
        "identity.algorithms[0]",
        r"'none' is not allowed",
    ),
    (
        "unknown-algorithm",
        set_path("identity", "algorithms", value=["RS257"]),
        "identity.algorithms[0]",
        r"must be one of RS256, RS384, RS512, ES256, ES384, PS256 \(got 'RS257'\)",
    ),
    (
        "empty-algorithms",
        set_path("identity", "algorithms", value=[]),
        "identity.algorithms",
        r"must list at least one of",
    ),
    (
        "missing-password-env",
        set_path("targets", "orders", "password_env", value="NOT_SET_ANYWHERE"),
        "targets.orders.password_env",
        r"environment variable 'NOT_SET_ANYWHERE' is not set",
    ),
    (
        "missing-password-file",
        set_path("targets", "shop", "password_file", value="missing.pw"),
        "targets.shop.password_file",
        r"cannot read .*missing\.pw: No such file or directory",
    ),
    (
        "two-password-sources",
        set_path("targets", "orders", "password_file", value="orders.pw"),
        "targets.orders",
        r"give the password one way only \(got password_env and password_file\)",
    ),
    (
        "tls-cert-without-key",
        set_path("tls", value={"cert_file": "gw.crt"}),
        "tls.key_file",
        r"is required when tls\.cert_file is set",
    ),
    (
        "tls-key-without-cert",
        set_path("tls", value={"key_file": "gw.key"}),
        "tls.cert_file",
        r"is required when tls\.key_file is set",
    ),
    (
        "tls-missing-file",
        set_path("tls", value={"cert_file": "gw.crt", "key_file": "gw.key"}),
        "tls.cert_file",
        r"no such file: .*gw\.crt",
    ),
    (
        "size-decimal-unit",
        set_path("limits", value={"max_message_bytes": "16MB"}),
        "limits.max_message_bytes",
        r"invalid size '16MB' \(use bytes or units B, KiB, MiB, GiB",
    ),
    (
        "size-too-small",
        set_path("limits", value={"max_message_bytes": 10}),
        "limits.max_message_bytes",
        r"must be between 4096 and 1073741824 bytes \(got 10 bytes\)",
    ),
    (
        "size-negative",
        set_path("limits", value={"max_message_bytes": -1}),
        "limits.max_message_bytes",
        r"must be a positive size",
    ),
    (
        "login-timeout-zero",
        set_path("limits", value={"login_timeout": 0}),
        "limits.login_timeout",
        r"must be longer than zero",
    ),
    (
        "login-timeout-too-long",
        set_path("limits", value={"login_timeout": "5m"}),
        "limits.login_timeout",
        r"must be at most 60s",
    ),
    (
        "pending-logins-zero",
        set_path("limits", value={"max_pending_logins": 0}),
        "limits.max_pending_logins",
        r"must be a whole number from 1 to 1000000 \(got integer 0\)",
    ),
    (
        "pending-logins-per-address-text",
        set_path("limits", value={"max_pending_logins_per_address": "many"}),
        "limits.max_pending_logins_per_address",
        r"must be a whole number",
    ),
    (
        "statement-size-over-message-size",
        set_path("limits", value={"max_message_bytes": "64KiB", "max_statement_bytes": "1MiB"}),
        "limits.max_statement_bytes",
        r"must be between 1024 and 65536 bytes \(got 1048576 bytes\)",
    ),
    (
        "statement-size-too-small",
        set_path("limits", value={"max_statement_bytes": 100}),
        "limits.max_statement_bytes",
        r"must be between 1024 and 16777216 bytes \(got 100 bytes\)",
    ),
    (
        "classify-timeout-zero",
        set_path("limits", value={"classify_timeout": 0}),
        "limits.classify_timeout",
        r"must be longer than zero",
    ),
    (
        "classify-timeout-too-long",
        set_path("limits", value={"classify_timeout": "5m"}),
        "limits.classify_timeout",
        r"must be at most 60s \(got 300s\)",
    ),
    (
        "data-dir-wrong-type",
        set_path("data_dir", value=5),
        "data_dir",
        r"must be a string \(got integer 5\)",
    ),
    (
        "recording-on-failure",
        set_path("recording", value={"on_failure": "ignore"}),
        "recording.on_failure",
        r"must be one of refuse, allow",
    ),
    (
        "auditors-not-a-list",
        set_path("auditors", value="auditors"),
        "auditors",
        r"must be a list",
    ),
    (
        "webhooks-not-a-list",
        set_path("webhooks", value={"url": "https://hooks.example.com/x"}),
        "webhooks",
        r"must be a list of webhooks",
    ),
    (
        "webhook-without-url",
        set_path("webhooks", value=[{"format": "slack"}]),
        "webhooks[0].url",
        r"required",
    ),
    (
        "webhook-plain-http-remote",
        set_path("webhooks", value=[{"url": "http://hooks.example.com/x"}]),
        "webhooks[0].url",
        r"plain http is accepted on loopback only",
    ),
    (
        "webhook-bad-format",
        set_path("webhooks", value=[{"url": "https://h.example.com/", "format": "teams"}]),
        "webhooks[0].format",
        r"must be one of standard, slack",
    ),
    (
        "target-roles-missing-write",
        set_path("targets", "orders", "roles", value={"read": "reader"}),
        "targets.orders.roles.write",
        r"is required",
    ),
    (
        "target-roles-same",
        set_path("targets", "orders", "roles", value={"read": "r", "write": "r"}),
        "targets.orders.roles",
        r"must be different roles",
    ),
    (
        "target-databases-on-postgres",
        set_path("targets", "orders", "databases", value=["orders"]),
        "targets.orders.databases",
        r"is for mysql targets only",
    ),
    (
        "webhook-unknown-event",
        set_path(*RULE, "webhooks", value=[{"url": "https://h.example.com/", "events": ["x"]}]),
        "rules[0].webhooks[0].events[0]",
        r"unknown event 'x'",
    ),
    (
        "webhook-secret-env-unset",
        set_path("webhooks", value=[{"url": "https://h.example.com/", "secret_env": "NOPE"}]),
        "webhooks[0].secret_env",
        r"environment variable 'NOPE' is not set",
    ),
    (
        "webhook-secret-not-whsec",
        set_path(
            "webhooks", value=[{"url": "https://h.example.com/", "secret_env": "ORDERS_PASSWORD"}]
        ),
        "webhooks[0].secret",
        r"must be a Standard Webhooks secret",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [pytest.param(m, k, p, id=case_id) for case_id, m, k, p in BAD_CASES],
)
def test_bad_config_names_file_key_and_problem(
    tmp_path: Path, mutate: Mutation, key: str, problem: str
) -> None:
    document = base_document()
    mutate(document)
    path = write_config(tmp_path, document)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=ENVIRON)
    error = caught.value
    prefix = f"{path}: {key}: "
    assert str(error).startswith(prefix), str(error)
    assert re.search(problem, str(error)[len(prefix) :]), str(error)
    assert (error.source, error.key) == (str(path), key)


def test_message_uses_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = base_document()
    document["rules"][0]["write"] = "yes"
    write_config(tmp_path, document)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings("airlock.yaml", environ=ENVIRON)
    assert str(caught.value) == (
        "airlock.yaml: rules[0].write: must be one of allow, approve, deny (got 'yes')"
    )


# --- bad files -----------------------------------------------------------------------------

BAD_FILES: list[tuple[str, str, str]] = [
    # (id, file text, whole message after "<file>: ")
    ("empty", "", r"the file is empty$"),
    ("only-comments", "# nothing here\n", r"the file is empty$"),
    ("top-level-list", "- a\n- b\n", r"the top level must be a mapping \(got a list\)$"),
    ("top-level-string", "hello\n", r"the top level must be a mapping \(got 'hello'\)$"),
    (
        "syntax-error",
        "identity:\n  issuer: https://x\n  audience: [a\ntargets: {}\n",
        r"^line \d+, column \d+: .*",
    ),
    (
        "bad-indentation",
        "identity:\n  issuer: https://x\n audience: a\n",
        r"^line 3, column 2: ",
    ),
    (
        "duplicate-key",
        "identity: {}\ntargets: {}\nidentity: {}\n",
        r"^line 3, column 1: duplicate key 'identity'",
    ),
    (
        "python-tag",
        "identity: !!python/object:os.system {}\n",
        r"^line 1, column 11: could not determine a constructor",
    ),
    ("not-utf8", "identity: caf\xe9\n", r"^not UTF-8 text$"),
]


@pytest.mark.parametrize(
    ("text", "problem"), [pytest.param(t, p, id=case_id) for case_id, t, p in BAD_FILES]
)
def test_bad_file_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "airlock.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert re.search(problem, message[len(f"{path}: ") :]), message


def test_syntax_error_reports_the_right_line(tmp_path: Path) -> None:
    path = tmp_path / "airlock.yaml"
    path.write_text("identity:\n  issuer: https://x\n  audience: a\n  bad: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"airlock\.yaml: line 5, column 1: "):
        load_settings(path, environ={})


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read: No such file or directory"):
        load_settings(path)


# --- passwords never leak ------------------------------------------------------------------


def with_url_password(document: Document) -> None:
    del document["targets"]["orders"]["password_env"]
    document["targets"]["orders"]["upstream"] = f"postgresql://svc:{SECRET}@db:5432/orders"


def url_password_and(url: str) -> Mutation:
    return then(with_url_password, set_path(*UPSTREAM, value=url))


LEAK_CASES: list[tuple[str, Mutation]] = [
    ("other-key-bad", then(with_url_password, set_path(*RULE, "write", value="nope"))),
    ("bad-port", url_password_and(f"postgresql://svc:{SECRET}@db:99999/orders")),
    ("bad-port-text", url_password_and(f"postgresql://svc:{SECRET}@db:{SECRET}/orders")),
    ("bad-ipv6", url_password_and(f"postgresql://svc:{SECRET}@[::1/orders")),
    ("scheme-mismatch", url_password_and(f"mysql://svc:{SECRET}@db/orders")),
    ("bad-scheme", url_password_and(f"{SECRET}://svc:{SECRET}@db/orders")),
    ("unknown-parameter", url_password_and(f"postgresql://svc:{SECRET}@db/orders?x=1")),
    ("malformed-query", url_password_and(f"postgresql://svc@db/o?{SECRET}")),
    ("password-in-query", url_password_and(f"postgresql://svc@db/o?password={SECRET}")),
    ("fragment", url_password_and(f"postgresql://svc:pw#{SECRET}@db/orders")),
    ("slash-in-password", url_password_and(f"postgresql://svc:a/{SECRET}@db/orders")),
    ("two-sources", set_path(*UPSTREAM, value=f"postgresql://svc:{SECRET}@db/orders")),
    ("upstream-not-string", set_path(*UPSTREAM, value=[f"postgresql://svc:{SECRET}@db/o"])),
    ("unset-env", set_path("targets", "orders", "password_env", value="UNSET")),
]


@pytest.mark.parametrize("mutate", [pytest.param(m, id=case_id) for case_id, m in LEAK_CASES])
def test_password_never_in_error(tmp_path: Path, mutate: Mutation) -> None:
    document = base_document()
    mutate(document)
    path = write_config(tmp_path, document)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=ENVIRON)
    # Lowercased: urllib lowercases schemes and hosts, so a leak could change case.
    assert SECRET.lower() not in str(caught.value).lower()
    assert SECRET.lower() not in repr(caught.value).lower()


def test_password_never_in_yaml_syntax_error(tmp_path: Path) -> None:
    text = f"targets:\n  orders:\n    upstream: postgresql://svc:{SECRET}@db/orders: oops\n"
    path = tmp_path / "airlock.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "line 3" in str(caught.value)
    assert SECRET.lower() not in str(caught.value).lower()


@pytest.mark.parametrize("source", ["url", "env", "file"])
def test_password_never_in_repr(tmp_path: Path, source: str) -> None:
    document = base_document()
    orders = document["targets"]["orders"]
    if source == "url":
        with_url_password(document)
    elif source == "file":
        del orders["password_env"]
        (tmp_path / "orders.pw").write_text(SECRET + "\r\n", encoding="utf-8")
        orders["password_file"] = "orders.pw"
    settings = load_settings(write_config(tmp_path, document), environ=ENVIRON)
    assert settings.targets["orders"].upstream.password == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in repr(settings.targets["orders"])


def test_url_parts_are_percent_decoded(tmp_path: Path) -> None:
    document = base_document()
    del document["targets"]["orders"]["password_env"]
    document["targets"]["orders"]["upstream"] = "postgresql://svc%40corp:p%2Fw%40rd@db/my%20db"
    settings = load_settings(write_config(tmp_path, document), environ={})
    upstream = settings.targets["orders"].upstream
    assert (upstream.user, upstream.password, upstream.database) == ("svc@corp", "p/w@rd", "my db")


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, base_document()), environ=ENVIRON)
    with pytest.raises(AttributeError):
        settings.data_dir = tmp_path  # type: ignore[misc]


def test_document_is_not_mutated() -> None:
    document = base_document()
    before = copy.deepcopy(document)
    parse_settings(document, source=Path("x.yaml"), environ=ENVIRON)
    assert document == before


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("30s", 30.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("1m30s500ms", 90.5),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        (" 5m ", 300.0),
        ("90", 90.0),
        ("2.5", 2.5),
        (90, 90.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "abc",
        "5x",
        "m",
        "-5m",
        "-1",
        "5m1h",
        "1h1h",
        "5 m",
        "1e3",
        "5m-",
        "inf",
        "nan",
        -1,
        -0.5,
        float("inf"),
        float("nan"),
        True,
    ],
)
def test_parse_duration_rejects(text: str | int | float) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(text)


def test_dev_issuer_needs_the_api_listener(tmp_path: Path) -> None:
    document = {
        "dev_issuer": True,
        "listen": {"api": None},
        "targets": {"orders": {"protocol": "postgres", "upstream": "postgresql://u@127.0.0.1/db"}},
    }
    with pytest.raises(ConfigError, match=r"dev_issuer: needs the API listener"):
        parse_settings(document, source=tmp_path / "a.yaml", environ={})


def test_dev_issuer_refuses_a_configured_issuer(tmp_path: Path) -> None:
    document = {
        "dev_issuer": True,
        "identity": {"issuer": "https://example.okta.com/oauth2/default"},
        "targets": {"orders": {"protocol": "postgres", "upstream": "postgresql://u@127.0.0.1/db"}},
    }
    with pytest.raises(ConfigError, match=r"identity\.issuer: must be left out with dev_issuer"):
        parse_settings(document, source=tmp_path / "a.yaml", environ={})


def test_webhooks_global_and_per_rule(tmp_path: Path) -> None:
    document = base_document()
    document["webhooks"] = [
        {"url": "https://hooks.slack.com/services/T/B/X", "format": "slack"},
        {"url": "http://127.0.0.1:9000/hook", "secret_env": "HOOK_SECRET"},
    ]
    document["rules"][0]["webhooks"] = [
        {"url": "https://ops.example.com/airlock", "events": ["approval.decided"]}
    ]
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    settings = load_settings(
        write_config(tmp_path, document), environ={**ENVIRON, "HOOK_SECRET": secret}
    )
    slack, signed = settings.webhooks
    assert (slack.format, slack.secret) == ("slack", None)
    assert (signed.format, signed.secret) == ("standard", secret)
    assert signed.events == {
        "approval.requested",
        "approval.partially_approved",
        "approval.decided",
        "approval.timed_out",
    }
    [per_rule] = settings.rules[0].webhooks
    assert isinstance(per_rule, WebhookEndpoint)
    assert per_rule.events == {"approval.decided"}


def test_target_roles_and_databases(tmp_path: Path) -> None:
    document = base_document()
    document["targets"]["orders"]["roles"] = {"read": "airlock_reader", "write": "airlock_writer"}
    document["targets"]["shop"]["databases"] = ["shop", "shop_archive"]
    settings = load_settings(write_config(tmp_path, document), environ=ENVIRON)
    orders = settings.targets["orders"]
    assert (orders.read_role, orders.write_role) == ("airlock_reader", "airlock_writer")
    assert settings.targets["shop"].databases == ("shop", "shop_archive")


def test_mysql_target_exposes_its_upstream_database_by_default(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, base_document()), environ=ENVIRON)
    assert settings.targets["shop"].databases == ("shop",)
    assert settings.targets["orders"].read_role is None


def test_all_sets_every_class_and_named_classes_override(tmp_path: Path) -> None:
    document = base_document()
    document["rules"] = [
        {"groups": ["dba"], "targets": ["orders"], "all": "allow"},
        {
            "groups": ["agents"],
            "targets": ["orders"],
            "all": "approve",
            "read": "allow",
            "ddl": "deny",
            "approvers": ["oncall-dba"],
        },
    ]
    settings = load_settings(write_config(tmp_path, document), environ=ENVIRON)
    everything, mostly_held = settings.rules
    assert [everything.action_for(c) for c in ("read", "write", "ddl", "admin", "unknown")] == [
        Action.ALLOW
    ] * 5
    assert [mostly_held.action_for(c) for c in ("read", "write", "ddl", "admin", "unknown")] == [
        Action.ALLOW,
        Action.APPROVE,
        Action.DENY,
        Action.APPROVE,
        Action.APPROVE,
    ]


def test_a_target_may_be_the_default_of_its_protocol(tmp_path: Path) -> None:
    document = base_document()
    document["targets"]["shop"]["default"] = True
    settings = load_settings(write_config(tmp_path, document), environ=ENVIRON)
    assert settings.targets["shop"].default
    assert not settings.targets["orders"].default


def test_web_client_for_sso_sign_in(tmp_path: Path) -> None:
    document = base_document()
    document["web"] = {
        "client_id": "0oa1desk",
        "client_secret_env": "DESK_SECRET",
        "redirect_url": "https://airlock.example.com/sso/callback",
        "scopes": ["groups", "email"],
    }
    settings = parse_settings(
        document, source=tmp_path / "a.yaml", environ={**ENVIRON, "DESK_SECRET": "s"}
    )
    assert settings.web is not None
    assert settings.web.client_id == "0oa1desk"
    assert settings.web.client_secret == "s"
    assert settings.web.redirect_url == "https://airlock.example.com/sso/callback"
    assert settings.web.scopes == ("openid", "groups", "email")  # openid always asked for
    assert "'s'" not in repr(settings.web)  # the secret stays out of logs and errors
    del document["web"]
    assert parse_settings(document, source=tmp_path / "a.yaml", environ=ENVIRON).web is None


@pytest.mark.parametrize(
    ("web", "environ", "error"),
    [
        ({"redirect_url": "https://a.example/sso/callback"}, {}, r"web\.client_id: is required"),
        ({"client_id": "c"}, {}, r"web\.redirect_url: is required"),
        (
            {"client_id": "c", "redirect_url": "http://airlock.example/sso/callback"},
            {},
            r"web\.redirect_url: must use https",
        ),
        (
            {"client_id": "c", "redirect_url": "https://airlock.example/callback"},
            {},
            r"web\.redirect_url: must be this gateway's /sso/callback",
        ),
        (
            {
                "client_id": "c",
                "redirect_url": "https://a.example/sso/callback",
                "client_secret": "x",
            },
            {},
            r"web\.client_secret: unknown key",
        ),
        (
            {
                "client_id": "c",
                "redirect_url": "https://a.example/sso/callback",
                "client_secret_env": "NOPE",
            },
            {},
            r"web\.client_secret_env: environment variable 'NOPE' is not set",
        ),
    ],
)
def test_web_client_refuses(
    tmp_path: Path, web: dict[str, Any], environ: dict[str, str], error: str
) -> None:
    document = base_document()
    document["web"] = web
    with pytest.raises(ConfigError, match=error):
        parse_settings(document, source=tmp_path / "a.yaml", environ={**ENVIRON, **environ})


def test_approvals_required_names_classes_that_need_approval(tmp_path: Path) -> None:
    document = base_document()
    document["rules"][0]["ddl"] = "approve"
    document["rules"][0]["approvals_required"] = {"ddl": 2}
    document["web"] = {"public_url": "https://airlock.example.com/"}
    settings = load_settings(write_config(tmp_path, document), environ=ENVIRON)
    assert settings.rules[0].approvals_for("ddl") == 2
    assert settings.rules[0].approvals_for("write") == 1
    assert settings.public_url == "https://airlock.example.com"


@pytest.mark.parametrize(
    ("required", "problem"),
    [
        ({"ddl": 2}, r"rules\[0\]\.approvals_required\.ddl: ddl statements are deny in this rule"),
        ({"write": 0}, r"approvals_required\.write: must be a whole number from 1 to 10"),
        ({"write": 11}, r"approvals_required\.write: must be a whole number from 1 to 10"),
        ({"write": "two"}, r"approvals_required\.write: must be a whole number"),
        ({"writes": 2}, r"approvals_required\.writes: unknown key"),
        ([2], r"approvals_required: must be a mapping"),
    ],
)
def test_bad_approvals_required_is_refused_clearly(
    tmp_path: Path, required: object, problem: str
) -> None:
    document = base_document()
    document["rules"][0]["approvals_required"] = required
    with pytest.raises(ConfigError, match=problem):
        load_settings(write_config(tmp_path, document), environ=ENVIRON)


@pytest.mark.parametrize(
    "url", ["ftp://airlock.example.com", "airlock.example.com", "https://a.example.com/?x=1"]
)
def test_a_bad_web_public_url_is_refused(tmp_path: Path, url: str) -> None:
    document = base_document()
    document["web"] = {"public_url": url}
    with pytest.raises(ConfigError, match=r"web\.public_url: must"):
        load_settings(write_config(tmp_path, document), environ=ENVIRON)
