"""A DM reaches the queue within a bound even when its decision is late.

The api projects a customer DM from the responder's decision (``dm.routed.*``). With the
responder down (or the classifier), that event waits, and so would the customer. So every
``DMDESK_DECISION_LATE_SECONDS / 2`` the api looks at the two upstream durables (their
consumer info: nothing else when nothing is late). When the oldest message one of them has
not acknowledged is older than the bound and the durable is stalled (its service took and
acknowledged nothing since the previous look: stopped, or wedged), the api reads that
durable's subject from its ack floor with a throw-away consumer and projects what it finds
that is older than the bound:
``dm.classified`` as a classified DM (``project_classified``: in the queue, no team yet),
``dm.inbound.*`` as the message alone (``project_inbound``). The decision, when it comes,
completes the DM through ``project_routed``, which stores nothing twice.

Messages between the ack floor and the oldest unacknowledged one may have been decided
already (acks arrive out of order): projecting them again changes nothing.

A stage that is only behind (a spike: it takes and acknowledges messages, just later than
the bound) is left alone: projecting its DMs early would double the api's work exactly when
it has the least to spare, and the decisions that follow within seconds queue them anyway.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from services.api import projector
from services.api.metrics import ApiMetrics
from services.api.writer import ProjectionWriter, Work
from shared import streams
from shared.events import ClassifiedMessage, InboundMessage, utcnow
from shared.settings import Settings

logger = logging.getLogger("dmdesk.api.late")
BATCH = 256


@dataclass(frozen=True)
class Upstream:
    """A durable whose backlog delays decisions, and how its messages are projected early."""

    consumer: streams.Consumer
    schema: type[BaseModel]
    project: Callable[[Session, BaseModel], object]


def _classified(session: Session, event: BaseModel) -> object:
    assert isinstance(event, ClassifiedMessage)
    projector.project_classified(session, event)
    return None


def _inbound(session: Session, event: BaseModel) -> object:
    assert isinstance(event, InboundMessage)
    if event.is_echo:  # v1 streams carried echoes here: they have their own consumer now
        return None
    return projector.project_inbound(session, event)


UPSTREAMS = (
    Upstream(streams.RESPONDER, ClassifiedMessage, _classified),
    Upstream(streams.CLASSIFIER, InboundMessage, _inbound),
)


class LateDecisions:
    """Projects the earlier event of DMs whose decision is late (see the module)."""

    def __init__(
        self,
        js: Callable[[], JetStreamContext],
        writer: ProjectionWriter,
        settings: Settings,
        metrics: ApiMetrics,
    ) -> None:
        self.js = js
        self.writer = writer
        self.settings = settings
        self.metrics = metrics
        self.late = timedelta(seconds=settings.decision_late_seconds)
        self._done: dict[str, int] = {}  # durable -> last stream sequence projected early
        # durable -> (ack floor, last delivered) stream sequences at the previous look
        self._seen: dict[str, tuple[int, int]] = {}

    async def run(self) -> None:
        """Look every half bound until cancelled."""
        while True:
            await asyncio.sleep(self.late.total_seconds() / 2)
            try:
                await self.check(utcnow())
            except Exception:
                logger.exception("late decisions not checked; retrying")

    async def check(self, now: datetime) -> int:
        """Project what is late as of ``now``; how many DMs were projected early."""
        projected = 0
        for upstream in UPSTREAMS:
            projected += await self._catch_up(upstream, now - self.late)
        return projected

    async def _catch_up(self, upstream: Upstream, before: datetime) -> int:
        js = self.js()
        stream = self.settings.stream_name
        durable = upstream.consumer.durable
        try:
            info = await js.consumer_info(stream, durable)
        except NotFoundError:
            # Its service never started: the durable is created now (as that service
            # would), so the DMs it has not read are found from here on.
            await streams.provision(js, self.settings, upstream.consumer)
            info = await js.consumer_info(stream, durable)
        floor = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
        delivered = info.delivered.stream_seq if info.delivered and info.delivered.stream_seq else 0
        moved = self._seen.get(durable) != (floor, delivered)
        self._seen[durable] = (floor, delivered)
        if not (info.num_pending or info.num_ack_pending) or moved:
            return 0  # nothing undecided, or its service is taking messages: not stalled
        start = max(floor, self._done.get(durable, 0)) + 1
        (subject,) = upstream.consumer.subjects  # the classifier's and the responder's: one each
        try:
            oldest = await js.get_msg(stream, seq=start, subject=subject, next=True)
        except NotFoundError:
            return 0
        if oldest.time is None or oldest.time >= before or oldest.seq is None:
            return 0  # the oldest undecided DM is still within the bound: nothing is late
        return await self._project_from(js, upstream, oldest.seq, before)

    async def _project_from(
        self, js: JetStreamContext, upstream: Upstream, start: int, before: datetime
    ) -> int:
        """Project ``upstream``'s messages from ``start`` stored before ``before``."""
        (subject,) = upstream.consumer.subjects
        subscription = await js.pull_subscribe(
            subject,
            stream=self.settings.stream_name,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
        durable = upstream.consumer.durable
        projected = 0
        try:
            while True:
                with contextlib.suppress(NatsTimeoutError, TimeoutError):
                    pulled = await subscription.fetch(BATCH, timeout=0.5)
                    batch = [msg for msg in pulled if msg.metadata.timestamp < before]
                    last = batch[-1].metadata.sequence.stream if batch else None
                    projected += await self._project(upstream, [msg.data for msg in batch])
                    if last is not None:
                        self._done[durable] = last
                    if len(batch) == len(pulled) == BATCH:
                        continue
                break
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        if projected:
            logger.warning(
                "decisions late: DMs projected before their decision",
                extra={"upstream": durable, "dms": projected},
            )
        return projected

    async def _project(self, upstream: Upstream, bodies: list[bytes]) -> int:
        events: list[BaseModel] = []
        for body in bodies:
            with contextlib.suppress(ValidationError):  # its own consumer dead-letters it
                events.append(upstream.schema.model_validate_json(body))
        if not events:
            return 0
        works: list[Work] = [_bound(upstream, event) for event in events]
        outcomes = await self.writer.apply_all(works)
        failed = [outcome for outcome in outcomes if outcome is not None]
        if failed:  # tried again at the next look (the cursor does not pass them)
            raise failed[0]
        self.metrics.late_projections.labels(upstream.consumer.durable).inc(len(events))
        return len(events)


def _bound(upstream: Upstream, event: BaseModel) -> Work:
    def work(session: Session) -> object:
        return upstream.project(session, event)

    return work
