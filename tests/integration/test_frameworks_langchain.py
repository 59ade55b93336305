"""LangChain's SQLDatabase (what LLM agents call) through `airlock serve` under the
example's rules: from_uri(), get_table_info() and run() of an LLM's SELECT pass with no
request held; an LLM's INSERT waits for a DBA.
"""

from __future__ import annotations

import warnings

import sqlalchemy

from tests.support.approvals import Background
from tests.support.example_gateway import ExampleGateway

with warnings.catch_warnings():
    # langchain-community warns on import that it is being sunset; SQLDatabase is
    # still what LangChain's SQL agents and toolkits use.
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.utilities import SQLDatabase


def test_langchain_sqldatabase_reads_pass(example_gateway: ExampleGateway) -> None:
    subject, token = example_gateway.reader("langchain")
    db = SQLDatabase.from_uri(
        example_gateway.pg_url("postgresql+psycopg", token), sample_rows_in_table_info=2
    )
    try:
        assert db.dialect == "postgresql"
        assert sorted(db.get_usable_table_names()) == ["orders", "products"]
        info = db.get_table_info()
        # The schema as the LLM reads it: DDL and sample rows, from reflection.
        assert "CREATE TABLE products" in info
        assert "CONSTRAINT orders_product_id_fkey FOREIGN KEY(product_id)" in info
        assert "2 rows from products table" in info
        assert "apple" in info
        # What an LLM writes, and the tool's string answer.
        assert db.run(
            "SELECT name FROM products WHERE name IN ('apple', 'pear') ORDER BY name"
        ) == ("[('apple',), ('pear',)]")
        assert (
            db.run(
                "SELECT p.type, count(*) FROM products p JOIN orders o ON o.product_id = p.id "
                "WHERE o.status = 'pending' OR (o.quantity > 2 AND p.date > '2024-01-01'::date) "
                "GROUP BY p.type ORDER BY p.type"
            )
            == "[('fruit', 3)]"
        )
        assert db.run("SELECT count(*) FROM products WHERE type = 'fruit'", fetch="one") == "[(2,)]"
        assert db.get_table_info_no_throw(["orders"]).startswith("\nCREATE TABLE orders")
    finally:
        db._engine.dispose()
    example_gateway.assert_reads_passed(subject)


def test_langchain_llm_insert_is_held_for_a_dba(example_gateway: ExampleGateway) -> None:
    subject = "writer-langchain"
    db = SQLDatabase.from_uri(
        example_gateway.pg_url("postgresql+psycopg", example_gateway.token(subject)),
        sample_rows_in_table_info=0,
    )
    try:
        sql = "INSERT INTO products (name, type, price) VALUES ('fig', 'fruit', 3.10)"
        agent = Background(lambda: db.run(sql))
        request = example_gateway.pending_request(subject)
        assert (request["class"], request["sql"]) == ("write", sql)
        example_gateway.deny(request["id"], "ask a human for figs")
        outcome = agent.result()
        assert isinstance(outcome, sqlalchemy.exc.DBAPIError), outcome
        assert "ask a human for figs" in str(outcome)
    finally:
        db._engine.dispose()
    assert example_gateway.pg_rows("SELECT count(*) FROM products WHERE name = 'fig'") == [(0,)]
