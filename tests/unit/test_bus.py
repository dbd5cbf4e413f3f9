"""Redelivery back-off and failure triage of the dead-letter middleware."""

import pytest
from nats.js.errors import ServiceUnavailableError

from shared.bus import MAX_REDELIVERY_DELAY_SECONDS, dependency_unavailable, redelivery_delay


def test_redelivery_backs_off_exponentially_up_to_a_cap() -> None:
    delays = [redelivery_delay(n) for n in range(1, 10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays)
    assert max(delays) == MAX_REDELIVERY_DELAY_SECONDS


def wrapped(error: Exception) -> Exception:
    """``error`` as the cause of the exception a handler lets out."""
    outer = RuntimeError("handler failed")
    outer.__cause__ = error
    return outer


@pytest.mark.parametrize(
    "error",
    [
        # nats-py raises it bare for a JetStream API request nobody answers (a stream
        # electing a leader) and for a direct get answered with a 503 status.
        ServiceUnavailableError(),
        ServiceUnavailableError(
            code=503, err_code=10008, description="JetStream system temporarily unavailable"
        ),
    ],
)
def test_a_jetstream_outage_is_retried_for_as_long_as_it_lasts(error: Exception) -> None:
    assert dependency_unavailable(error)
    assert dependency_unavailable(wrapped(error))


def test_a_stream_refusing_the_message_counts_towards_the_dead_letter() -> None:
    refused = ServiceUnavailableError(
        code=503, err_code=10077, description="maximum messages per subject exceeded"
    )
    assert not dependency_unavailable(refused)
    assert not dependency_unavailable(wrapped(refused))
