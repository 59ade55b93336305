"""The `airlock` command as an operator runs it: a real process, real ports."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.gateway import served_gateway
from tests.support.pgcluster import PgServer
from tests.support.waiting import PATIENCE_S, wait_until

AIRLOCK = [sys.executable, "-m", "proxy.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIRLOCK, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_a_bad_config_stops_startup_naming_file_key_and_problem(tmp_path: Path) -> None:
    config = tmp_path / "airlock.yaml"
    config.write_text(
        "dev_issuer: true\n"
        "targets:\n"
        "  orders: {protocol: postgres, upstream: 'postgresql://svc@127.0.0.1:5432/db'}\n"
        "rules:\n"
        "  - {groups: [data-agents], targets: [orders], write: yes-please}\n"
    )
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}: rules[0].write: must be one of allow, approve, deny" in result.stderr


def test_dev_token_is_refused_when_the_dev_issuer_is_off(tmp_path: Path) -> None:
    config = tmp_path / "airlock.yaml"
    config.write_text(
        "identity: {issuer: 'https://example.okta.com/oauth2/default', audience: api://airlock}\n"
        "targets:\n"
        "  orders: {protocol: postgres, upstream: 'postgresql://svc@127.0.0.1:5432/db'}\n"
    )
    result = run("dev-token", "--config", str(config), "--sub", "a", "--groups", "g")
    assert result.returncode == 2
    assert "dev_issuer is off" in result.stderr
    assert result.stdout == ""


@pytest.fixture
def served(tmp_path: Path, local_pg: PgServer, pg_database: str) -> Iterator[tuple[Path, int, int]]:
    rule = {"groups": ["data-agents"], "targets": ["orders"], "write": "allow", "unknown": "allow"}
    with served_gateway(tmp_path, local_pg, pg_database, [rule]) as gateway:
        yield gateway.config, gateway.pg_port, gateway.process.pid


def test_serve_and_dev_token_let_an_agent_query_over_tls(served: tuple[Path, int, int]) -> None:
    config, pg_port, pid = served
    minted = run(
        "dev-token", "--config", str(config), "--sub", "agent-1", "--groups", "data-agents"
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert token.count(".") == 2
    cert = config.parent / "data" / "tls" / "server.crt"
    dsn = (
        f"host=127.0.0.1 port={pg_port} dbname=orders user=agent password={token} "
        f"sslmode=verify-full sslrootcert={cert}"
    )
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select 6 * 7").fetchone() == (42,)
    os.kill(pid, signal.SIGTERM)


def test_sigterm_stops_the_gateway_cleanly(served: tuple[Path, int, int]) -> None:
    _config, pg_port, pid = served
    os.kill(pid, signal.SIGTERM)

    def stopped() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie until the fixture reaps it: check the port is closed instead
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", pg_port)) != 0

    wait_until(stopped, PATIENCE_S, "the gateway to stop on SIGTERM", every_s=0.1)


def test_serve_raises_its_open_files_limit_to_the_hard_limit(
    tmp_path: Path, local_pg: PgServer, pg_database: str
) -> None:
    """A session holds three descriptors: a soft limit of 256 would cap it at about 80."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:  # Linux caps it at fs.nr_open: never RLIM_INFINITY
        pytest.fail(f"this machine's hard limit on open files ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the child inherits it
    try:
        with served_gateway(tmp_path, local_pg, pg_database, []) as gateway:
            limits = Path(f"/proc/{gateway.process.pid}/limits").read_text()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    [line] = [row for row in limits.splitlines() if row.startswith("Max open files")]
    gateway_soft, gateway_hard = line.split()[3:5]
    assert (gateway_soft, gateway_hard) == (str(hard), str(hard))
