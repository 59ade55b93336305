"""The gateway's Prometheus metrics (`GET /metrics`), exposed with prometheus_client.

Each `Gateway` has its own `CollectorRegistry` (no global one): build_info, the
process and Python collectors, two histograms sessions observe as they run
(`Instruments`), and a collector that reads the gateway's counts at scrape time
(`Snapshot`): sessions, statements by target, class and decision, logins refused by
reason, approval requests, classifier cache, webhooks, transcript write failures.

What the relay's hot path pays: nothing per statement for the counts (the PostgreSQL
gate counts allowed statements per class in C, merged here at scrape time), and for
the added-latency histogram one read in `LATENCY_SAMPLE_EVERY` is timed (a countdown
per client read; the timed read costs two clock reads and an observe). Statements
decided off the hot path (classified cold, held, refused) are each timed.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable, Iterable
from importlib import metadata

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from proxy.errors import (
    AirlockError,
    AuthenticationFailed,
    AuthorizationDenied,
    InsecureTransport,
    LoginTimedOut,
    RecordingUnavailable,
    TooManyLogins,
    UnknownTarget,
    UpstreamUnavailable,
)

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_SAMPLE_EVERY",
    "Instruments",
    "Snapshot",
    "StatementCounts",
    "counter",
    "decision_label",
    "exposition",
    "gateway_registry",
    "gauge",
    "refusal_reason",
]

#: What `exposition` writes: the text format every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The hot path times one client read in this many (see the module docstring).
LATENCY_SAMPLE_EVERY = 256

#: Seconds: from a relayed read's microseconds to a statement classified cold.
LATENCY_BUCKETS = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
#: Seconds: an approver answers in seconds to an hour (hold_timeout).
HOLD_WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

#: (target, class, decision label) -> statements.
StatementCounts = Counter[tuple[str, str, str]]


class Instruments:
    """What sessions observe as they run; every listener's sessions share one."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.hold_wait = Histogram(
            "airlock_hold_wait_seconds",
            "Time a held statement waited for its approval request to be decided (approved, "
            "denied, withdrawn, or hold_timeout), by target.",
            ["target"],
            buckets=HOLD_WAIT_BUCKETS,
            registry=registry,
        )
        self.added_latency = Histogram(
            "airlock_added_latency_seconds",
            "Time from a client's bytes read by the gateway to their forwarding upstream. "
            'path="relay": reads the relay passes itself, one in '
            f"{LATENCY_SAMPLE_EVERY} timed; "
            'path="decided": statements decided off the relay (classified cold, held, '
            "refused), each timed, a hold's wait for an approver left out.",
            ["protocol", "path"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def relay_latency(self, protocol: str) -> Callable[[float], None]:
        """The observer of the relay's sampled reads for `protocol`."""
        return self.added_latency.labels(protocol=protocol, path="relay").observe

    def decided_latency(self, protocol: str) -> Callable[[float], None]:
        return self.added_latency.labels(protocol=protocol, path="decided").observe


#: How a statement was decided, as the transcript says it (by its start), for the
#: `decision` label: a handful of values, never a request id.
_DECISION_PREFIXES = (
    ("allow", "allowed"),
    ("approved", "approved"),
    ("deny", "denied"),
    ("denied by", "denied_by_approver"),
    ("rejected until approved", "rejected"),
    ("hold timed out", "timed_out"),
    ("withdrawn", "withdrawn"),
    ("session ended", "session_ended"),
)
_DECISIONS = {"allow": "allowed", "approved for the session": "approved", "deny": "denied"}


def decision_label(decision: str) -> str:
    """The `decision` label of a transcript's decision ("approved by x (id)": approved)."""
    label = _DECISIONS.get(decision)
    if label is not None:
        return label
    for prefix, name in _DECISION_PREFIXES:
        if decision.startswith(prefix):
            return name
    return "other"


#: Why a login was refused, for airlock_login_refusals_total's `reason` label; the most
#: specific class first (InsecureTransport is an AuthorizationDenied).
_REFUSALS: tuple[tuple[type[AirlockError], str], ...] = (
    (InsecureTransport, "insecure_transport"),
    (AuthorizationDenied, "not_authorized"),
    (AuthenticationFailed, "authentication"),
    (UnknownTarget, "unknown_target"),
    (UpstreamUnavailable, "upstream_unavailable"),
    (RecordingUnavailable, "recording_unavailable"),
    (TooManyLogins, "too_many_logins"),
    (LoginTimedOut, "timeout"),
)


def refusal_reason(error: AirlockError) -> str:
    for kind, reason in _REFUSALS:
        if isinstance(error, kind):
            return reason
    return "protocol_error"


class Snapshot(Collector):
    """Families read from the gateway's state at each scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def gateway_registry(snapshot: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    """A registry with build_info, the process, platform and GC collectors, and
    `snapshot`'s families; `Instruments(registry)` adds the histograms."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    build = GaugeMetricFamily(
        "airlock_build_info",
        "The running gateway's version and Python; always 1.",
        labels=["version", "python"],
    )
    build.add_metric([_version(), platform.python_version()], 1.0)
    registry.register(Snapshot(lambda: [build]))
    registry.register(Snapshot(snapshot))
    return registry


def _version() -> str:
    try:
        return metadata.version("airlock-gateway")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format (version 0.0.4) of everything in `registry`."""
    return generate_latest(registry)


Samples = Iterable[tuple[list[str], float]]


def counter(name: str, help_text: str, labels: list[str], samples: Samples) -> CounterMetricFamily:
    """A counter family read at scrape time (`name` without _total: it is added)."""
    family = CounterMetricFamily(name, help_text, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def gauge(name: str, help_text: str, labels: list[str], samples: Samples) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family
