"""SQLAlchemy 2 through `airlock serve` under the example's rules: reads pass, writes wait.

The ORM (sync on psycopg 3, async on asyncpg) queries the `orders` target the way
applications and agents write them: in_(), or_(), filters on columns named like types
(`name`, `type`, `date`), joins, aggregates; `inspect()` reflects the schema; the
engine's pool checks connections out, resets them on return and hands them out again.
Each test then checks what an approver and an auditor would: no approval request,
and every statement in the transcripts allowed. A write from the ORM is held for a DBA.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import ForeignKey, and_, func, inspect, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from tests.support.approvals import Background
from tests.support.example_gateway import ExampleGateway


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    type: Mapped[str]
    date: Mapped[datetime.date | None]
    price: Mapped[decimal.Decimal]
    comment: Mapped[str | None]
    created_at: Mapped[datetime.datetime]


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int]
    status: Mapped[str]
    placed_at: Mapped[datetime.datetime] = mapped_column(sqlalchemy.DateTime(timezone=True))
    product: Mapped[Product] = relationship()


#: What each query below returns on the example schema (tests/support/example_gateway.py).
FRUIT_OR_CHEAP = ["apple", "leek", "pear"]
PENDING_BY_NAME = [("apple", 5), ("pear", 1)]
QUANTITY_BY_TYPE = [("bakery", 2), ("fruit", 9)]


def orm_queries(session: Session) -> dict[str, Any]:
    """The ORM's everyday reads, as an application or an agent writes them."""
    names_in = session.scalars(
        select(Product.name).where(Product.name.in_(["apple", "pear", "plum"])).order_by(Product.id)
    ).all()
    fruit_or_cheap = session.scalars(
        select(Product.name)
        .where(or_(Product.type == "fruit", Product.price < decimal.Decimal("1.00")))
        .order_by(Product.name)
    ).all()
    dated = session.scalars(
        select(Product.name).where(
            and_(Product.date >= datetime.date(2024, 1, 1), Product.comment.is_not(None)),
            Product.type.in_(["fruit", "vegetable"]),
            Product.created_at < datetime.datetime(2025, 1, 1),
        )
    ).all()
    pending = session.execute(
        select(Product.name, Order.quantity)
        .join(Order.product)
        .where(Order.status == "pending", Order.id != 99)
        .order_by(Product.name)
    ).all()
    by_type = session.execute(
        select(Product.type, func.sum(Order.quantity))
        .join(Order, Order.product_id == Product.id)
        .where(Order.status.not_in(["cancelled"]) | (Order.quantity > 1))
        .group_by(Product.type)
        .order_by(Product.type)
    ).all()
    first = session.get(Product, 1)
    tagged = session.scalars(
        text("SELECT name FROM products WHERE tags ->> 'colour' = :colour"), {"colour": "green"}
    ).all()
    return {
        "names_in": list(names_in),
        "fruit_or_cheap": list(fruit_or_cheap),
        "dated": sorted(dated),
        "pending": [tuple(row) for row in pending],
        "by_type": [(kind, int(total)) for kind, total in by_type],
        "first": (first.name, first.type) if first else None,
        "tagged": list(tagged),
    }


EXPECTED = {
    "names_in": ["apple", "pear"],
    "fruit_or_cheap": FRUIT_OR_CHEAP,
    "dated": ["apple", "leek"],
    "pending": PENDING_BY_NAME,
    "by_type": QUANTITY_BY_TYPE,
    "first": ("apple", "fruit"),
    "tagged": ["pear"],
}


def reflection(connection: sqlalchemy.Connection) -> dict[str, Any]:
    """What `inspect()` tells an agent about the schema (LangChain calls the same)."""
    inspector = inspect(connection)
    return {
        "tables": sorted(inspector.get_table_names()),
        "views": inspector.get_view_names(),
        "columns": [c["name"] for c in inspector.get_columns("products")],
        "primary key": inspector.get_pk_constraint("orders")["constrained_columns"],
        "foreign keys": [
            (fk["constrained_columns"], fk["referred_table"])
            for fk in inspector.get_foreign_keys("orders")
        ],
        "indexes": inspector.get_indexes("products"),
        "has table": inspector.has_table("orders"),
    }


