"""Where the gateway's time goes while it relays: a profile under a pgbench select-only run.

The gateway runs in this process, on the same event loop `airlock serve` uses (uvloop
when installed), in front of a throwaway database initialised with `pgbench -i`. The
gateway itself is not changed: it is started from its config like `airlock serve`
starts it, and pgbench reaches it over loopback TCP with a dev-issuer token.

Three pgbench runs follow each other: a warm-up, an unprofiled run (its TPS and the
gateway's CPU time, user and system, show how busy the one event-loop thread is), and
the profiled run. Two profilers:

- `--sampler cprofile` (default): the top functions by cumulative and by total (own)
  time, and own time per source file. Its overhead falls on every Python call, so the
  profiled TPS is lower and Python-heavy code looks dearer than it is. uvloop's
  transport methods are Cython, which cProfile does not list: their time, the send()
  system call included, is counted as the calling Python function's own time. The
  default clock is the wall clock (time descheduled inside a function counts);
  `--timer cpu` counts the thread's CPU time only.
- `--sampler py-spy`: samples the event-loop thread's native and Python stacks (idle
  included, so shares are of wall time), then ranks functions by own and by inclusive
  samples and sorts the samples into: waiting in epoll, inside send(), inside recv(),
  Airlock's Python code, other. py-spy comes from PyPI: when it is not on PATH or in
  this interpreter's bin/, it is installed into a temporary directory (not the venv).
  Native sampling stops the process briefly at each sample, so the sampled TPS is lower.

    .venv/bin/python benchmarks/profile_relay.py [--duration 10] [--clients 8]
        [--mode simple] [--sampler cprofile|py-spy] [--top 25] [--output FILE]

Shares its setup code with pg_throughput.py, next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.util
import io
import logging
import os
import pstats
import re
import resource
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pg_throughput import (
    AIRLOCK_GROUP,
    AIRLOCK_TARGET,
    MODES,
    BenchError,
    Endpoint,
    airlock_config,
    create_database,
    note,
    parse_pgbench,
    pgbench_command,
    run,
    run_guarded,
)

from proxy.config import load_settings
from proxy.server import Gateway


@dataclass(frozen=True)
class Measured:
    """One pgbench run through the in-process gateway and the gateway's CPU use during it."""

    tps: float
    latency_ms: float
    wall_s: float
    user_s: float
    system_s: float

    @property
    def cpu_share(self) -> float:
        """The gateway's CPU time over wall time: 1.0 is one core fully busy."""
        return (self.user_s + self.system_s) / self.wall_s

    def describe(self) -> str:
        return (
            f"{self.tps:.0f} tps, {self.latency_ms:.3f} ms mean latency; gateway CPU "
            f"{self.user_s + self.system_s:.2f} s in {self.wall_s:.2f} s wall "
            f"({self.cpu_share:.0%} of one core: user {self.user_s:.2f} s, "
            f"system {self.system_s:.2f} s)"
        )


