"""`airlock serve --workers N`: N worker processes on the same ports, and their supervisor.

Each worker is a whole gateway (`airlock serve --worker I`, its own event loop) that binds
the PostgreSQL, MySQL and API ports with SO_REUSEPORT, so the kernel spreads new
connections over the workers. Each registers in the shared store as a gateway of its own
(its own owner number for cancel keys, its own heartbeat), which is why N > 1 needs
`store: postgresql://...`: with SQLite each worker would keep its own approvals.

The supervisor (this module, the process `airlock serve` started as) only starts,
watches and signals them: a worker that dies is started again after a second; SIGTERM,
SIGINT and SIGHUP are passed on to every worker (a drain, an interrupt, a reload), and
the supervisor exits once they all have.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from proxy.config import Settings
from proxy.core.tls import ensure_self_signed
from proxy.recording.signing import load_or_create

log = logging.getLogger("airlock.workers")

#: A worker that exits with an error status this soon failed to start (a port in use, a
#: store it cannot reach): the supervisor gives up. Any other death (a signal, later) is
#: a crash: the worker is started again.
STARTUP_S = 5.0
RESTART_DELAY_S = 1.0
POLL_S = 0.2


def check_workers(settings: Settings, workers: int) -> str | None:
    """Why `workers` cannot serve these settings, or None."""
    if workers < 1:
        return "--workers must be at least 1"
    if workers == 1:
        return None
    if settings.store.url is None:
        return (
            f"--workers {workers} needs the shared store (store: postgresql://...): with the"
            " SQLite store each worker would keep approvals of its own"
        )
    listen = settings.listen
    for name, endpoint in (("postgres", listen.postgres), ("mysql", listen.mysql),
                           ("api", listen.api)):  # fmt: skip
        if endpoint is not None and endpoint.port == 0:
            return f"--workers {workers} needs a fixed port for listen.{name} (not 0)"
    return None


@dataclass
class _Worker:
    number: int
    process: subprocess.Popen[bytes]
    started: float


class Supervisor:
    def __init__(self, settings: Settings, command: Sequence[str], workers: int) -> None:
        """`command`: the worker's command line, to which " --worker I" is appended."""
        self.settings = settings
        self.command = list(command)
        self.count = workers
        self.workers: dict[int, _Worker] = {}
        self._stopping = False
        self._signals: list[int] = []

    def _start(self, number: int) -> None:
        process = subprocess.Popen([*self.command, "--worker", str(number)])
        self.workers[number] = _Worker(number, process, time.monotonic())
        log.info("worker %d started (pid %d)", number, process.pid)

    def _received(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _prepare(self) -> None:
        """What the workers share in data_dir, made once here, before they race for it."""
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if settings.tls.cert_file is None or settings.tls.key_file is None:
            ensure_self_signed(settings.data_dir / "tls")
        load_or_create(settings.data_dir)

    def run(self) -> int:
        """Start the workers and keep them running until a signal stops them; the exit
        status (0 after SIGTERM/SIGINT; 1 when a worker could not start)."""
        self._prepare()
        for caught in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(caught, self._received)
        for number in range(1, self.count + 1):
            self._start(number)
        log.info("supervising %d workers", self.count)
        status = 0
        restarts: dict[int, float] = {}
        while self.workers or (restarts and not self._stopping):
            while self._signals:
                signum = self._signals.pop(0)
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self._stopping = True
                self._forward(signum)
            for number, worker in list(self.workers.items()):
                code = worker.process.poll()
                if code is None:
                    continue
                del self.workers[number]
                if self._stopping:
                    continue
                if time.monotonic() - worker.started < STARTUP_S and code > 0:
                    log.error("worker %d failed to start (exit %d): stopping", number, code)
                    self._stopping = True
                    status = 1
                    self._forward(signal.SIGTERM)
                    continue
                log.warning("worker %d (pid %d) exited (%d): restarting",
                            number, worker.process.pid, code)  # fmt: skip
                restarts[number] = time.monotonic() + RESTART_DELAY_S
            for number, when in list(restarts.items()):
                if self._stopping:
                    restarts.clear()
                elif time.monotonic() >= when:
                    del restarts[number]
                    self._start(number)
            time.sleep(POLL_S)
        log.info("all workers stopped")
        return status

    def _forward(self, signum: int) -> None:
        for worker in self.workers.values():
            if worker.process.poll() is None:
                os.kill(worker.process.pid, signum)


def worker_command(config: str, extra: Sequence[str]) -> list[str]:
    """The command line of one worker: this Python, this package, `serve` (the worker
    number is appended by the supervisor)."""
    return [sys.executable, "-m", "proxy.cli", *extra, "serve", "--config", config]
