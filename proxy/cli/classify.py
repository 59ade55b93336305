"""`airlock classify`: what class the gateway gives a statement, and why.

For policy writers checking a statement, and for scripts:

    airlock classify --dialect postgres "UPDATE t SET a = 1"
    airlock classify --json "SELECT 1"
    airlock classify --jsonl statements.jsonl      # one {"dialect"?, "sql"} object a line

`--jsonl` writes one {"class", "reasons"} object per input line, in order (blank lines are
skipped); `-` reads standard input. Bad usage or input exits 2 and says what is wrong,
naming the line; every input is checked before anything is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO

from policy.classify import DIALECTS, Verdict, classify


class InputError(Exception):
    """The input cannot be classified; the message says where and why."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `classify` subcommand on the `airlock` command's subparsers."""
    parser = commands.add_parser(
        "classify",
        help="classify SQL as the gateway would (read, write, ddl, admin, unknown)",
        description="Classify SQL as the gateway does before forwarding it.",
    )
    parser.add_argument(
        "--dialect",
        choices=DIALECTS,
        default="postgres",
        help="SQL dialect (default postgres; --jsonl lines may override it)",
    )
    parser.add_argument("--json", action="store_true", help='print {"class", "reasons"} as JSON')
    parser.add_argument(
        "--jsonl",
        metavar="FILE",
        help='classify each line {"dialect", "sql"} of FILE ("-": standard input); '
        "print one JSON object per line",
    )
    parser.add_argument("sql", nargs="?", help='the SQL text ("-": read it from standard input)')
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.jsonl is not None:
            if args.sql is not None:
                raise InputError("give either SQL or --jsonl FILE, not both")
            for verdict in _classify_lines(_read(args.jsonl), args.jsonl, args.dialect):
                print(json.dumps(verdict.to_json(), ensure_ascii=False))
            return 0
        if args.sql is None:
            raise InputError("give the SQL to classify, or --jsonl FILE")
        sql = sys.stdin.read() if args.sql == "-" else args.sql
        verdict = classify(sql, args.dialect)
    except InputError as error:
        print(f"airlock classify: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(verdict.to_json(), ensure_ascii=False))
    else:
        _print_readably(verdict, sys.stdout)
    return 0


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as source:
            return source.read()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read: {error}") from error


def _classify_lines(text: str, path: str, default_dialect: str) -> list[Verdict]:
    statements: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not JSON: {error.msg}") from error
        if not isinstance(item, dict):
            raise InputError(f'{where}: expected an object like {{"dialect": ..., "sql": ...}}')
        sql = item.get("sql")
        if not isinstance(sql, str):
            raise InputError(f'{where}: "sql" must be a string')
        dialect = item.get("dialect", default_dialect)
        if dialect not in DIALECTS:
            raise InputError(f'{where}: "dialect" must be one of {", ".join(DIALECTS)}')
        statements.append((sql, dialect))
    return [classify(sql, dialect) for sql, dialect in statements]


def _print_readably(verdict: Verdict, out: IO[str]) -> None:
    out.write(f"{verdict.statement_class.value}\n")
    for reason in verdict.reasons:
        out.write(f"  - {reason}\n")
