"""The `airlock` command as an operator runs it: a real process, real ports.

A user's mistake gets one line on stderr and the exit status docs/cli.md gives it,
never a traceback: these tests run the installed `airlock` console script (this tree
first on PYTHONPATH), as an operator would.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.gateway import served_gateway
from tests.support.pgcluster import PgServer
from tests.support.waiting import PATIENCE_S, wait_until

AIRLOCK = [sys.executable, "-m", "proxy.cli"]
#: The console script pip installed beside this interpreter; it imports this tree's code.
SCRIPT = Path(sys.executable).with_name("airlock")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIRLOCK, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def airlock(
    *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The `airlock` console script, run as an operator runs it."""
    return subprocess.run(
        [str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a user error prints on stderr (the test fails on anything more)."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def write_config(directory: Path, **listen: str) -> Path:
    config = directory / "airlock.yaml"
    ports = listen or {"postgres": f"127.0.0.1:{free_port()}", "api": f"127.0.0.1:{free_port()}"}
    config.write_text(
        "dev_issuer: true\n"
        f"listen: {{{', '.join(f'{k}: {v!r}' for k, v in ports.items())}}}\n"
        f"data_dir: {str(directory / 'data')!r}\n"
        "targets:\n"
        "  orders: {protocol: postgres, upstream: 'postgresql://svc@127.0.0.1:5432/db'}\n"
    )
    return config


# --- the command line --------------------------------------------------------------------------


def test_version_names_the_release_and_whether_it_runs_compiled() -> None:
    from importlib.metadata import version

    result = airlock("--version")
    assert (result.returncode, result.stderr) == (0, "")
    assert re.fullmatch(
        rf"airlock {re.escape(version('airlock-gateway'))} \((compiled|pure Python)\)\n",
        result.stdout,
    )


def test_check_config_says_ok_for_a_good_config(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = airlock("check-config", str(config))
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{config}: OK\n", "")
    assert not (tmp_path / "data").exists()  # checked, not started


def test_check_config_names_file_key_and_problem_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "airlock.yaml"
    config.write_text(
        "dev_issuer: true\n"
        "listen: {api: '127.0.0.1:8080'}\n"
        "targets:\n"
        "  orders: {protocol: postgres, upstream: 'postgresql://svc@127.0.0.1:5432/db'}\n"
        "rules:\n"
        "  - {groups: [data-agents], targets: [orders], write: yes-please}\n"
    )
    result = airlock("check-config", str(config))
    assert (result.returncode, result.stdout) == (1, "")
    assert one_line(result) == (
        f"airlock: bad config: {config}: rules[0].write: must be one of allow, approve, "
        "deny (got 'yes-please')"
    )
    missing = airlock("check-config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert one_line(missing) == (
        f"airlock: bad config: {tmp_path / 'nope.yaml'}: cannot read: No such file or directory"
    )


def test_log_options_are_accepted_before_and_after_the_command(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    for argv in (
        ("--log-level", "debug", "check-config", str(config)),
        ("check-config", str(config), "--log-level", "debug", "--log-format", "json"),
        ("classify", "select 1", "--log-level", "warning"),
        ("approvals", "list", "--log-level", "error", "--help"),
    ):
        result = airlock(*argv)
        assert (result.returncode, result.stderr) == (0, ""), argv
    # serve takes them after the command too: here it gets as far as the config.
    bad = airlock("serve", "--log-level", "debug", "--config", str(tmp_path / "nope.yaml"))
    assert bad.returncode == 2
    assert one_line(bad).startswith("airlock: bad config: ")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ("--log-level", "chatty", "classify", "select 1"),
            "airlock: argument --log-level: unknown log level 'chatty' "
            "(use DEBUG, INFO, WARNING, ERROR) (see airlock --help)",
        ),
        (
            ("classify", "select 1", "--log-format", "xml"),
            "airlock classify: argument --log-format: unknown log format 'xml' "
            "(use text or json) (see airlock classify --help)",
        ),
        (
            ("dev-token", "--config", "x.yaml", "--sub", "a", "--ttl", "soon"),
            "airlock dev-token: argument --ttl: invalid duration 'soon' (use seconds or units "
            "ms, s, m, h, d, e.g. 250ms, 30s, 5m, 1h30m) (see airlock dev-token --help)",
        ),
        (
            ("approve", "apr_1", "--ttl", "10x", "--token", "t"),
            "airlock approve: argument --ttl: invalid duration '10x' (use seconds or units "
            "ms, s, m, h, d, e.g. 250ms, 30s, 5m, 1h30m) (see airlock approve --help)",
        ),
        ((), "airlock: the following arguments are required: COMMAND (see airlock --help)"),
        (
            ("serve",),
            "airlock serve: the following arguments are required: --config "
            "(see airlock serve --help)",
        ),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(argv: tuple[str, ...], expected: str) -> None:
    result = airlock(*argv)
    assert (result.returncode, result.stdout) == (2, "")
    assert one_line(result) == expected


def test_a_port_in_use_is_one_line_naming_the_listener_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path, postgres=f"127.0.0.1:{port}", api=f"127.0.0.1:{free_port()}"
        )
        result = airlock("serve", "--config", str(config), "--log-level", "error")
    assert result.returncode == 1
    assert one_line(result) == (
        f"airlock: cannot start: cannot listen for postgres on 127.0.0.1:{port}: "
        "address already in use"
    )


def closed_pipe_run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run `airlock` with its stdout a pipe whose reader has gone: `airlock ... | head -c
    20` once head has its 20 bytes, made certain (the reader is gone before the write)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run(
            [str(SCRIPT), *args],
            input=stdin,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        os.close(writer)


def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    minted = closed_pipe_run("dev-token", "--config", str(config), "--sub", "agent-1")
    assert (minted.returncode, minted.stderr) == (0, "")
    lines = "".join(f'{{"sql": "select {i}"}}\n' for i in range(2000))
    classified = closed_pipe_run("classify", "--jsonl", "-", stdin=lines)
    assert (classified.returncode, classified.stderr) == (0, "")
    # And through a real `head`, as the docs show it.
    shell = subprocess.run(
        ["bash", "-c", '"$0" dev-token --config "$1" --sub agent-1 | head -c 20; '
         'echo " ${PIPESTATUS[0]}"', str(SCRIPT), str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert shell.stderr == ""
    token_start, status = shell.stdout.split(" ")
    assert (len(token_start), status) == (20, "0\n")


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


# --- the log -----------------------------------------------------------------------------------


def mint_credential(api_url: str, token: str) -> dict[str, str]:
    request = urllib.request.Request(  # noqa: S310 (the gateway's own http:// URL)
        f"{api_url}/api/v1/credentials",
        method="POST",
        data=json.dumps({"target": "orders"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return dict(json.loads(response.read()))


@pytest.mark.timeout(120)
def test_json_logs_name_session_identity_target_and_client_and_never_a_secret(
    tmp_path: Path, local_pg: PgServer, pg_database: str
) -> None:
    rule = {"groups": ["data-agents"], "targets": ["orders"], "write": "allow", "unknown": "allow"}
    with served_gateway(
        tmp_path,
        local_pg,
        pg_database,
        [rule],
        settings={"log_format": "json"},
        options=("--log-level", "debug"),
    ) as gateway:
        token = gateway.token("agent-1", "data-agents")
        header, payload, signature = token.split(".")
        forged = f"{header}.{payload}.{signature[::-1]}"
        dsn = f"host=127.0.0.1 port={gateway.pg_port} dbname=orders sslmode=require"
        # A login, and the address it came from as the gateway saw it.
        with psycopg.connect(f"{dsn} user=agent-1 password={token}") as agent:
            assert agent.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError):  # a failed login: a forged token
            psycopg.connect(f"{dsn} user=agent-1 password={forged}").close()
        credential = mint_credential(gateway.api_url, token)  # a credential mint
        password = credential["password"]
        login = f"{dsn} user={credential['username']} password={password}"
        with psycopg.connect(login) as agent:
            assert agent.execute("select 2").fetchone() == (2,)
        wrong = f"{dsn} user={credential['username']} password={password[::-1]}"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(wrong).close()

    lines = [json.loads(line) for line in gateway.output]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    timestamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    assert all(timestamp.fullmatch(line["ts"]) for line in lines)
    listening = [line["message"] for line in lines if line["message"].startswith("listening")]
    assert f"listening for postgres on 127.0.0.1:{gateway.pg_port}" in listening

    started = [line for line in lines if line.get("event") == "session_started"]
    assert len(started) == 2
    first = started[0]
    assert (first["identity"], first["target"], first["logger"]) == (
        "agent-1", "orders", "airlock.session"
    )  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{32}", first["session"])
    assert re.fullmatch(r"127\.0\.0\.1:\d+", first["client"])
    ended = [line for line in lines if line.get("event") == "session_ended"]
    assert {line["session"] for line in ended} == {line["session"] for line in started}
    assert all(line["identity"] == "agent-1" for line in ended)
    refused = [line for line in lines if line.get("event") == "login_refused"]
    assert len(refused) == 2
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", line["client"]) for line in refused)

    log = "\n".join(gateway.output)
    for secret in (token, payload, signature, forged, signature[::-1], password, password[::-1]):
        assert secret not in log
