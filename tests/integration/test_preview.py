"""What an approver sees before deciding a held write: the agent's justification (an
`airlock:why` comment) and the impact preview (the server's plan and estimated rows, and
an opt-in dry run), against the real PostgreSQL and MariaDB, through real drivers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support.approvals import (
    Background,
    agent_token,
    airlock,
    api,
    connect,
    dba_token,
    decide,
    pending,
    rule,
)
from tests.support.gateway import RunningGateway
from tests.support.mariadb import MariaDb
from tests.support.pgcluster import PgServer
from tests.support.waiting import PATIENCE_S, wait_until


def finished_preview(gateway: RunningGateway, request_id: str) -> dict[str, Any]:
    """The request's preview once the gateway has stored it."""
    seen: list[dict[str, Any]] = []

    def done() -> bool:
        status, body = api(gateway, "GET", f"/api/v1/approvals/{request_id}", dba_token(gateway))
        assert status == 200
        seen[:] = [body]
        return isinstance(body["preview"], dict) and body["preview"]["state"] == "done"

    wait_until(done, PATIENCE_S, "the preview is stored")
    preview: dict[str, Any] = seen[0]["preview"]
    return preview


@pytest.mark.timeout(90)
def test_a_held_update_shows_its_reason_plan_and_estimate_and_runs_once_approved(
    gateway_factory: Callable[..., RunningGateway],
    accounts: Callable[[], dict[int, int]],
    local_pg: PgServer,
    pg_database: str,
) -> None:
    gated = gateway_factory(rules=[rule()])
    with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
        admin.execute("analyze accounts")  # the planner's estimate follows the statistics
    sql = (
        "/* airlock:why restock after audit #123 */ update accounts set balance = %s where id <= %s"
    )
    with connect(gated, agent_token(gated)) as agent:
        write = Background(lambda: agent.execute(sql, (7, 3), prepare=True).rowcount)
        [request] = pending(gated)
        assert request["why"] == "restock after audit #123"
        assert request["preview"] is not None  # the request exists while the preview runs
        preview = finished_preview(gated, request["id"])
        explain = preview["explain"]
        assert "error" not in explain, explain
        assert "Update on accounts" in explain["plan"]
        assert explain["plan_json"][0]["Plan"]["Node Type"] == "ModifyTable"
        assert 1 <= explain["estimated_rows"] <= 6  # about the 3 rows of id <= 3, of 60
        assert "dry_run" not in preview  # not opted in
        assert accounts()[1] == 100  # nothing ran

        shown = airlock(
            "approvals", "get", request["id"], "--server", gated.api_url, token=dba_token(gated)
        )
        assert shown.returncode == 0, shown.stderr
        assert "why:" in shown.stdout
        assert "restock after audit #123" in shown.stdout
        assert "estimated rows:" in shown.stdout
        assert "Update on accounts" in shown.stdout

        status, _ = decide(gated, request["id"], "approve", {})
        assert status == 200
        assert write.result() == 3
    assert [accounts()[i] for i in (1, 2, 3, 4)] == [7, 7, 7, 100]


@pytest.mark.timeout(90)
def test_a_dry_run_reports_the_rows_it_would_change_and_changes_nothing(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gated = gateway_factory(rules=[rule(preview={"dry_run": True})])
    with connect(gated, agent_token(gated)) as agent:
        write = Background(lambda: agent.execute("update accounts set balance = 0 where id <= 4"))
        [request] = pending(gated)
        preview = finished_preview(gated, request["id"])
        dry_run = preview["dry_run"]
        assert dry_run["rows_affected"] == 4, dry_run
        assert sorted(row["id"] for row in dry_run["sample"]) == [1, 2, 3, 4]
        assert {row["balance"] for row in dry_run["sample"]} == {0}
        assert preview["explain"]["estimated_rows"] >= 1
        assert set(accounts().values()) == {100}  # rolled back
        decide(gated, request["id"], "deny", {"reason": "no"})
        assert isinstance(write.result(), psycopg.errors.InsufficientPrivilege)
    assert set(accounts().values()) == {100}


@pytest.mark.timeout(90)
def test_a_slow_dry_run_times_out_and_the_hold_is_unharmed(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gated = gateway_factory(rules=[rule(preview={"dry_run": True, "timeout": "1s"})])
    slow = "update accounts set balance = 5 where id = 1 and pg_sleep(3) is not null"
    with connect(gated, agent_token(gated)) as agent:
        started = time.monotonic()
        write = Background(lambda: agent.execute(slow).rowcount)
        [request] = pending(gated)
        assert time.monotonic() - started < 3  # the hold did not wait for the preview
        preview = finished_preview(gated, request["id"])
        assert preview["dry_run"]["error"].startswith("timed out"), preview
        assert accounts()[1] == 100
        status, body = api(gated, "GET", f"/api/v1/approvals/{request['id']}", dba_token(gated))
        assert status == 200
        assert body["state"] == "pending"
        decide(gated, request["id"], "approve", {})
        assert write.result() == 1
    assert accounts()[1] == 5


@pytest.mark.timeout(60)
def test_a_held_read_gets_no_preview(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gated = gateway_factory(rules=[rule(read="approve", preview={"dry_run": True})])
    with connect(gated, agent_token(gated)) as agent:
        read = Background(lambda: agent.execute("select count(*) from accounts").fetchone())
        [request] = pending(gated)
        assert request["class"] == "read"
        time.sleep(0.5)  # a window in which a preview would have been stored
        status, body = api(gated, "GET", f"/api/v1/approvals/{request['id']}", dba_token(gated))
        assert status == 200
        assert body["preview"] is None
        decide(gated, request["id"], "approve", {})
        assert read.result() == (60,)


@pytest.fixture
def balances(local_mariadb: MariaDb, mysql_database: str) -> Callable[[], dict[int, Any]]:
    def read() -> dict[int, Any]:
        with local_mariadb.root(mysql_database) as root, root.cursor() as cursor:
            cursor.execute("SELECT id, balance FROM accounts")
            return {int(i): b for i, b in cursor.fetchall()}

    return read


@pytest.mark.timeout(90)
def test_mariadb_shows_plan_estimate_and_dry_run_of_a_prepared_update(
    mysql_gateway_factory: Callable[..., RunningGateway],
    balances: Callable[[], dict[int, Any]],
) -> None:
    rules = [rule(targets=["shop"], preview={"dry_run": True})]
    gated = mysql_gateway_factory(rules=rules)
    agent = gated.mysql_connector(agent_token(gated))
    try:
        cursor = agent.cursor(prepared=True)
        sql = "-- airlock:why refund batch 7\nUPDATE accounts SET balance = ? WHERE id <= ?"
        write = Background(lambda: cursor.execute(sql, (9, 2)))
        [request] = pending(gated)
        assert request["why"] == "refund batch 7"
        preview = finished_preview(gated, request["id"])
        assert "error" not in preview["explain"], preview
        assert preview["explain"]["estimated_rows"] >= 1
        assert "accounts" in preview["explain"]["plan"]
        assert preview["explain"]["plan_json"]["query_block"]["table"]["table_name"] == "accounts"
        assert preview["dry_run"]["rows_affected"] == 2, preview
        assert set(balances().values()) == {100}
        decide(gated, request["id"], "approve", {})
        write.result()
        agent.commit()
    finally:
        agent.close()
    assert [balances()[i] for i in (1, 2, 3)] == [9, 9, 100]
