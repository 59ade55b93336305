"""Shared fixtures: each lives in tests/support/ and is registered here."""

pytest_plugins = [
    "tests.support.issuer",
    "tests.support.pgcluster",
    "tests.support.gateway",
    "tests.support.approvals",
    "tests.support.mariadb",
]
