"""Capture what frameworks, drivers, pools and tools really send, into tests/policy/cases/.

    /work/main/.venv/bin/python -m tests.policy.capture.capture [SOURCE ...]

Each source runs the real library against the real server (PostgreSQL at
AIRLOCK_CAPTURE_PG, default 127.0.0.1:5432 as postgres; MariaDB/MySQL at
AIRLOCK_CAPTURE_MYSQL, default 127.0.0.1:3306 as root) through `wire.recording_relay`,
on a throwaway database `airlock_capture` made fresh for the run, and writes
cases/captured_<source>.jsonl: every distinct text it sent, in order, expected read. The
Node.js and Java sources need `npm ci` in tests/policy/capture/node and Debian's
libpostgresql-jdbc-java with a JDK (javac); they are skipped with a note when missing.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from tests.policy.capture.wire import COM_RESET_CONNECTION, recording_relay

HERE = Path(__file__).parent
CASES = HERE.parent / "cases"
DATABASE = "airlock_capture"


def _address(variable: str, default: str) -> tuple[str, int]:
    host, _, port = os.environ.get(variable, default).rpartition(":")
    return host, int(port)


PG = _address("AIRLOCK_CAPTURE_PG", "127.0.0.1:5432")
MYSQL = _address("AIRLOCK_CAPTURE_MYSQL", "127.0.0.1:3306")

# Column names that are also type names or keywords (issue 16), as applications have them.
PG_SCHEMA = """
CREATE TABLE author (
    id serial PRIMARY KEY,
    name text NOT NULL,
    type text,
    date date,
    comment text,
    json jsonb,
    uuid uuid,
    format text,
    created timestamp with time zone DEFAULT now()
);
COMMENT ON TABLE author IS 'people who write books';
CREATE TABLE book (
    id serial PRIMARY KEY,
    author_id integer NOT NULL REFERENCES author (id),
    title varchar(200) NOT NULL UNIQUE,
    "time" time,
    "timestamp" timestamp,
    status text CHECK (status IN ('draft', 'published')),
    price numeric(10, 2)
);
CREATE INDEX book_author_idx ON book (author_id, status);
CREATE VIEW published AS SELECT b.title, a.name FROM book b JOIN author a ON a.id = b.author_id
    WHERE b.status = 'published';
CREATE FUNCTION book_count(integer) RETURNS bigint LANGUAGE sql STABLE
    AS 'SELECT count(*) FROM book WHERE author_id = $1';
INSERT INTO author (name, type, date, comment, json, uuid, format)
    VALUES ('Ann', 'novelist', '2024-01-01', 'first', '{"a": 1}',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'hardcover'),
           ('Bob', 'poet', '2023-05-06', NULL, NULL, NULL, 'paperback');
INSERT INTO book (author_id, title, "time", "timestamp", status, price)
    VALUES (1, 'Apples', '10:00', '2024-01-01 10:00', 'published', 12.5),
           (2, 'Pears', '11:00', '2024-02-01 11:00', 'draft', 8);
