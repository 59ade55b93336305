"""A wall clock that a test moves on: time-dependent rules without sleeping through them."""

from __future__ import annotations

import time


class SteppedClock:
    """Reads the real time once, then stands still until the test advances it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
