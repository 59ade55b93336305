"""A MySQL 8 upstream (caching_sha2_password), when one is given.

This machine has no MySQL 8, so these tests are collected only when MYSQL8_DSN
names one (mysql://user:password@host:port/database of an account that may
create and drop a table there); tests/conftest.py leaves the file out otherwise,
so a run without it neither runs nor counts them. caching_sha2_password itself
is unit-tested against known vectors in tests/protocols/mysql/test_auth.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tests.support.approvals import Background, agent_token, decide, pending, rule
from tests.support.gateway import RunningGateway

DSN = os.environ.get("MYSQL8_DSN", "")


def test_a_mysql8_upstream_serves_reads_and_a_held_write_runs_once_approved(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory(
        targets={"shop": {"protocol": "mysql", "upstream": DSN}},
        rules=[rule(targets=["shop"], ddl="approve")],
    )
    conn: Any = gateway.pymysql(agent_token(gateway), autocommit=True)
    with conn, conn.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        assert str(cursor.fetchone()[0]).startswith("8.")
        table = "airlock_mysql8_check"
        write = Background(lambda: cursor.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INT)"))
        [request] = pending(gateway)
        decide(gateway, request["id"], "approve", {})
        write.result()
        held = Background(lambda: cursor.execute(f"DROP TABLE {table}"))
        [request] = pending(gateway)
        decide(gateway, request["id"], "approve", {})
        held.result()
