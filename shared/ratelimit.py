"""Request rate limits, per process (each replica counts its own), on the `limits` library.

A rule is the library's notation, several separated by ``;``: ``"100/second;3000/minute"``.
"""

import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter


def parse_rule(rule: str) -> list[RateLimitItem]:
    """The limits of ``rule``; ValueError when it is not the library's notation."""
    items = parse_many(rule)
    if not items:
        raise ValueError(f"no rate limit in {rule!r}")
    return items


class RateLimit:
    """A moving-window limit on each key (an API key, a client address...)."""

    def __init__(self, rule: str) -> None:
        self.items = parse_rule(rule)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, key: str) -> float | None:
        """Count one request for ``key``: None when it is allowed, else seconds to wait."""
        for item in self.items:
            if not await self._limiter.hit(item, key):
                return await self._wait(item, key)
        return None

    async def exhausted(self, key: str) -> float | None:
        """Without counting: None when ``key`` has room left, else seconds to wait."""
        for item in self.items:
            if not await self._limiter.test(item, key):
                return await self._wait(item, key)
        return None

    async def _wait(self, item: RateLimitItem, key: str) -> float:
        stats = await self._limiter.get_window_stats(item, key)
        return max(0.0, stats.reset_time - time.time())


def retry_after(seconds: float) -> dict[str, str]:
    """The ``Retry-After`` header for a wait (whole seconds, at least one)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