"""

MYSQL_SCHEMA = [
    """CREATE TABLE author (
        id int AUTO_INCREMENT PRIMARY KEY,
        name varchar(100) NOT NULL,
        type varchar(50),
        date date,
        comment text,
        json json,
        uuid char(32),
        format varchar(20),
        created timestamp DEFAULT CURRENT_TIMESTAMP
    ) COMMENT 'people who write books'""",
    """CREATE TABLE book (
        id int AUTO_INCREMENT PRIMARY KEY,
        author_id int NOT NULL,
        title varchar(200) NOT NULL UNIQUE,
        time time,
        timestamp datetime,
        status enum('draft', 'published'),
        price decimal(10, 2),
        KEY book_author_idx (author_id, status),
        CONSTRAINT book_author_fk FOREIGN KEY (author_id) REFERENCES author (id)
    )""",
    """CREATE VIEW published AS SELECT b.title, a.name FROM book b
        JOIN author a ON a.id = b.author_id WHERE b.status = 'published'""",
    """INSERT INTO author (name, type, date, comment, json, format) VALUES
        ('Ann', 'novelist', '2024-01-01', 'first', '{"a": 1}', 'hardcover'),
        ('Bob', 'poet', '2023-05-06', NULL, NULL, 'paperback')""",
    """INSERT INTO book (author_id, title, time, timestamp, status, price) VALUES
        (1, 'Apples', '10:00', '2024-01-01 10:00', 'published', 12.5),
        (2, 'Pears', '11:00', '2024-02-01 11:00', 'draft', 8)""",
]


def make_postgres_database() -> None:
    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    with psycopg.connect(
        host=PG[0], port=PG[1], user="postgres", dbname=DATABASE, autocommit=True
    ) as owner:
        owner.execute(PG_SCHEMA)


def make_mysql_database() -> None:
    admin = pymysql.connect(host=MYSQL[0], port=MYSQL[1], user="root", autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        cursor.execute(f"CREATE DATABASE {DATABASE}")
        cursor.execute(f"USE {DATABASE}")
        for statement in MYSQL_SCHEMA:
            cursor.execute(statement)
    admin.close()


def versions(*packages: str) -> str:
    return " + ".join(f"{package} {metadata.version(package)}" for package in packages)


# --------------------------------------------------------------------------- sources


def sqlalchemy_queries(session: object, models: dict[str, Any]) -> None:
    """ORM queries of the kinds applications and agents write."""
    from sqlalchemy import and_, exists, func, or_, select
    from sqlalchemy.orm import Session, joinedload, selectinload

    assert isinstance(session, Session)
    author, book = models["author"], models["book"]
    queries = [
        select(author).where(author.name.in_(["Ann", "Bob"])),
        select(author).where(author.type.in_(["poet"]), author.date.is_not(None)),
        select(author).where(or_(author.name == "Ann", author.comment.like("f%"))),
        select(author).where(
            and_(author.format != "x", or_(author.uuid.is_(None), author.json.is_not(None)))
        ),
        select(book)
        .where(book.time.between(datetime.time(9), datetime.time(12)))
        .order_by(book.timestamp.desc()),
        select(book).join(author).where(author.name.ilike("a%")).limit(5).offset(1),
        select(author.name, func.count(book.id)).join(book).group_by(author.name),
        select(author).where(exists().where(book.author_id == author.id)),
        select(func.lower(author.name)).distinct(),
        select(book).where(book.status.in_(["draft", "published"]), book.price > 1),
        select(author).options(selectinload(author.books)),
        select(book).options(joinedload(book.author)),
    ]
    for query in queries:
        session.execute(query).unique().all()
    session.get(author, 1)
    session.rollback()


def orm_models() -> tuple[object, dict[str, Any]]:
    from sqlalchemy import (
        JSON,
        Column,
        Date,
        DateTime,
        ForeignKey,
        Integer,
        Numeric,
        String,
        Text,
        Time,
        Uuid,
    )
    from sqlalchemy.orm import declarative_base, relationship

    base = declarative_base()
    author = type(
        "Author",
        (base,),
        {
            "__tablename__": "author",
            "id": Column(Integer, primary_key=True),
            "name": Column(Text, nullable=False),
            "type": Column(Text),
            "date": Column(Date),
            "comment": Column(Text),
            "json": Column(JSON),
            "uuid": Column(Uuid),
            "format": Column(Text),
            "books": relationship("Book", back_populates="author"),
        },
    )
    book = type(
        "Book",
        (base,),
        {
            "__tablename__": "book",
            "id": Column(Integer, primary_key=True),
            "author_id": Column(Integer, ForeignKey("author.id"), nullable=False),
            "title": Column(String(200)),
            "time": Column(Time),
            "timestamp": Column(DateTime),
            "status": Column(Text),
            "price": Column(Numeric(10, 2)),
            "author": relationship("Author", back_populates="books"),
        },
    )
    return base, {"author": author, "book": book}


def reflect(inspector: object) -> None:
    """What `sqlalchemy.inspect()` users (and LangChain, Alembic) call."""
    from sqlalchemy.engine.reflection import Inspector

    assert isinstance(inspector, Inspector)
    inspector.get_schema_names()
    for table in inspector.get_table_names():
        inspector.has_table(table)
        inspector.get_columns(table)
        inspector.get_pk_constraint(table)
        inspector.get_foreign_keys(table)
        inspector.get_indexes(table)
        inspector.get_unique_constraints(table)
        inspector.get_check_constraints(table)
        inspector.get_table_comment(table)
    for view in inspector.get_view_names():
        inspector.get_view_definition(view)
    inspector.get_multi_columns()


def capture_sqlalchemy_psycopg(port: int) -> None:
    from sqlalchemy import MetaData, create_engine, inspect
    from sqlalchemy.orm import Session

    engine = create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}", pool_pre_ping=True
    )
    _, models = orm_models()
    with Session(engine) as session:
        sqlalchemy_queries(session, models)
    reflect(inspect(engine))
    MetaData().reflect(engine, views=True)
    with engine.connect() as connection:  # checkout (pre-ping) and checkin (rollback)
        connection.exec_driver_sql("SELECT 1")
    engine.dispose()


def capture_sqlalchemy_asyncpg(port: int) -> None:
    from sqlalchemy import inspect
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def run() -> None:
        engine = create_async_engine(
            f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{DATABASE}", pool_pre_ping=True
        )
        _, models = orm_models()
        async with AsyncSession(engine) as session:
            await session.run_sync(lambda sync: sqlalchemy_queries(sync, models))
        async with engine.connect() as connection:
            await connection.run_sync(lambda sync: reflect(inspect(sync)))
        await engine.dispose()

    asyncio.run(run())


def capture_pools_postgres(port: int) -> None:
    """psycopg_pool's checks and resets, and asyncpg's pool (its Connection.reset)."""
    import asyncpg
    from psycopg_pool import ConnectionPool

    conninfo = f"host=127.0.0.1 port={port} user=postgres dbname={DATABASE}"
    with ConnectionPool(
        conninfo, min_size=1, max_size=1, check=ConnectionPool.check_connection, open=True
    ) as pool:
        for _ in range(2):
            with pool.connection() as connection:
                connection.execute("SELECT name FROM author WHERE name IN (%s, %s)", ["A", "B"])
        with pool.connection() as connection:  # returned inside a transaction: rolled back
            connection.autocommit = False
            connection.execute("SELECT 1")
            connection.info.transaction_status  # noqa: B018

    async def asyncpg_pool() -> None:
        pool = await asyncpg.create_pool(
            host="127.0.0.1", port=port, user="postgres", database=DATABASE, min_size=1, max_size=1
        )
        for _ in range(2):
            async with pool.acquire() as connection:
                await connection.fetch("SELECT name FROM author WHERE type = ANY($1)", ["poet"])
        async with pool.acquire() as connection:
            transaction = connection.transaction()
            await transaction.start()
            await connection.fetch("SELECT 1")  # released inside the transaction
        await pool.close()

    asyncio.run(asyncpg_pool())


def capture_django(port: int) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": DATABASE,
                    "USER": "postgres",
                    "HOST": "127.0.0.1",
                    "PORT": str(port),
                    "CONN_HEALTH_CHECKS": True,
                    "CONN_MAX_AGE": 60,
                }
            },
            INSTALLED_APPS=["django.contrib.contenttypes"],
            USE_TZ=True,
            TIME_ZONE="Europe/Paris",
        )
        django.setup()
    import io

    from django.core.management import call_command
    from django.db import connection, models
    from django.db.models import Count, Q

    class Author(models.Model):  # type: ignore[misc]
        name = models.TextField()
        type = models.TextField(null=True)
        date = models.DateField(null=True)
        comment = models.TextField(null=True)
        format = models.TextField(null=True)

        class Meta:
            app_label = "capture"
            db_table = "author"
            managed = False

    class Book(models.Model):  # type: ignore[misc]
        author = models.ForeignKey(Author, on_delete=models.DO_NOTHING)
        title = models.CharField(max_length=200)
        status = models.TextField(null=True)

        class Meta:
            app_label = "capture"
            db_table = "book"
            managed = False

    list(Author.objects.filter(name__in=["Ann", "Bob"]))
    list(Author.objects.filter(Q(type="poet") | Q(comment__icontains="fir")).order_by("-date"))
    list(Author.objects.filter(date__year=2024, format__startswith="hard"))
    list(Book.objects.select_related("author").filter(author__name__in=["Ann"])[:5])
    list(Book.objects.values("author__name").annotate(n=Count("id")).filter(n__gt=0))
    list(Book.objects.filter(status__in=["draft"]).values_list("title", flat=True))
    Author.objects.filter(type__isnull=False).exists()
    Author.objects.count()
    call_command("inspectdb", stdout=io.StringIO())
    introspection = connection.introspection
    with connection.cursor() as cursor:
        for table in introspection.get_table_list(cursor):
            introspection.get_table_description(cursor, table.name)
            introspection.get_relations(cursor, table.name)
            introspection.get_constraints(cursor, table.name)
            introspection.get_primary_key_column(cursor, table.name)
            introspection.get_sequences(cursor, table.name)
    connection.close_if_unusable_or_obsolete()
    connection.close()


def capture_langchain(port: int) -> None:
    from langchain_community.utilities import SQLDatabase

    database = SQLDatabase.from_uri(f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}")
    database.get_usable_table_names()
    database.get_table_info()
    database.get_table_info_no_throw(["author"])
    database.run("SELECT name FROM author WHERE name IN ('apple', 'pear')")
    database.run_no_throw("SELECT type, count(*) FROM author GROUP BY type")


def capture_psql(port: int) -> None:
    commands = [r"\d", r"\dt", r"\d author", r"\d+ book", r"\dn", r"\df", r"\l", r"\du", r"\dv"]
    command = ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE]
    for meta in commands:
        command += ["-c", meta]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def capture_node_pg(port: int) -> None:
    _node("node_pg.js", port)


def capture_mcp_postgres(port: int) -> None:
    _node("mcp_postgres.js", port)


def _node(script: str, port: int) -> None:
    modules = HERE / "node" / "node_modules"
    if not modules.is_dir():
        raise Skipped(f"run `npm ci` in {modules.parent} first")
    subprocess.run(
        ["node", script, f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"],
        cwd=HERE / "node",
        check=True,
        capture_output=True,
        timeout=120,
    )


def capture_pgjdbc(port: int) -> None:
    jar = Path("/usr/share/java/postgresql.jar")
    javac = shutil.which("javac")
    if not jar.exists() or javac is None:
        raise Skipped("needs Debian's libpostgresql-jdbc-java and a JDK (javac)")
    with tempfile.TemporaryDirectory() as build:
        subprocess.run(
            [javac, "-d", build, "-cp", str(jar), str(HERE / "java" / "Metadata.java")],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                "java",
                "-cp",
                f"{build}:{jar}",
                "Metadata",
                f"jdbc:postgresql://127.0.0.1:{port}/{DATABASE}?user=postgres&sslmode=disable",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def capture_sqlalchemy_pymysql(port: int) -> None:
    from sqlalchemy import MetaData, create_engine, inspect
    from sqlalchemy.orm import Session

    engine = create_engine(
        f"mysql+pymysql://root@127.0.0.1:{port}/{DATABASE}?charset=utf8mb4", pool_pre_ping=True
    )
    _, models = orm_models()
    with Session(engine) as session:
        sqlalchemy_queries(session, {"author": models["author"], "book": models["book"]})
    reflect(inspect(engine))
    MetaData().reflect(engine, views=True)
    engine.dispose()


def capture_mysql_cli(port: int) -> None:
    statements = r"SHOW TABLES; DESCRIBE author; SHOW CREATE TABLE book; SHOW DATABASES; \s"
    subprocess.run(
        ["mysql", "-h", "127.0.0.1", "-P", str(port), "-u", "root", DATABASE, "-e", statements],
        check=True,
        capture_output=True,
        timeout=60,
    )


def capture_pools_mysql(port: int) -> None:
    """aiomysql's pool and mysql-connector's pooling: checkout, checkin, reset."""
    import aiomysql  # type: ignore[import-untyped]
    import mysql.connector.pooling

    async def aiomysql_pool() -> None:
        pool = await aiomysql.create_pool(
            host="127.0.0.1", port=port, user="root", db=DATABASE, minsize=1, maxsize=1
        )
        for _ in range(2):
            async with pool.acquire() as connection, connection.cursor() as cursor:
                await cursor.execute("SELECT name FROM author WHERE name IN (%s)", ("Ann",))
                await cursor.fetchall()
        async with pool.acquire() as connection:  # released inside a transaction
            await connection.begin()
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT 1")
        pool.close()
        await pool.wait_closed()

    asyncio.run(aiomysql_pool())
    pool = mysql.connector.pooling.MySQLConnectionPool(
        pool_name="capture",
        pool_size=1,
        host="127.0.0.1",
        port=port,
        user="root",
        database=DATABASE,
        ssl_disabled=True,
    )
    for _ in range(2):
        connection = pool.get_connection()
        cursor = connection.cursor()
        cursor.execute("SELECT name FROM author WHERE type IN (%s)", ("poet",))
        cursor.fetchall()
        cursor.close()
        connection.close()  # back to the pool: reset_session


class Skipped(Exception):
    """A source whose tools are not installed here."""


#: Each source: (dialect, capture function, what it is, the packages whose versions count).
SOURCES: dict[str, tuple[str, Callable[[int], None], str, tuple[str, ...]]] = {
    "sqlalchemy_psycopg": (
        "postgres",
        capture_sqlalchemy_psycopg,
        "SQLAlchemy ORM queries (in_, or_, filters, joins), inspect() reflection, "
        "pool_pre_ping and rollback-on-return",
        ("SQLAlchemy", "psycopg"),
    ),
    "sqlalchemy_asyncpg": (
        "postgres",
        capture_sqlalchemy_asyncpg,
        "SQLAlchemy asyncio ORM queries and reflection over asyncpg, with pool_pre_ping",
        ("SQLAlchemy", "asyncpg"),
    ),
    "pools_postgres": (
        "postgres",
        capture_pools_postgres,
        "psycopg_pool checkout/check/return and asyncpg's pool acquire/release (reset)",
        ("psycopg-pool", "asyncpg"),
    ),
    "django": (
        "postgres",
        capture_django,
        "Django ORM queries, inspectdb and introspection, connection setup and health checks",
        ("Django", "psycopg"),
    ),
    "langchain": (
        "postgres",
        capture_langchain,
        "LangChain SQLDatabase.from_uri, get_table_info and run",
        ("langchain-community", "SQLAlchemy", "psycopg"),
    ),
    "psql": (
        "postgres",
        capture_psql,
        r"psql's \d, \dt, \d table, \d+ table, \dn, \df, \l, \du, \dv",
        (),
    ),
    "node_pg": ("postgres", capture_node_pg, "node-postgres (npm pg) queries and pool", ()),
    "mcp_postgres": (
        "postgres",
        capture_mcp_postgres,
        "the MCP reference PostgreSQL server: list resources, read a schema, run a query",
        (),
    ),
    "pgjdbc": ("postgres", capture_pgjdbc, "pgjdbc's DatabaseMetaData", ()),
    "sqlalchemy_pymysql": (
        "mysql",
        capture_sqlalchemy_pymysql,
        "SQLAlchemy ORM queries and inspect() reflection over PyMySQL",
        ("SQLAlchemy", "PyMySQL"),
    ),
    "mysql_cli": (
        "mysql",
        capture_mysql_cli,
        "the mysql command-line client: SHOW TABLES, DESCRIBE, SHOW CREATE TABLE, STATUS",
        (),
    ),
    "pools_mysql": (
        "mysql",
        capture_pools_mysql,
        "aiomysql's pool and mysql-connector's pooling: checkout, checkin, reset",
        ("aiomysql", "mysql-connector-python"),
    ),
}


def _tool_version(source: str) -> str:
    tools = {
        "psql": ["psql", "--version"],
        "mysql_cli": ["mysql", "--version"],
        "pgjdbc": ["java", "-version"],
        "node_pg": ["node", "--version"],
        "mcp_postgres": ["node", "--version"],
    }
    if source not in tools:
        return ""
    done = subprocess.run(tools[source], capture_output=True, text=True, check=False)
    return " ".join((done.stdout or done.stderr).split()[:4])


def write_cases(source: str, dialect: str, texts: Iterable[str], what: str) -> int:
    _, _, _, packages = SOURCES[source]
    made_by = versions(*packages) if packages else _tool_version(source)
    seen: dict[str, None] = {}
    for text in texts:
        if text != COM_RESET_CONNECTION and text.strip():
            seen.setdefault(text.strip())
    path = CASES / f"captured_{source}.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for text in seen:
            case = {
                "dialect": dialect,
                "sql": text,
                "expected": "read",
                "category": f"captured-{source}",
                "why": f"{what}; captured from {made_by} (tests/policy/capture)",
            }
            out.write(json.dumps(case) + "\n")
    return len(seen)


def main(argv: list[str]) -> int:
    chosen = argv or list(SOURCES)
    unknown = [name for name in chosen if name not in SOURCES]
    if unknown:
        print(f"unknown sources: {', '.join(unknown)}; known: {', '.join(SOURCES)}")
        return 2
    dialects = {SOURCES[name][0] for name in chosen}
    if "postgres" in dialects:
        make_postgres_database()
    if "mysql" in dialects:
        make_mysql_database()
    for name in chosen:
        dialect, run, what, _ = SOURCES[name]
        upstream = PG if dialect == "postgres" else MYSQL
        with recording_relay(dialect, upstream) as (port, recording):
            try:
                run(port)
            except Skipped as skipped:
                print(f"{name}: skipped: {skipped}")
                continue
            texts = recording.take()
        resets = texts.count(COM_RESET_CONNECTION)
        count = write_cases(name, dialect, texts, what)
        extra = f" (and {resets} COM_RESET_CONNECTION)" if resets else ""
        print(f"{name}: {count} distinct statements{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
