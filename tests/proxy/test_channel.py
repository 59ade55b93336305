"""Channel's reading switches: paired flow control, and reading regardless while a
statement is held (so that the client's close is seen at once)."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.core.channel import Channel


class FakeTransport:
    """Records whether the channel asked its transport to read."""

    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, **_limits: int) -> None:
        pass

    def get_extra_info(self, _name: str, default: Any = None) -> Any:
        return default


async def channel_with(transport: FakeTransport) -> Channel:
    channel = Channel()
    channel.connection_made(transport)  # type: ignore[arg-type]
    return channel


def test_a_watched_channel_reads_while_its_peer_is_full_and_pauses_again_after() -> None:
    async def scenario() -> list[bool]:
        transport = FakeTransport()
        channel = await channel_with(transport)
        seen = []
        channel.pause_reading("peer buffer full")
        seen.append(transport.reading)  # paused
        channel.watch_for_close(True)
        seen.append(transport.reading)  # read regardless while held
        channel.pause_reading("another reason")
        seen.append(transport.reading)  # still read
        channel.resume_reading("peer buffer full")
        channel.watch_for_close(False)
        seen.append(transport.reading)  # "another reason" still stands
        channel.resume_reading("another reason")
        seen.append(transport.reading)
        return seen

    assert asyncio.run(scenario()) == [False, True, True, False, True]


def test_watching_an_unpaused_channel_changes_nothing() -> None:
    async def scenario() -> list[bool]:
        transport = FakeTransport()
        channel = await channel_with(transport)
        channel.watch_for_close(True)
        first = transport.reading
        channel.resume_reading("never given")
        channel.watch_for_close(False)
        return [first, transport.reading]

    assert asyncio.run(scenario()) == [True, True]