async def pgbench_async(endpoint: Endpoint, mode: str, clients: int, duration_s: int) -> str:
    """pgbench as a child process, so this loop keeps serving while it runs."""
    command = pgbench_command(endpoint, mode, clients, duration_s)
    process = await asyncio.create_subprocess_exec(
        *command,
        env=endpoint.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        text = (stderr + stdout).decode(errors="replace").strip()
        raise BenchError(f"pgbench ({mode}, {clients} clients) failed:\n{text[-2000:]}")
    return stdout.decode(errors="replace")


async def measure(
    endpoint: Endpoint,
    mode: str,
    clients: int,
    duration_s: int,
    profiler: cProfile.Profile | None = None,
) -> Measured:
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        output = await pgbench_async(endpoint, mode, clients, duration_s)
    finally:
        if profiler is not None:
            profiler.disable()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    tps, latency_ms, _ = parse_pgbench(output)
    return Measured(
        tps, latency_ms, wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    )


@dataclass(frozen=True)
class Profiled:
    baseline: Measured
    profiled: Measured
    #: The cProfile profile, or None when py-spy sampled.
    profile: cProfile.Profile | None = None
    #: py-spy's collapsed stacks of the event-loop thread ("frame;frame;..." -> samples).
    stacks: Counter[str] | None = None


# --- py-spy --------------------------------------------------------------------------------


def find_py_spy(stack: contextlib.ExitStack) -> str:
    """py-spy from PATH or this interpreter's bin/, else pip-installed into a temp dir."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is not None:
        return found
    target = Path(tempfile.mkdtemp(prefix="airlock-bench-py-spy-"))
    stack.callback(shutil.rmtree, target, ignore_errors=True)
    note(f"py-spy not found: pip install --target {target} py-spy")
    run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "py-spy"],
        timeout=600,
        what="pip install py-spy",
    )
    binary = target / "bin" / "py-spy"
    if not binary.exists():
        raise BenchError(f"pip installed py-spy but {binary} is missing")
    return str(binary)


async def sample_with_py_spy(
    py_spy: str, measured: asyncio.Future[Measured], seconds: int, rate: int, out: Path
) -> Counter[str]:
    """Sample this process while `measured` runs; the main thread's stacks, threads dropped."""
    process = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(os.getpid()),
        "--duration",
        str(seconds),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--native",
        "--idle",
        "--threads",
        "--output",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    raw = await asyncio.to_thread(_read_text, out)
    if process.returncode != 0 or raw is None:
        text = (stderr + stdout).decode(errors="replace").strip()
        measured.cancel()
        raise BenchError(f"py-spy failed (exit {process.returncode}):\n{text[-2000:]}")
    return parse_collapsed(raw, threading.get_native_id())


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def parse_collapsed(text: str, thread_id: int) -> Counter[str]:
    """py-spy's raw output, one thread's stacks, with the leading thread frame removed."""
    prefix = f"thread ({thread_id})"
    stacks: Counter[str] = Counter()
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        first, _, rest = frames.partition(";")
        if first.startswith("thread ("):
            if not first.startswith(prefix):
                continue
            frames = rest
        stacks[frames] += int(count)
    return stacks


_LINE = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def _function(frame: str) -> str:
    """A frame without its line number: "PgRelay.server_data (proxy/postgres/relay.py)"."""
    match = _LINE.match(frame)
    return f"{match.group(1)} ({match.group(2)})" if match else frame


_IDLE = frozenset({"epoll_wait", "epoll_pwait", "epoll_pwait2"})
_SEND = frozenset({"write", "writev", "send", "sendto", "sendmsg", "__libc_write", "__send"})
_RECV = frozenset({"read", "readv", "recv", "recvfrom", "recvmsg", "__libc_read", "__recv"})
_AIRLOCK = ("proxy/", "protocols/", "policy/")


def _category(leaf: str) -> str:
    match = _LINE.match(leaf)
    name, where = (match.group(1), match.group(2)) if match else (leaf, "")
    if where.startswith("libc"):
        if name in _IDLE:
            return "idle: waiting for events (epoll_wait)"
        if name in _SEND:
            return "in send()/write() on a socket (kernel)"
        if name in _RECV:
            return "in recv()/read() on a socket (kernel)"
    if where.startswith(_AIRLOCK):
        return "Airlock Python code (own time)"
    if where.endswith(".py"):
        return "other Python code (own time)"
    return "other native code (interpreter, uvloop, libc)"


def _share_table(counts: Iterable[tuple[str, int]], total: int, heading: str) -> list[str]:
    lines = [f"{'share':>6}  {'samples':>7}  {heading}"]
    lines += [f"{n / total:>6.1%}  {n:>7}  {name}" for name, n in counts]
    return lines


def py_spy_report(stacks: Counter[str], top: int) -> list[str]:
    total = sum(stacks.values())
    if total == 0:
        return ["py-spy recorded no samples of the event-loop thread"]
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    for frames, count in stacks.items():
        names = frames.split(";")
        own[_function(names[-1])] += count
        categories[_category(names[-1])] += count
        for name in {_function(frame) for frame in names}:
            inclusive[name] += count
    # The event loop's outer frames are in every sample and say nothing.
    everywhere = [name for name, n in inclusive.items() if n >= 0.995 * total]
    ranked = [(name, n) for name, n in inclusive.most_common() if name not in everywhere]
    return [
        f"== where the event-loop thread was: {total} samples (idle included: shares of "
        "wall time) ==",
        *_share_table(categories.most_common(), total, "category of the leaf frame"),
        "",
        f"== top {top} by own samples (the leaf frame) ==",
        *_share_table(own.most_common(top), total, "function"),
        "",
        f"== top {top} by inclusive samples ({len(everywhere)} outer frames present in "
        "every sample left out) ==",
        *_share_table(ranked[:top], total, "function"),
    ]


# --- cProfile ------------------------------------------------------------------------------


async def profile_gateway(
    server: Endpoint, database: str, args: argparse.Namespace, workdir: Path
) -> Profiled:
    upstream = f"postgresql://{server.user}@{server.host}:{server.port}/{database}?sslmode=disable"
    # Ports 0: the gateway picks free ones and points its dev issuer at the bound API port.
    settings = load_settings(airlock_config(workdir, upstream, 0, 0))
    gateway = Gateway(settings)
    await gateway.start()
    try:
        assert gateway.dev_issuer is not None
        token = gateway.dev_issuer.mint("bench-agent", [AIRLOCK_GROUP], ttl_s=3600.0)
        port = gateway.bound["postgres"][1]
        endpoint = Endpoint("airlock", "127.0.0.1", port, "bench-agent", AIRLOCK_TARGET, token)
        mode: str = args.mode
        clients: int = args.clients
        duration: int = args.duration
        note(f"warm-up: {args.warmup} s")
        if args.warmup > 0:
            await measure(endpoint, mode, clients, args.warmup)
        note(f"unprofiled run: {duration} s")
        baseline = await measure(endpoint, mode, clients, duration)
        note(f"  {baseline.describe()}")
        note(f"profiled run ({args.sampler}): {duration} s")
        if args.sampler == "py-spy":
            measured = asyncio.ensure_future(measure(endpoint, mode, clients, duration))
            await asyncio.sleep(0.5)  # let the clients connect first
            stacks = await sample_with_py_spy(
                args.py_spy, measured, max(1, duration - 1), args.rate, workdir / "py-spy.txt"
            )
            profiled = await measured
            note(f"  {profiled.describe()}")
            return Profiled(baseline, profiled, stacks=stacks)
        # The wall clock (cProfile's default) counts time the thread sat descheduled inside a
        # function; the thread's CPU clock does not, at ~0.4 us more per call.
        profile = cProfile.Profile(time.thread_time) if args.timer == "cpu" else cProfile.Profile()
        profiled = await measure(endpoint, mode, clients, duration, profile)
        note(f"  {profiled.describe()}")
        return Profiled(baseline, profiled, profile)
    finally:
        await gateway.close()


def _stats_text(profile: cProfile.Profile, sort: str, top: int) -> str:
    stream = io.StringIO()
    stats = pstats.Stats(profile, stream=stream)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    # Drop pstats' preamble (the "N function calls in S seconds" line stays).
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    return "\n".join(line for line in lines if not line.startswith(("Ordered by", "List reduced")))


def _per_file(profile: cProfile.Profile, top: int) -> tuple[str, float]:
    """Own time summed per source file (C functions: per object type), and the total."""
    stats = pstats.Stats(profile)
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    entries = stats.stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in entries.items():
        if filename == "~":
            # A C function: "<method 'write' of 'uvloop.loop.TCPTransport' objects>".
            key = f"(C) {function}"
        else:
            parts = Path(filename).parts
            key = "/".join(parts[-2:]) if len(parts) >= 2 else filename
        totals[key] = totals.get(key, 0.0) + own
    total = sum(totals.values())
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:top]
    lines = [f"{'own time':>10}  {'share':>6}  file (or C function)"]
    lines += [f"{seconds:>9.3f}s  {seconds / total:>6.1%}  {name}" for name, seconds in ranked]
    return "\n".join(lines), total