EXPECTED_REFLECTION = {
    "tables": ["orders", "products"],
    "views": ["order_totals"],
    "columns": ["id", "name", "type", "date", "price", "comment", "tags", "created_at"],
    "primary key": ["id"],
    "foreign keys": [(["product_id"], "products")],
    "indexes": [],
    "has table": True,
}


def test_sqlalchemy_psycopg_orm_reflection_and_pool_reads_pass(
    example_gateway: ExampleGateway,
) -> None:
    subject, token = example_gateway.reader("sqlalchemy-psycopg")
    # One connection in the pool: each session below checks the same one out again,
    # after the pool reset it on return (a rollback).
    engine = sqlalchemy.create_engine(
        example_gateway.pg_url("postgresql+psycopg", token),
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
        pool_reset_on_return="rollback",
    )
    try:
        with Session(engine) as session:
            assert orm_queries(session) == EXPECTED
        with engine.connect() as connection:
            assert reflection(connection) == EXPECTED_REFLECTION
        with Session(engine) as session, session.begin():
            assert session.scalar(select(func.count()).select_from(Order)) == 4
        assert isinstance(engine.pool, sqlalchemy.QueuePool)
        assert (engine.pool.checkedin(), engine.pool.checkedout()) == (1, 0)
    finally:
        engine.dispose()
    statements = example_gateway.assert_reads_passed(subject)
    # One connection served all three checkouts.
    assert len({s["sql"] for s in statements if "pg_catalog.version()" in s["sql"]}) == 1


async def async_orm_queries(engine: AsyncEngine) -> tuple[dict[str, Any], dict[str, Any]]:
    async with AsyncSession(engine) as session:
        found = await session.run_sync(orm_queries)
    async with engine.connect() as connection:
        reflected = await connection.run_sync(reflection)
    return found, reflected


def test_sqlalchemy_asyncpg_orm_reflection_and_pool_reads_pass(
    example_gateway: ExampleGateway,
) -> None:
    subject, token = example_gateway.reader("sqlalchemy-asyncpg")

    async def agent() -> tuple[dict[str, Any], dict[str, Any], int]:
        engine = create_async_engine(
            example_gateway.pg_url("postgresql+asyncpg", token),
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
        )
        try:
            found, reflected = await async_orm_queries(engine)
            async with AsyncSession(engine) as session:
                count = await session.scalar(select(func.count()).select_from(Product))
            return found, reflected, int(count or 0)
        finally:
            await engine.dispose()

    found, reflected, count = asyncio.run(agent())
    assert found == EXPECTED
    assert reflected == EXPECTED_REFLECTION
    assert count == 4
    example_gateway.assert_reads_passed(subject)


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "postgresql+asyncpg"])
def test_sqlalchemy_orm_write_is_held_for_a_dba(
    example_gateway: ExampleGateway, scheme: str
) -> None:
    subject = f"writer-sqlalchemy-{scheme.rsplit('+', 1)[1]}"
    token = example_gateway.token(subject)
    url = example_gateway.pg_url(scheme, token)

    def add_product() -> object:
        if scheme.endswith("asyncpg"):

            async def add() -> None:
                engine = create_async_engine(url)
                try:
                    async with AsyncSession(engine) as session, session.begin():
                        session.add(Order(product_id=3, quantity=7, status="new", placed_at=NOW))
                finally:
                    await engine.dispose()

            return asyncio.run(add())
        engine = sqlalchemy.create_engine(url)
        try:
            with Session(engine) as session, session.begin():
                session.add(Order(product_id=3, quantity=7, status="new", placed_at=NOW))
        finally:
            engine.dispose()
        return None

    agent = Background(add_product)
    request = example_gateway.pending_request(subject)
    assert request["class"] == "write"
    assert request["sql"].startswith("INSERT INTO orders")
    example_gateway.deny(request["id"], "no new orders today")
    outcome = agent.result()
    assert isinstance(outcome, sqlalchemy.exc.DBAPIError), outcome
    assert "no new orders today" in str(outcome)
    assert example_gateway.pg_rows("SELECT count(*) FROM orders WHERE status = 'new'") == [(0,)]


NOW = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
