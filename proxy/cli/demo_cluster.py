"""A throwaway PostgreSQL cluster for `airlock demo` on a machine with PostgreSQL's
binaries but no server running: initdb into a temp dir, start it on a free loopback
port with trust auth, stop it and remove it afterwards.

initdb refuses to run as root; as root, the server runs as the `postgres` OS user
(which the Debian packages create), through `runuser`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

SERVER_OS_USER = "postgres"


class ClusterUnavailable(Exception):
    pass


def _bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise ClusterUnavailable("no PostgreSQL binaries (initdb) found on this machine")
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Yield the URL of a fresh cluster's `postgres` database; remove the cluster after."""
    bindir = _bindir()
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    if as_root:
        try:
            entry = pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            raise ClusterUnavailable(
                f"running as root, and there is no {SERVER_OS_USER!r} user to run a server as"
            ) from None
        prefix = ["runuser", "-u", SERVER_OS_USER, "--"]
    with tempfile.TemporaryDirectory(prefix="airlock-demo-pg-") as directory:
        root = Path(directory)
        if as_root:
            os.chown(root, entry.pw_uid, entry.pw_gid)
        data, port = root / "data", _free_port()

        def run(*command: str) -> None:
            done = subprocess.run(
                [*prefix, *command], capture_output=True, text=True, timeout=120, check=False
            )
            if done.returncode != 0:
                raise ClusterUnavailable(f"{command[0]} failed: {done.stderr.strip()[-500:]}")

        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
            "-w", "start")  # fmt: skip
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            with contextlib.suppress(ClusterUnavailable, subprocess.TimeoutExpired):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
