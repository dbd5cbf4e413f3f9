"""Redelivery back-off of the dead-letter middleware."""

from shared.bus import MAX_REDELIVERY_DELAY_SECONDS, redelivery_delay


def test_redelivery_backs_off_exponentially_up_to_a_cap() -> None:
    delays = [redelivery_delay(n) for n in range(1, 10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays)
    assert max(delays) == MAX_REDELIVERY_DELAY_SECONDS
