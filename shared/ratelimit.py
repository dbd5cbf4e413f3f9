"""A token bucket per source: how often one caller may do something, in memory per replica."""

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """``rate`` actions per second per source after a ``burst``; ``rate`` 0 means no limit.

    Each replica keeps its own buckets (a source spread over N replicas gets up to N
    times the rate); the least recently seen sources are forgotten past ``max_sources``.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_sources: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, source: str, cost: float = 1.0) -> float:
        """Spend ``cost`` from ``source``'s bucket: 0 when allowed, else seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, updated = self.buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
        cost = min(cost, float(self.burst))
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self.buckets[source] = (tokens, now)
        if len(self.buckets) > self.max_sources:
            self.buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        """``wait`` as a ``Retry-After`` header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))
