"""`airlock classify`: readable output, --json, --jsonl, and exit 2 on bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli.classify import add_parser

REPO_ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="airlock")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["classify", *argv])
    code: int = args.handler(args)
    return code


def test_prints_the_class_and_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--dialect", "postgres", "SELECT 1; UPDATE t SET a = 1"]) == 0
    assert capsys.readouterr().out == "write\n  - statement 2 of 2: UPDATE modifies data\n"


def test_dialect_defaults_to_postgres(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["SELECT $$x$$"]) == 0
    assert capsys.readouterr().out.startswith("read\n")


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--dialect", "mysql", "--json", "SELECT SLEEP(1)"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "class": "unknown",
        "reasons": ["function sleep is not on the read-safe allowlist"],
    }


def test_sql_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", _Stdin("DROP TABLE t"))
    assert run(["--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["class"] == "ddl"


def test_jsonl_writes_one_object_per_line_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "statements.jsonl"
    source.write_text(
        '{"dialect": "postgres", "sql": "SELECT 1"}\n'
        "\n"
        '{"sql": "DELETE FROM t"}\n'
        '{"dialect": "mysql", "sql": "SELECT 1 /*!50000 , SLEEP(1) */"}\n'
        '{"dialect": "postgres", "sql": "GRANT a TO b"}\n',
        encoding="utf-8",
    )
    assert run(["--jsonl", str(source)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["class"] for line in lines] == ["read", "write", "unknown", "admin"]
    assert json.loads(lines[1]) == {"class": "write", "reasons": ["DELETE modifies data"]}


def test_jsonl_lines_default_to_the_dialect_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "s.jsonl"
    source.write_text('{"sql": "SELECT 1 # comment"}\n', encoding="utf-8")
    assert run(["--dialect", "mysql", "--jsonl", str(source)]) == 0
    assert json.loads(capsys.readouterr().out)["class"] == "read"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "s.jsonl:2: not JSON"),
        ('["SELECT 1"]', 's.jsonl:2: expected an object like {"dialect": ..., "sql": ...}'),
        ('{"dialect": "postgres"}', 's.jsonl:2: "sql" must be a string'),
        ('{"sql": 1}', 's.jsonl:2: "sql" must be a string'),
        (
            '{"dialect": "oracle", "sql": "SELECT 1"}',
            's.jsonl:2: "dialect" must be one of postgres, mysql',
        ),
    ],
)
def test_a_bad_jsonl_line_is_named_and_nothing_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    source = tmp_path / "s.jsonl"
    source.write_text('{"sql": "SELECT 1"}\n' + line + "\n", encoding="utf-8")
    assert run(["--jsonl", str(source)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert captured.err.startswith("airlock classify: ")


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--jsonl", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_sql_and_jsonl_together_or_neither_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run([]) == 2
    assert "give the SQL to classify" in capsys.readouterr().err
    assert run(["SELECT 1", "--jsonl", str(tmp_path / "x")]) == 2
    assert "not both" in capsys.readouterr().err


def test_an_unknown_dialect_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_:
        run(["--dialect", "oracle", "SELECT 1"])
    assert exit_.value.code == 2


def test_as_a_process() -> None:
    script = (
        "import argparse, sys\n"
        "from proxy.cli.classify import add_parser\n"
        "parser = argparse.ArgumentParser(prog='airlock')\n"
        "add_parser(parser.add_subparsers(dest='command', required=True))\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.handler(args))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "classify", "--json", "SELECT * FROM t FOR UPDATE"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "class": "write",
        "reasons": ["SELECT ... FOR UPDATE/SHARE locks rows"],
    }


class _Stdin:
    def __init__(self, text: str) -> None:
        self._text = text

    def read(self) -> str:
        return self._text