def report(result: Profiled, args: argparse.Namespace) -> str:
    uvloop = importlib.util.find_spec("uvloop") is not None
    profiled = result.profiled
    header = [
        f"Airlock relay profile: pgbench -n -S -M {args.mode} -c {args.clients} "
        f"-j {min(args.clients, 2)} -T {args.duration}, scale {args.scale}, "
        f"sslmode=disable, event loop: {'uvloop' if uvloop else 'asyncio'}, "
        f"{os.cpu_count()} CPUs, profiler: {args.sampler}",
        "",
        f"unprofiled: {result.baseline.describe()}",
        f"profiled:   {profiled.describe()}",
    ]
    if result.stacks is not None:
        return "\n".join([*header, "", *py_spy_report(result.stacks, args.top)])
    assert result.profile is not None
    files, own_total = _per_file(result.profile, args.top)
    process_cpu = profiled.user_s + profiled.system_s
    if args.timer == "cpu":
        clock = (
            f"Timer: the thread's CPU clock. cProfile counted {own_total:.2f} s of own time, "
            f"{own_total / process_cpu:.0%} of the process's {process_cpu:.2f} s of CPU; the "
            "rest is the event loop's own C code outside any Python call, and the profiler."
        )
    else:
        clock = (
            f"Timer: the wall clock. cProfile counted {own_total:.2f} s of own time against "
            f"{process_cpu:.2f} s of process CPU: a function's time includes any time the "
            "thread was descheduled inside it (2 cores shared with pgbench and PostgreSQL). "
            "uvloop's transport methods are Cython, which cProfile does not list: their time "
            "(the send() system call included) counts as the Python caller's own time. "
            "--timer cpu counts CPU time only."
        )
    return "\n".join(
        [
            *header,
            *textwrap.wrap(clock, 100),
            "",
            f"== top {args.top} by cumulative time ==",
            _stats_text(result.profile, "cumulative", args.top),
            "",
            f"== top {args.top} by total (own) time ==",
            _stats_text(result.profile, "tottime", args.top),
            "",
            f"== own time per source file, top {args.top} ==",
            files,
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Profile the gateway's relay under pgbench.")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--mode", choices=MODES, default="simple")
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up (0: none)")
    parser.add_argument("--top", type=int, default=25, help="functions listed per table")
    parser.add_argument("--sampler", choices=("cprofile", "py-spy"), default="cprofile")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--timer",
        choices=("wall", "cpu"),
        default="wall",
        help="cProfile's clock: wall (default) or the thread's CPU time (slower to profile)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="also write the raw profile (cProfile: pstats format; py-spy: collapsed stacks)",
    )
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    return parser


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed, as `airlock serve` runs on (proxy/cli/main.py)."""
    if importlib.util.find_spec("uvloop") is None:
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.duration, args.clients, args.scale, args.rate, args.top) < 1 or args.warmup < 0:
        note("error: --duration, --clients, --scale, --rate, --top must be >= 1, --warmup >= 0")
        return 2
    if shutil.which("pgbench") is None or shutil.which("psql") is None:
        note("error: pgbench and psql must be on PATH")
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    server = Endpoint("direct", args.pg_host, args.pg_port, args.pg_user, "postgres")

    def body(stack: contextlib.ExitStack) -> Profiled:
        workdir = Path(tempfile.mkdtemp(prefix="airlock-bench-profile-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        if args.sampler == "py-spy":
            args.py_spy = find_py_spy(stack)
        database = create_database(server, stack)
        direct = Endpoint("direct", args.pg_host, args.pg_port, args.pg_user, database)
        note(f"created database {database}; pgbench -i -s {args.scale}")
        run(
            ["pgbench", "-i", "-q", "-s", str(args.scale), *direct.args(), database],
            env=direct.env(),
            timeout=3600,
            what="pgbench -i",
        )
        # asyncio.Runner turns Ctrl-C into cancelling the run, so the gateway closes cleanly.
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(profile_gateway(server, database, args, workdir))

    status, result = run_guarded(body)
    if result is None:
        return status
    print(report(result, args))
    if args.output is not None:
        if result.profile is not None:
            result.profile.dump_stats(args.output)
            note(f"wrote {args.output} (read it with python -m pstats, snakeviz, ...)")
        elif result.stacks is not None:
            lines = (f"{frames} {count}" for frames, count in result.stacks.items())
            args.output.write_text("\n".join(lines) + "\n")
            note(f"wrote {args.output} (collapsed stacks: flamegraph.pl, speedscope, ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
