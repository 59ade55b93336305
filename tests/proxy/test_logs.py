"""proxy/logs.py: the text and JSON log lines, and the names a session binds."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from proxy import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger's configuration for one test, put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_the_stable_keys_and_what_the_record_names(captured: io.StringIO) -> None:
    logs.configure("INFO", "json", captured)
    log = logging.getLogger("airlock.test")
    log.info("hello %s", "world", extra={"event": "greeted", "target": "orders"})
    log.debug("not at INFO")
    [line] = json_lines(captured)
    assert list(line) == ["ts", "level", "logger", "message", "event", "target"]
    assert (line["level"], line["logger"]) == ("INFO", "airlock.test")
    assert line["message"] == "hello world"
    assert line["ts"].endswith("Z")


def test_an_exception_stays_on_its_one_line(captured: io.StringIO) -> None:
    logs.configure("INFO", "json", captured)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("airlock").exception("failed")
    [line] = json_lines(captured)
    assert "ValueError: boom" in line["exception"]


def test_each_session_task_names_only_itself(captured: io.StringIO) -> None:
    """Two sessions log through a module's logger at once: each record carries the names
    its own task bound, and a record the session names itself keeps its own."""
    logs.configure("DEBUG", "json", captured)
    log = logging.getLogger("airlock.other")

    async def session(name: str, ready: asyncio.Event, go: asyncio.Event) -> None:
        logs.bind(session=name, client="[::1]:5432")
        ready.set()
        await go.wait()
        logs.bind(identity=f"agent-{name}", target=None)
        log.info("statement from %s", name)

    async def main() -> None:
        go = asyncio.Event()
        ready = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(session(n, r, go)) for n, r in zip("ab", ready, strict=True)]
        for event in ready:
            await event.wait()
        go.set()
        await asyncio.gather(*tasks)
        log.info("after", extra={"session": "named"})

    asyncio.run(main())
    lines = json_lines(captured)
    by_message = {line["message"]: line for line in lines}
    for name in "ab":
        line = by_message[f"statement from {name}"]
        assert (line["session"], line["identity"], line["client"]) == (
            name,
            f"agent-{name}",
            "[::1]:5432",
        )
        assert "target" not in line
    assert by_message["after"]["session"] == "named"


def test_text_lines_are_as_before(captured: io.StringIO) -> None:
    logs.configure("WARNING", "text", captured)
    logging.getLogger("airlock").warning("careful", extra={"session": "s1"})
    logging.getLogger("airlock").info("quiet")
    assert captured.getvalue().endswith(" WARNING airlock: careful\n")
    assert captured.getvalue().count("\n") == 1


@pytest.mark.parametrize(
    ("address", "shown"),
    [(("127.0.0.1", 5432), "127.0.0.1:5432"), (("::1", 6432), "[::1]:6432"), (None, "-")],
)
def test_host_port(address: tuple[str, int] | None, shown: str) -> None:
    assert logs.host_port(address) == shown


def test_levels_and_formats_are_checked() -> None:
    assert logs.parse_level("debug") == "DEBUG"
    assert logs.parse_level("warn") == "WARNING"
    assert logs.parse_format(" JSON ") == "json"
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        logs.parse_level("loud")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        logs.parse_format("xml")
