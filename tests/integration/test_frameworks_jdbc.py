"""pgjdbc (Debian's libpostgresql-jdbc-java, compiled against with javac at test time)
through `airlock serve` under the example's rules: PreparedStatements, a read-only
transaction and DatabaseMetaData pass with no request held.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.example_gateway import ExampleGateway

PROGRAM = Path(__file__).resolve().parent / "java" / "JdbcReads.java"
#: Where Debian's libpostgresql-jdbc-java puts the driver.
PGJDBC = Path("/usr/share/java/postgresql.jar")


@pytest.fixture(scope="module")
def jdbc_reads(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command that runs JdbcReads, compiled into a temporary directory."""
    javac, java = shutil.which("javac"), shutil.which("java")
    missing = "is missing: scripts/setup installs default-jdk-headless"
    assert javac, f"javac {missing}"
    assert java, f"java {missing}"
    assert PGJDBC.is_file(), f"{PGJDBC} is missing: scripts/setup installs libpostgresql-jdbc-java"
    classes = tmp_path_factory.mktemp("jdbc")
    compiled = subprocess.run(
        [javac, "-cp", str(PGJDBC), "-d", str(classes), str(PROGRAM)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stderr
    return [java, "-cp", f"{PGJDBC}:{classes}", "JdbcReads"]


def test_pgjdbc_prepared_statements_and_metadata_reads_pass(
    example_gateway: ExampleGateway, jdbc_reads: list[str]
) -> None:
    subject, token = example_gateway.reader("pgjdbc")
    ran = subprocess.run(
        [*jdbc_reads, str(example_gateway.pg_port)],
        env={**os.environ, "AIRLOCK_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    results = dict(line.split("=", 1) for line in ran.stdout.splitlines())
    assert results == {
        "prepared": ",".join(["apple"] * 7),
        "in": "2",
        "transaction": "11",
        "product": "PostgreSQL 15",
        "tables": "orders,products",
        "views": "order_totals",
        "columns": "id,name,type,date,price,comment,tags,created_at",
        "primary key": "id",
        "imported keys": "products",
        "exported keys": "orders",
        "indexes": "products_pkey",
        "schemas": "information_schema,pg_catalog,public",
        "types": "true",
        "procedures": "0",
    }
    example_gateway.assert_reads_passed(subject)
