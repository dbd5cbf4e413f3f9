"""The per-page token bucket."""

from services.responder.ratelimit import PerKeyRateLimiter, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_burst_up_to_capacity_then_paced_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, capacity=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await bucket.acquire()
    assert clock.slept == []
    await bucket.acquire()
    assert clock.slept == [0.1]
    for _ in range(10):
        await bucket.acquire()
    assert abs(clock.now - 1.1) < 1e-9  # 14 calls: 3 at once, then 10 a second


def test_tokens_refill_but_never_beyond_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=300, clock=clock, sleep=clock.sleep)
    assert all(bucket.try_acquire() for _ in range(300))
    assert not bucket.try_acquire()
    clock.now += 100
    assert sum(bucket.try_acquire() for _ in range(400)) == 300


def test_pages_have_separate_buckets() -> None:
    limiter = PerKeyRateLimiter(rate=1)
    assert limiter.bucket("page-1").try_acquire()
    assert not limiter.bucket("page-1").try_acquire()
    assert limiter.bucket("page-2").try_acquire()
