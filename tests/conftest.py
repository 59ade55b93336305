"""Shared fixtures: each lives in tests/support/ and is registered here."""

import os

pytest_plugins = [
    "tests.support.issuer",
    "tests.support.pgcluster",
    "tests.support.gateway",
    "tests.support.approvals",
    "tests.support.mariadb",
    "tests.support.example_gateway",
]

#: Collected only against a real MySQL 8 (see the file's docstring).
collect_ignore = [] if os.environ.get("MYSQL8_DSN") else ["integration/test_mysql8.py"]
