"""The running gateway: wires settings, identity, TLS, listeners and the API together.

This is the only place that owns long-lived asyncio objects; everything below
it is handed what it needs explicitly. It also answers the operator's signals:

- SIGTERM drains: the listeners stop accepting, held statements are refused (their
  requests withdrawn), sessions end as their statements finish, and those still running
  a statement (or, PostgreSQL, inside a transaction) after `limits.drain_timeout` end
  with FATAL 57P01 (MySQL 1053) and their upstream statements cancelled; then the
  process exits 0. A second SIGTERM or a SIGINT cuts the grace short; SIGINT alone
  ends everything at once.
- SIGHUP reloads the config file: rules, targets, identity, webhooks and login limits
  apply to sessions that log in from then on; a session keeps the rules (and target)
  it logged in with. A config that does not load is logged and the running one kept;
  keys that need a restart (listen, data_dir, tls, dev_issuer, recording, auditors,
  max_statement_bytes, classify_timeout) keep their running values, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import resource
import signal
import sqlite3
import ssl
import time
from collections import Counter
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client.core import Metric

from policy.identity import Identity
from proxy import logs
from proxy.approvals.credentials import CredentialBook
from proxy.approvals.hub import ApprovalHub
from proxy.approvals.store import ApprovalStore, StoreUnavailable
from proxy.approvals.store_pg import PgStore, TranscriptStore
from proxy.approvals.webhooks import WebhookNotifier
from proxy.config import ConfigError, Endpoint, Settings, dev_issuer_url, load_settings
from proxy.core.classifying import Classifiers
from proxy.core.metrics import Instruments, StatementCounts, counter, gateway_registry, gauge
from proxy.core.tls import ensure_self_signed, server_context
from proxy.errors import GatewayShuttingDown, IssuerUnavailable
from proxy.http.api import CredentialsApi, make_app
from proxy.http.dev_issuer import DevIssuer
from proxy.http.oidc import OidcConfigError, OidcVerifier, SignInEndpoints
from proxy.http.sso import SsoClient
from proxy.http.web import WebPages
from proxy.mysql.session import MySqlListener, MySqlSession
from proxy.postgres.session import PgListener, PgSession
from proxy.recording.shipping import TranscriptShipper
from proxy.recording.signing import load_or_create
from proxy.recording.writer import Recorder

log = logging.getLogger("airlock")

L = TypeVar("L", PgListener, MySqlListener)

#: What a session ended by a drain is told (FATAL 57P01; MySQL 1053).
DRAINING = "terminating connection due to administrator command: the gateway is draining"
#: How often a drain looks for sessions that finished their statements.
_DRAIN_POLL_S = 0.05
#: How long /readyz waits for each upstream's TCP handshake.
_READY_CONNECT_TIMEOUT_S = 2.0
#: Settings a reload cannot change in a running gateway, by their config key.
_RESTART_ONLY = {
    "listen": "listen",
    "data_dir": "data_dir",
    "tls": "tls",
    "dev_issuer": "dev_issuer",
    "recording": "recording",
    "auditors": "auditors",
    "web": "web",
    "store": "store",
    "max_statement_bytes": "limits.max_statement_bytes",
    "classify_timeout_s": "limits.classify_timeout",
}


class Gateway:
    def __init__(self, settings: Settings, *, reuse_port: bool = False) -> None:
        self.settings = settings
        #: One of `airlock serve --workers N`: the listening ports are shared (SO_REUSEPORT).
        self.reuse_port = reuse_port
        self.verifier: OidcVerifier | None = None
        self.dev_issuer: DevIssuer | None = None
        self.tls_context: ssl.SSLContext | None = None
        self.postgres: PgListener | None = None
        self.mysql: MySqlListener | None = None
        self.store: ApprovalStore | None = None
        #: The shared store's LISTEN / heartbeat loop (store: postgresql://...).
        self._following: asyncio.Task[None] | None = None
        self.hub: ApprovalHub | None = None
        self.notifier: WebhookNotifier | None = None
        self.classifiers = Classifiers(
            max_statement_bytes=settings.max_statement_bytes,
            timeout_s=settings.classify_timeout_s,
        )
        #: Credentials minted through the API, for both listeners.
        self.credentials = CredentialBook()
        self.recorder: Recorder | None = None
        #: With a shared store: sealed transcripts shipped there, and read back by the API.
        self.transcripts: TranscriptStore | None = None
        self.shipper: TranscriptShipper | None = None
        self._api_runner: web.AppRunner | None = None
        #: (host, port) actually bound, per listener name; port 0 in the config picks a free one.
        self.bound: dict[str, tuple[str, int]] = {}
        #: SIGTERM was received: /readyz says not ready, sessions end as they finish.
        self.draining = False
        self.reloads: Counter[str] = Counter({"ok": 0, "failed": 0})
        self._credentials_api: CredentialsApi | None = None
        self._reloading = asyncio.Lock()
        self._hurry = False  # a second signal during a drain: end it now
        #: Verifiers a reload replaced: closed at shutdown, as logins may still use them.
        self._retired: list[OidcVerifier] = []
        #: GET /metrics: the registry (last: it reads the state above once on registering),
        #: and the histograms the sessions observe.
        self.registry = gateway_registry(self._metric_families)
        self.instruments = Instruments(self.registry)

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if settings.tls.cert_file is not None and settings.tls.key_file is not None:
            cert, key = settings.tls.cert_file, settings.tls.key_file
        else:
            cert, key = ensure_self_signed(settings.data_dir / "tls")
        self.tls_context = server_context(cert, key)
        signing_key = load_or_create(settings.data_dir)
        self.recorder = Recorder(settings.data_dir, signing_key)
        await self.recorder.start()
        if settings.store.url is not None:
            shared = PgStore(
                settings.store.url,
                poll_s=settings.store.poll_s,
                heartbeat_timeout_s=settings.store.heartbeat_timeout_s,
            )
            try:
                await asyncio.to_thread(
                    shared.open,
                    now=time.time(),
                    key_id=signing_key.key_id,
                    public_key_pem=signing_key.public_key_pem(),
                )
            except StoreUnavailable as error:
                raise SystemExit(f"airlock: store: {error}") from None
            self.store = shared
            self.credentials.shared = shared
            assert shared.gateway_id is not None  # PgStore names itself
            self.transcripts = TranscriptStore(shared.url, shared.gateway_id)
            self.shipper = TranscriptShipper(self.transcripts, settings.data_dir)
            self.recorder.on_sealed = self.shipper.sealed
            self.shipper.start()
        else:
            self.store = ApprovalStore(settings.data_dir / "airlock.db")
            # Their sessions ended with the last process: a statement that waited never runs.
            withdrawn = self.store.withdraw_orphaned_holds(
                reason="the gateway restarted: the client's connection had ended", now=time.time()
            )
            if withdrawn:
                log.info("%d held request(s) from earlier sessions withdrawn", withdrawn)
            orphaned = self.store.sessions_gone()
            if orphaned:
                log.info(
                    "%d approval request(s) from earlier sessions marked session gone", orphaned
                )
        if settings.webhooks or any(rule.webhooks for rule in settings.rules):
            self.notifier = WebhookNotifier()
            await self.notifier.start()
        self.hub = ApprovalHub(
            self.store,
            notifier=self.notifier,
            global_webhooks=settings.webhooks,
            clock=time.time,
            public_url=settings.public_url,
        )
        if isinstance(self.store, PgStore):
            self._following = asyncio.create_task(
                self.store.follow(self.hub.wake, time.time, cancel=self._cancel_forwarded)
            )
        # The API comes up first: with dev_issuer on, it serves the keys tokens verify against.
        if settings.listen.api is not None:
            await self._start_api(settings)
        settings = self.settings
        self.verifier = OidcVerifier(settings.identity)
        await self.verifier.start()
        if settings.listen.postgres is not None:
            self.postgres = self._listener(PgListener)
            if isinstance(self.store, PgStore):
                self.postgres.owner = self.store.owner
                self.postgres.route_cancel = self._route_cancel
            await self._listen("postgres", self.postgres, settings.listen.postgres)
        if settings.listen.mysql is not None:
            self.mysql = self._listener(MySqlListener)
            await self._listen("mysql", self.mysql, settings.listen.mysql)
        for name, (host, port) in self.bound.items():
            log.info("listening for %s on %s", name, logs.host_port((host, port)))

    def _route_cancel(self, owner: int, process_id: int, secret: int) -> None:
        """A cancel key another gateway or worker minted: over the store to its owner."""
        assert isinstance(self.store, PgStore)
        try:
            self.store.send_cancel(owner, process_id, secret)
        except StoreUnavailable as error:
            log.warning("could not forward a cancel request to owner %d: %s", owner, error)

    def _cancel_forwarded(self, process_id: int, secret: int) -> None:
        if self.postgres is not None:
            self.postgres.cancel_forwarded(process_id, secret)

    def _listener(self, kind: type[L]) -> L:
        assert self.verifier is not None
        assert self.hub is not None
        return kind(
            self.settings,
            self.verifier,
            self.tls_context,
            hub=self.hub,
            classifiers=self.classifiers,
            recorder=self.recorder,
            credentials=self.credentials,
            instruments=self.instruments,
        )

    async def _listen(
        self, name: str, listener: PgListener | MySqlListener, endpoint: Endpoint
    ) -> None:
        server = await listener.start(endpoint.host, endpoint.port, reuse_port=self.reuse_port)
        self.bound[name] = _bound_address(server)

    async def _start_api(self, settings: Settings) -> None:
        assert settings.listen.api is not None
        assert self.hub is not None
        verifier = _LateVerifier(self)
        self._credentials_api = CredentialsApi(
            self.credentials, verifier, settings.targets, settings.rules
        )
        app = make_app(
            self._health,
            hub=self.hub,
            verifier=verifier,
            data_dir=settings.data_dir,
            transcripts=self.transcripts,
            auditors=settings.auditors,
            metrics=self.registry,
            readiness=self.readiness,
            credentials=self._credentials_api,
            pages=WebPages(
                self.hub,
                verifier,
                settings.data_dir,
                settings.auditors,
                sso=SsoClient(settings.web, verifier) if settings.web is not None else None,
                shared=self.store if isinstance(self.store, PgStore) else None,
                transcripts=self.transcripts,
            ),
            live_sessions=self._live_sessions,
        )
        runner = web.AppRunner(app, access_log=None)
        self._api_runner = runner
        if settings.dev_issuer:
            # Routes must exist before the app starts; the issuer URL is fixed below.
            issuer = DevIssuer(
                settings.data_dir, settings.identity.issuer, settings.identity.audience
            )
            app.router.add_routes(issuer.routes())
            if settings.web is not None:
                # The web page signs in at the development issuer as at any other.
                issuer.register_client(
                    settings.web.client_id, [settings.web.redirect_url], settings.web.client_secret
                )
            self.dev_issuer = issuer
        await runner.setup()
        site = web.TCPSite(
            runner,
            settings.listen.api.host,
            settings.listen.api.port,
            reuse_port=self.reuse_port or None,
        )
        await site.start()
        self.bound["api"] = _bound_address(runner.server, site)
        if self.dev_issuer is not None and settings.listen.api.port == 0:
            url = dev_issuer_url(settings.listen, self.bound["api"][1])
            identity = dataclasses.replace(settings.identity, issuer=url)
            self.settings = dataclasses.replace(settings, identity=identity)
            self.dev_issuer.issuer = url
        if self.dev_issuer is not None:
            log.warning(
                "development issuer enabled at %s: not for production", self.dev_issuer.issuer
            )

    # --- metrics and readiness

    def _metric_families(self) -> list[Metric]:
        """The gateway's counts at scrape time (proxy/core/metrics.py has the histograms)."""
        listeners = self._listeners()
        sessions = sum(len(listener.sessions) for listener in listeners)
        statements = StatementCounts()
        for listener in listeners:
            statements.update(listener.statement_counts)
            for session in listener.sessions:
                statements.update(session.uncounted_statements())
        caches = [(dialect, self.classifiers.cached(dialect)) for dialect in ("postgres", "mysql")]
        try:
            approvals = self.store.count_by_state() if self.store else {}
        except StoreUnavailable:
            approvals = {}
        notifier = self.notifier
        webhooks = {
            "delivered": notifier.delivered if notifier else 0,
            "failed": notifier.failed if notifier else 0,
            "dropped": notifier.dropped if notifier else 0,
        }
        return [
            gauge("airlock_sessions", "Client sessions open now.", [], [([], sessions)]),
            counter(
                "airlock_statements",
                "Statements decided since the gateway started, by target, statement class "
                "and decision (allowed, approved, denied, denied_by_approver, rejected, "
                "timed_out, withdrawn, session_ended).",
                ["target", "class", "decision"],
                [(list(key), count) for key, count in sorted(statements.items())],
            ),
            gauge(
                "airlock_approval_requests",
                "Approval requests in the store, by state.",
                ["state"],
                [([state], count) for state, count in sorted(approvals.items())],
            ),
            counter(
                "airlock_classifier_cache",
                "Verdict cache lookups, by SQL dialect and outcome.",
                ["dialect", "outcome"],
                [
                    sample
                    for dialect, cache in caches
                    for sample in (
                        ([dialect, "hit"], cache.hits),
                        ([dialect, "miss"], cache.misses),
                    )
                ],
            ),
            counter(
                "airlock_webhook_deliveries",
                "Webhook deliveries, by result.",
                ["result"],
                [([result], count) for result, count in webhooks.items()],
            ),
            counter(
                "airlock_transcript_write_failures",
                "Transcript writes (write and fsync) that failed, each retry counted.",
                [],
                [([], self.recorder.write_failures if self.recorder else 0)],
            ),
            *self._login_metrics(),
            gauge(
                "airlock_draining",
                "1 while the gateway drains after SIGTERM, else 0.",
                [],
                [([], 1 if self.draining else 0)],
            ),
            counter(
                "airlock_config_reloads",
                "Config reloads (SIGHUP), by result: ok, or failed (the running config kept).",
                ["result"],
                [([result], count) for result, count in sorted(self.reloads.items())],
            ),
        ]

    def _login_metrics(self) -> list[Metric]:
        """Connections logging in now, and logins refused, by protocol and reason."""
        listeners = [
            (protocol, listener)
            for protocol, listener in (("postgres", self.postgres), ("mysql", self.mysql))
            if listener is not None
        ]
        refusals: Counter[tuple[str, str]] = Counter()
        for name, listener in listeners:
            for reason, count in listener.pending_logins.refused.items():
                refusals[(name, reason)] += count
            for reason, count in listener.login_refusals.items():
                refusals[(name, reason)] += count
        return [
            gauge(
                "airlock_pending_logins",
                "Connections accepted and not yet logged in.",
                ["protocol"],
                [([name], listener.pending_logins.total) for name, listener in listeners],
            ),
            counter(
                "airlock_login_refusals",
                "Logins refused, by protocol and reason: per_address, total (over a "
                "pending-login cap), timeout (limits.login_timeout), authentication (no "
                "valid token or password), not_authorized (no rule for the target), "
                "insecure_transport, unknown_target, upstream_unavailable, "
                "recording_unavailable, too_many_logins, protocol_error.",
                ["protocol", "reason"],
                [(list(key), count) for key, count in sorted(refusals.items())],
            ),
        ]

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        """GET /readyz: each target's upstream accepts a TCP connection, the issuer's keys
        are held (fetched now if stale or missing), the approval store answers, and the
        gateway is not draining."""
        targets = list(self.settings.targets.values())
        reached = await asyncio.gather(
            *(_reachable(t.upstream.host, t.upstream.port) for t in targets)
        )
        upstreams: dict[str, dict[str, object]] = {}
        for target, error in zip(targets, reached, strict=True):
            check: dict[str, object] = {
                "ok": error is None,
                "address": str(Endpoint(target.upstream.host, target.upstream.port)),
            }
            if error is not None:
                check["error"] = error
            upstreams[target.name] = check
        verifier = self.verifier
        keys_ok = verifier is not None and await verifier.ensure_keys()
        issuer: dict[str, object] = {"ok": keys_ok, "issuer": self.settings.identity.issuer}
        if not keys_ok:
            issuer["error"] = "no key set fetched from the issuer yet"
        store: dict[str, object] = {"ok": True}
        try:
            if self.store is None:
                raise sqlite3.OperationalError("the approval store is not open")
            self.store.count_by_state()
        except (sqlite3.Error, StoreUnavailable) as error:
            store = {"ok": False, "error": str(error)}
        ready = (
            not self.draining
            and keys_ok
            and bool(store["ok"])
            and all(check["ok"] for check in upstreams.values())
        )
        return ready, {
            "draining": self.draining,
            "upstreams": upstreams,
            "issuer_keys": issuer,
            "store": store,
        }

    def _listeners(self) -> list[PgListener | MySqlListener]:
        return [listener for listener in (self.postgres, self.mysql) if listener is not None]

    def _live_sessions(self) -> list[PgSession | MySqlSession]:
        return [session for listener in self._listeners() for session in listener.sessions]

    def _health(self) -> dict[str, object]:
        return {"sessions": sum(len(listener.sessions) for listener in self._listeners())}

    async def close(self) -> None:
        for listener in self._listeners():
            await listener.close()
        for retired in self._retired:
            await retired.close()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        if self.verifier is not None:
            await self.verifier.close()
        if self.notifier is not None:
            await self.notifier.close()
        if self.recorder is not None:
            await self.recorder.close()  # after the sessions, which sealed their transcripts
        if self.shipper is not None:
            await self.shipper.stop()  # after the recorder, which sealed the last ones
        if self.transcripts is not None:
            self.transcripts.close()
        self.classifiers.close()
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
        if isinstance(self.store, PgStore):
            self.store.stop(time.time())
        if self.store is not None:
            self.store.close()

    async def serve_forever(self) -> None:
        """Run until SIGTERM (drain, then close) or SIGINT (close at once); SIGHUP reloads."""
        open_files = raise_open_files_limit()
        log.info(
            "open files limit: %d (each session holds three: client, upstream, transcript)",
            open_files,
        )
        await self.start()
        stop = asyncio.Event()
        drain = False
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task[bool]] = set()

        def terminate() -> None:
            nonlocal drain
            if stop.is_set():
                self._hurry = True  # a second signal: end the drain now
                return
            drain = True
            stop.set()

        def interrupt() -> None:
            self._hurry = True
            stop.set()

        def hang_up() -> None:
            task = loop.create_task(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGTERM, terminate)
        loop.add_signal_handler(signal.SIGINT, interrupt)
        loop.add_signal_handler(signal.SIGHUP, hang_up)
        try:
            await stop.wait()
            if drain:
                await self.drain()
        finally:
            log.info("shutting down")
            if reloads:
                await asyncio.wait(reloads)
            await self.close()

    async def drain(self) -> None:
        """Stop accepting; refuse held statements; end each session once it has nothing
        running (PostgreSQL: and no open transaction); after limits.drain_timeout end the
        rest with 57P01 and cancel what they still run upstream."""
        self.draining = True
        listeners = self._listeners()
        grace_s = self.settings.drain_timeout_s
        log.info(
            "draining: no new connections; %d session(s) have %gs to finish",
            sum(len(listener.sessions) for listener in listeners),
            grace_s,
        )
        for listener in listeners:
            listener.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while True:
            for listener in listeners:
                listener.end_idle("gateway draining", GatewayShuttingDown(DRAINING))
            if not any(listener.sessions for listener in listeners):
                break
            if self._hurry or loop.time() >= deadline:
                left = sum(len(listener.sessions) for listener in listeners)
                log.warning(
                    "drain: %d session(s) still busy; ending them and cancelling their statements",
                    left,
                )
                break
            await asyncio.sleep(_DRAIN_POLL_S)
        for listener in listeners:
            await listener.close(
                "gateway draining: drain_timeout reached",
                GatewayShuttingDown(DRAINING),
                cancel_running=True,
            )
        log.info("drained")

    async def reload(self) -> bool:
        """SIGHUP: load the config file again and apply what can change while running
        (see the module docstring); False, with the running config kept, when it fails."""
        async with self._reloading:
            old = self.settings
            try:
                fresh = load_settings(old.source)
                merged = self._reloadable(old, fresh)
                verifier = self.verifier
                if verifier is None or merged.identity != old.identity:
                    verifier = OidcVerifier(merged.identity)
                    await verifier.start()
            except (ConfigError, OidcConfigError) as error:
                self.reloads["failed"] += 1
                log.error("config reload failed; the running config is kept: %s", error)
                return False
            if verifier is not self.verifier:
                if self.verifier is not None:
                    self._retired.append(self.verifier)
                self.verifier = verifier
            await self._apply_webhooks(merged)
            self.settings = merged
            for listener in self._listeners():
                listener.settings = merged
                listener.verifier = verifier
                listener.pending_logins.limits = merged.logins
            if self._credentials_api is not None:
                self._credentials_api.targets = merged.targets
                self._credentials_api.rules = merged.rules
            self.reloads["ok"] += 1
            log.info(
                "config reloaded from %s: %d target(s), %d rule(s), policy %s; sessions "
                "logged in before keep their rules",
                old.source,
                len(merged.targets),
                len(merged.rules),
                merged.policy_hash[:12],
            )
            return True

    def _reloadable(self, old: Settings, fresh: Settings) -> Settings:
        """`fresh`, with what a reload cannot change kept from `old` (and logged)."""
        kept = {name: getattr(old, name) for name in _RESTART_ONLY}
        for name, key in _RESTART_ONLY.items():
            if getattr(fresh, name) != kept[name]:
                log.warning("config reload: %s changed; it takes effect on restart", key)
        identity = fresh.identity
        if old.dev_issuer:
            # The development issuer lives on the running API listener, at its bound port.
            identity = dataclasses.replace(identity, issuer=old.identity.issuer)
        return dataclasses.replace(fresh, identity=identity, **kept)

    async def _apply_webhooks(self, settings: Settings) -> None:
        hub = self.hub
        assert hub is not None
        hub.global_webhooks = settings.webhooks
        hub.public_url = settings.public_url
        wanted = settings.webhooks or any(rule.webhooks for rule in settings.rules)
        if wanted and self.notifier is None:
            self.notifier = WebhookNotifier()
            await self.notifier.start()
            hub.notifier = self.notifier


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one, as servers do, and return it.

    A session holds three descriptors (client, upstream, transcript), so a service
    manager's usual soft limit of 1024 would cap the gateway at about 330 sessions while
    the hard limit allows far more.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, wanted, error)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _LateVerifier:
    """The gateway's verifier, which exists only once the API listens (see start)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def verify(self, token: str) -> Identity:
        verifier = self._gateway.verifier
        if verifier is None:
            raise IssuerUnavailable()
        return await verifier.verify(token)

    async def sign_in_endpoints(self) -> SignInEndpoints:
        verifier = self._gateway.verifier
        if verifier is None:
            raise IssuerUnavailable()
        return await verifier.sign_in_endpoints()

    async def verify_id_token(self, token: str, *, client_id: str, nonce: str) -> str:
        verifier = self._gateway.verifier
        if verifier is None:
            raise IssuerUnavailable()
        return await verifier.verify_id_token(token, client_id=client_id, nonce=nonce)


def _bound_address(server: Any, site: web.TCPSite | None = None) -> tuple[str, int]:
    # uvloop's Server is not an asyncio.Server subclass, but has the same `sockets`;
    # aiohttp keeps its site's server private, so read it from there.
    holder: Any = site._server if site is not None else server
    sockname = holder.sockets[0].getsockname()
    return str(sockname[0]), int(sockname[1])


async def _reachable(host: str, port: int) -> str | None:
    """None when a TCP connection to host:port opens; else why not, in a few words."""
    try:
        async with asyncio.timeout(_READY_CONNECT_TIMEOUT_S):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no answer within {_READY_CONNECT_TIMEOUT_S:g}s"
    except OSError as error:
        return error.strerror or str(error)
    writer.close()
    with contextlib.suppress(OSError):  # reached it; how the close went does not matter
        await writer.wait_closed()
    return None
