"""Token buckets: at most ``rate`` calls a second per page, in bursts up to ``capacity``."""

import asyncio
import time
from collections.abc import Awaitable, Callable

# Refill arithmetic in floats may leave a token at 0.9999999999; close enough is a token
# (else the wait for the last sliver can be shorter than the clock's resolution, forever).
_EPSILON = 1e-9


class TokenBucket:
    """A token bucket refilled continuously; :meth:`acquire` waits for a token."""

    def __init__(
        self,
        rate: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = capacity if capacity is not None else rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_acquire(self) -> bool:
        """Take a token if one is there now."""
        self._refill()
        if self._tokens >= 1 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1)
            return True
        return False

    async def acquire(self) -> None:
        """Wait until a token is free and take it (callers are served in order)."""
        async with self._lock:
            while not self.try_acquire():
                await self._sleep((1 - self._tokens) / self.rate)


class PerKeyRateLimiter:
    """One token bucket per key (a page, an Instagram account, a WhatsApp number)."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, key: str) -> TokenBucket:
        """The bucket of ``key``, created on first use."""
        if key not in self._buckets:
            self._buckets[key] = TokenBucket(self.rate, self.capacity)
        return self._buckets[key]

    async def acquire(self, key: str) -> None:
        """Wait for a token of ``key``'s bucket."""
        await self.bucket(key).acquire()
