"""The running gateway: wires settings, identity, TLS, listeners and the API together.

This is the only place that owns long-lived asyncio objects; everything below
it is handed what it needs explicitly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import signal
import ssl
import time
from typing import Any, TypeVar

from aiohttp import web

from policy.identity import Identity
from proxy import logs
from proxy.api import CredentialsApi, Metric, make_app
from proxy.approvals import ApprovalHub
from proxy.classifying import Classifiers
from proxy.config import Endpoint, Settings, dev_issuer_url
from proxy.credentials import CredentialBook
from proxy.dev_issuer import DevIssuer
from proxy.errors import IssuerUnavailable
from proxy.mysql_server import MySqlListener, MySqlSession
from proxy.oidc import OidcVerifier
from proxy.pg_server import PgListener, PgSession
from proxy.recording.writer import Recorder
from proxy.signing import load_or_create
from proxy.store import ApprovalStore
from proxy.tls import ensure_self_signed, server_context
from proxy.web import WebPages
from proxy.webhooks import WebhookNotifier

log = logging.getLogger("airlock")

L = TypeVar("L", PgListener, MySqlListener)


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verifier: OidcVerifier | None = None
        self.dev_issuer: DevIssuer | None = None
        self.tls_context: ssl.SSLContext | None = None
        self.postgres: PgListener | None = None
        self.mysql: MySqlListener | None = None
        self.store: ApprovalStore | None = None
        self.hub: ApprovalHub | None = None
        self.notifier: WebhookNotifier | None = None
        self.classifiers = Classifiers(
            max_statement_bytes=settings.max_statement_bytes,
            timeout_s=settings.classify_timeout_s,
        )
        #: Credentials minted through the API, for both listeners.
        self.credentials = CredentialBook()
        self.recorder: Recorder | None = None
        self._api_runner: web.AppRunner | None = None
        #: (host, port) actually bound, per listener name; port 0 in the config picks a free one.
        self.bound: dict[str, tuple[str, int]] = {}

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if settings.tls.cert_file is not None and settings.tls.key_file is not None:
            cert, key = settings.tls.cert_file, settings.tls.key_file
        else:
            cert, key = ensure_self_signed(settings.data_dir / "tls")
        self.tls_context = server_context(cert, key)
        self.recorder = Recorder(settings.data_dir, load_or_create(settings.data_dir))
        await self.recorder.start()
        self.store = ApprovalStore(settings.data_dir / "airlock.db")
        # Their sessions ended with the last process: a statement that waited never runs.
        withdrawn = self.store.withdraw_orphaned_holds(
            reason="the gateway restarted: the client's connection had ended", now=time.time()
        )
        if withdrawn:
            log.info("%d held request(s) from earlier sessions withdrawn", withdrawn)
        orphaned = self.store.sessions_gone()
        if orphaned:
            log.info("%d approval request(s) from earlier sessions marked session gone", orphaned)
        if settings.webhooks or any(rule.webhooks for rule in settings.rules):
            self.notifier = WebhookNotifier()
            await self.notifier.start()
        self.hub = ApprovalHub(
            self.store,
            notifier=self.notifier,
            global_webhooks=settings.webhooks,
            clock=time.time,
        )
        # The API comes up first: with dev_issuer on, it serves the keys tokens verify against.
        if settings.listen.api is not None:
            await self._start_api(settings)
        settings = self.settings
        self.verifier = OidcVerifier(settings.identity)
        await self.verifier.start()
        if settings.listen.postgres is not None:
            self.postgres = self._listener(PgListener)
            await self._listen("postgres", self.postgres, settings.listen.postgres)
        if settings.listen.mysql is not None:
            self.mysql = self._listener(MySqlListener)
            await self._listen("mysql", self.mysql, settings.listen.mysql)
        for name, (host, port) in self.bound.items():
            log.info("listening for %s on %s", name, logs.host_port((host, port)))

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
        )

    async def _listen(
        self, name: str, listener: PgListener | MySqlListener, endpoint: Endpoint
    ) -> None:
        server = await listener.start(endpoint.host, endpoint.port)
        self.bound[name] = _bound_address(server)

    async def _start_api(self, settings: Settings) -> None:
        assert settings.listen.api is not None
        assert self.hub is not None
        verifier = _LateVerifier(self)
        app = make_app(
            self._health,
            hub=self.hub,
            verifier=verifier,
            data_dir=settings.data_dir,
            auditors=settings.auditors,
            metrics=self._metrics,
            credentials=CredentialsApi(
                self.credentials, verifier, settings.targets, settings.rules
            ),
            pages=WebPages(self.hub, verifier, settings.data_dir, settings.auditors),
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
            self.dev_issuer = issuer
        await runner.setup()
        site = web.TCPSite(runner, settings.listen.api.host, settings.listen.api.port)
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

    def _metrics(self) -> list[Metric]:
        listeners = self._listeners()
        sessions = sum(len(listener.sessions) for listener in listeners)
        statements = sum(
            listener.statements + sum(s.uncounted_statements() for s in listener.sessions)
            for listener in listeners
        )
        caches = [(dialect, self.classifiers.cached(dialect)) for dialect in ("postgres", "mysql")]
        approvals = self.store.count_by_state() if self.store else {}
        notifier = self.notifier
        webhooks: list[tuple[dict[str, str], float]] = [
            ({"result": "delivered"}, notifier.delivered if notifier else 0),
            ({"result": "failed"}, notifier.failed if notifier else 0),
            ({"result": "dropped"}, notifier.dropped if notifier else 0),
        ]
        return [
            ("airlock_sessions", "gauge", "Client sessions open now.", [({}, sessions)]),
            (
                "airlock_statements_total",
                "counter",
                "Statements decided (allowed, held or refused) since the gateway started.",
                [({}, statements)],
            ),
            (
                "airlock_approval_requests",
                "gauge",
                "Approval requests in the store, by state.",
                [({"state": state}, count) for state, count in sorted(approvals.items())],
            ),
            (
                "airlock_classifier_cache_total",
                "counter",
                "Verdict cache lookups, by SQL dialect and outcome.",
                [
                    sample
                    for dialect, cache in caches
                    for sample in (
                        ({"dialect": dialect, "outcome": "hit"}, cache.hits),
                        ({"dialect": dialect, "outcome": "miss"}, cache.misses),
                    )
                ],
            ),
            ("airlock_webhook_deliveries_total", "counter", "Webhook deliveries.", webhooks),
            (
                "airlock_transcript_write_failures_total",
                "counter",
                "Transcript writes (write and fsync) that failed, each retry counted.",
                [({}, self.recorder.write_failures if self.recorder else 0)],
            ),
            *self._login_metrics(),
        ]

    def _login_metrics(self) -> list[Metric]:
        """Connections logging in now, and logins refused (limits.*), by protocol."""
        listeners = [
            (protocol, listener)
            for protocol, listener in (("postgres", self.postgres), ("mysql", self.mysql))
            if listener is not None
        ]
        return [
            (
                "airlock_pending_logins",
                "gauge",
                "Connections accepted and not yet logged in.",
                [({"protocol": name}, lst.pending_logins.total) for name, lst in listeners],
            ),
            (
                "airlock_login_refusals_total",
                "counter",
                "Connections refused over a pending-login cap (per_address, total) or closed "
                "at the login timeout (timeout).",
                [
                    ({"protocol": name, "reason": reason}, count)
                    for name, lst in listeners
                    for reason, count in lst.pending_logins.refused.items()
                ],
            ),
        ]

    def _listeners(self) -> list[PgListener | MySqlListener]:
        return [listener for listener in (self.postgres, self.mysql) if listener is not None]

    def _live_sessions(self) -> list[PgSession | MySqlSession]:
        return [session for listener in self._listeners() for session in listener.sessions]

    def _health(self) -> dict[str, object]:
        return {"sessions": sum(len(listener.sessions) for listener in self._listeners())}

    async def close(self) -> None:
        for listener in self._listeners():
            await listener.close()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        if self.verifier is not None:
            await self.verifier.close()
        if self.notifier is not None:
            await self.notifier.close()
        if self.recorder is not None:
            await self.recorder.close()  # after the sessions, which sealed their transcripts
        self.classifiers.close()
        if self.store is not None:
            self.store.close()

    async def serve_forever(self) -> None:
        """Run until SIGINT or SIGTERM, then close sessions cleanly."""
        open_files = raise_open_files_limit()
        log.info(
            "open files limit: %d (each session holds three: client, upstream, transcript)",
            open_files,
        )
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.close()


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


def _bound_address(server: Any, site: web.TCPSite | None = None) -> tuple[str, int]:
    # uvloop's Server is not an asyncio.Server subclass, but has the same `sockets`;
    # aiohttp keeps its site's server private, so read it from there.
    holder: Any = site._server if site is not None else server
    sockname = holder.sockets[0].getsockname()
    return str(sockname[0]), int(sockname[1])
