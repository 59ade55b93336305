"""Waiting for something to happen, instead of sleeping and hoping it has.

The suite runs on busy machines: a fixed sleep is either too short there or wasted time
everywhere else. A test waits for the event it needs, with a deadline generous enough
for a loaded machine, and fails saying what it was waiting for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: How long a test waits for something that takes milliseconds on an idle machine.
PATIENCE_S = 30.0


def wait_until(
    condition: Callable[[], T | None], timeout_s: float, what: str, *, every_s: float = 0.05
) -> T:
    """Poll `condition` until it returns something true; return that.

    Fails (AssertionError naming `what`, and the last answer) when `timeout_s` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        answer = condition()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout_s:g}s for {what}; last: {answer!r:.200}")
        time.sleep(every_s)


async def until(
    condition: Callable[[], T | None], timeout_s: float, what: str, *, every_s: float = 0.01
) -> T:
    """`wait_until` for a test running on an event loop: the loop runs while it waits."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = condition()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout_s:g}s for {what}; last: {answer!r:.200}")
        await asyncio.sleep(every_s)
