"""Node agents through `airlock serve` under the example's rules: node-postgres (npm `pg`)
and the MCP reference PostgreSQL server (npm @modelcontextprotocol/server-postgres), both
installed from the lock file in tests/integration/node/. Their reads pass with no request
held. The MCP server's query tool wraps every query in a READ ONLY transaction, so a
write there is answered at once with the server's own error, not held for a DBA.
"""

from __future__ import annotations

import decimal
import json
import os
import select
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.example_gateway import ExampleGateway

NODE_AGENTS = Path(__file__).resolve().parent / "node"
MCP_SERVER = Path("node_modules/@modelcontextprotocol/server-postgres/dist/index.js")


@pytest.fixture(scope="module")
def node_agents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/integration/node/, installed from its lock file into a temporary directory."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is missing: scripts/setup installs Node.js and npm"
    assert shutil.which("node"), "node is missing: scripts/setup installs Node.js and npm"
    where = tmp_path_factory.mktemp("node-agents")
    for source in NODE_AGENTS.iterdir():
        if source.is_file():
            shutil.copy(source, where / source.name)
    installed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=where,
        timeout=300,
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, f"npm ci failed: {installed.stderr}"
    return where


def test_node_postgres_queries_and_pool_reads_pass(
    example_gateway: ExampleGateway, node_agents: Path
) -> None:
    subject, token = example_gateway.reader("node-postgres")
    ran = subprocess.run(
        ["node", "pg_reads.js", str(example_gateway.pg_port), str(example_gateway.cert_file)],
        cwd=node_agents,
        env={**os.environ, "AIRLOCK_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {
        "plain": [{"name": "apple"}, {"name": "pear"}],
        "params": [{"id": 1, "type": "fruit"}, {"id": 2, "type": "fruit"}],
        "named": [2, 1],
        "inTransaction": 11,
        "rowMode": [[1, "two"]],
        "poolQuery": 4,
        # One connection served every checkout.
        "poolConnections": 1,
        "poolIdle": 1,
    }
    example_gateway.assert_reads_passed(subject)


class McpClient:
    """The MCP server over stdio: newline-delimited JSON-RPC 2.0, as MCP hosts speak it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.next_id = 0

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        self.process.stdin.flush()

    def request(self, method: str, params: dict[str, Any], timeout_s: float = 30) -> Any:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        return self.answer(self.next_id, timeout_s)

    def answer(self, request_id: int, timeout_s: float = 30) -> Any:
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            ready, _, _ = select.select([stdout], [], [], timeout_s)
            assert ready, f"the MCP server did not answer request {request_id}"
            line = stdout.readline()
            assert line, f"the MCP server exited (status {self.process.poll()})"
            message = json.loads(line)
            if message.get("id") == request_id:
                return message


@pytest.fixture
def mcp_server(
    example_gateway: ExampleGateway, node_agents: Path
) -> Iterator[tuple[McpClient, str]]:
    """The MCP server for a reader of its own, initialized; yields the client and the
    reader's subject."""
    subject, token = example_gateway.reader("mcp")
    # Plain TCP over loopback, which the example allows (allow_insecure_loopback).
    url = f"postgresql://agent:{token}@127.0.0.1:{example_gateway.pg_port}/orders"
    process = subprocess.Popen(
        ["node", str(MCP_SERVER), url],
        cwd=node_agents,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = McpClient(process)
    try:
        hello = client.request(
            "initialize",
            {
                "protocolVersion": "2024-11-05",
                "capabilities": {},
                "clientInfo": {"name": "airlock-tests", "version": "1"},
            },
        )
        assert hello["result"]["serverInfo"]["name"] == "example-servers/postgres"
        client.send({"method": "notifications/initialized"})
        yield client, subject
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def tool_rows(answer: dict[str, Any]) -> Any:
    assert "result" in answer, answer
    assert answer["result"]["isError"] is False, answer
    return json.loads(answer["result"]["content"][0]["text"])


def test_mcp_postgres_server_resources_and_query_tool_reads_pass(
    example_gateway: ExampleGateway, mcp_server: tuple[McpClient, str]
) -> None:
    client, subject = mcp_server
    resources = client.request("resources/list", {})["result"]["resources"]
    uris = sorted(r["uri"] for r in resources)
    base = f"postgres://agent@127.0.0.1:{example_gateway.pg_port}/"
    assert uris == [f"{base}order_totals/schema", f"{base}orders/schema", f"{base}products/schema"]
    schema = client.request("resources/read", {"uri": f"{base}products/schema"})
    columns = json.loads(schema["result"]["contents"][0]["text"])
    assert {"column_name": "type", "data_type": "text"} in columns
    tools = client.request("tools/list", {})["result"]["tools"]
    assert [t["name"] for t in tools] == ["query"]
    sql = "SELECT name, price FROM products WHERE name IN ('apple', 'pear') ORDER BY name"
    rows = tool_rows(client.request("tools/call", {"name": "query", "arguments": {"sql": sql}}))
    assert rows == [{"name": "apple", "price": "1.20"}, {"name": "pear", "price": "1.50"}]
    sql = "SELECT status, count(*)::int AS n FROM orders GROUP BY status ORDER BY status"
    rows = tool_rows(client.request("tools/call", {"name": "query", "arguments": {"sql": sql}}))
    assert rows == [
        {"status": "cancelled", "n": 1},
        {"status": "pending", "n": 2},
        {"status": "shipped", "n": 1},
    ]
    client.process.terminate()  # its pool's connections close, so its sessions end
    client.process.wait(timeout=10)
    example_gateway.assert_reads_passed(subject)


def test_mcp_postgres_server_write_gets_the_read_only_error_at_once(
    example_gateway: ExampleGateway, mcp_server: tuple[McpClient, str]
) -> None:
    """The server would refuse it in the READ ONLY transaction: no DBA is asked to approve
    a write that cannot run; the agent gets the server's own error at once."""
    client, subject = mcp_server
    sql = "UPDATE products SET price = 0 WHERE name = 'apple'"
    answer = client.request("tools/call", {"name": "query", "arguments": {"sql": sql}})
    assert "cannot execute UPDATE in a read-only transaction" in answer["error"]["message"]
    # Afterwards the same pooled connection still reads.
    rows = tool_rows(
        client.request("tools/call", {"name": "query", "arguments": {"sql": "SELECT 1 AS one"}})
    )
    assert rows == [{"one": 1}]
    assert example_gateway.pg_rows("SELECT price FROM products WHERE name = 'apple'") == [
        (decimal.Decimal("1.20"),)
    ]
    example_gateway.assert_nothing_held(subject)
