"""Consumer lag as JetStream counts it, exported to Prometheus without slowing a scrape.

:class:`ConsumerLagCollector` keeps the latest ``consumer_info`` of each durable
consumer a service reads; :meth:`ConsumerLagCollector.keep_fresh` re-reads them every
few seconds in the background, and ``collect()`` only formats that snapshot, so a
scrape never waits on NATS. A reading older than a few refreshes is not exported:
a missing series says "unknown", a stale one would lie.

Every replica of a service reports the same consumer (they share the durable), so
aggregate with ``max by (consumer)``, never ``sum``.
"""

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from nats.js import JetStreamContext
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger("dmdesk.lag")

REFRESH_SECONDS = 5.0
INFO_TIMEOUT_SECONDS = 2.0
STALE_AFTER_REFRESHES = 3
LABELS = ("stream", "consumer")


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """One reading of one durable consumer."""

    pending: int
    ack_pending: int
    redelivered: int
    read_at: float


class ConsumerLagCollector(Collector):
    """``dmdesk_consumer_*_messages{stream, consumer}`` from a cached snapshot."""

    def __init__(
        self,
        stream: str,
        consumers: Sequence[str],
        *,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self.stream = stream
        self.consumers = tuple(consumers)
        self.refresh_seconds = refresh_seconds
        self.snapshot: dict[str, ConsumerLag] = {}

    async def refresh(self, js: JetStreamContext) -> None:
        """Read every consumer's info once; a consumer that does not answer keeps its reading."""
        for durable in self.consumers:
            try:
                info = await js.consumer_info(self.stream, durable, timeout=INFO_TIMEOUT_SECONDS)
            except Exception as exc:
                logger.warning(
                    "consumer info not read",
                    extra={"consumer": durable, "error_type": type(exc).__name__},
                )
                continue
            self.snapshot[durable] = ConsumerLag(
                pending=info.num_pending or 0,
                ack_pending=info.num_ack_pending or 0,
                redelivered=info.num_redelivered or 0,
                read_at=time.monotonic(),
            )

    async def keep_fresh(self, js: JetStreamContext) -> None:
        """Refresh forever (run it as a task; cancel it to stop)."""
        while True:
            await self.refresh(js)
            await asyncio.sleep(self.refresh_seconds)

    def fresh(self) -> Iterator[tuple[str, ConsumerLag]]:
        """The readings recent enough to export."""
        oldest = time.monotonic() - self.refresh_seconds * STALE_AFTER_REFRESHES
        for durable, lag in self.snapshot.items():
            if lag.read_at >= oldest:
                yield durable, lag

    def describe(self) -> Iterable[Metric]:
        """The metric families, without reading anything (called at registration)."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        """The cached readings; never blocks on NATS."""
        families = self._families()
        pending, ack_pending, redelivered = families
        for durable, lag in self.fresh():
            labels = [self.stream, durable]
            pending.add_metric(labels, lag.pending)
            ack_pending.add_metric(labels, lag.ack_pending)
            redelivered.add_metric(labels, lag.redelivered)
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "dmdesk_consumer_pending_messages",
                "Messages in the stream the durable consumer has not delivered yet.",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "dmdesk_consumer_ack_pending_messages",
                "Messages delivered to the durable consumer and not acknowledged yet.",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "dmdesk_consumer_redelivered_messages",
                "Unacknowledged messages the durable consumer has delivered more than once.",
                labels=LABELS,
            ),
        ]
