"""The api's Prometheus metrics; names are fixed so dashboards can rely on them."""

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.api.clocks import Moved
from shared.db import as_utc
from shared.events import utcnow
from shared.models import ConversationRow, unresolved
from shared.states import ClockState, ConversationStatus, SlaMetric

logger = logging.getLogger("dmdesk.api.metrics")

RESPONSE_BUCKETS = (15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
RESOLUTION_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)
CONVERSATION_LABELS = ("channel", "priority", "category", "responder")
GAUGE_REFRESH_SECONDS = 5.0


@dataclass
class ApiMetrics:
    """Every metric the api exports, on one registry."""

    registry: CollectorRegistry
    first_response: Histogram = field(init=False)
    resolution: Histogram = field(init=False)
    breaches: Counter = field(init=False)
    at_risk: Counter = field(init=False)
    containment: Counter = field(init=False)
    bot_decisions: Counter = field(init=False)
    dead_letters: Counter = field(init=False)
    overrides: Counter = field(init=False)
    projected: Counter = field(init=False)
    projection_failures: Counter = field(init=False)
    queue_depth: Gauge = field(init=False)
    oldest_waiting: Gauge = field(init=False)
    next_deadline: Gauge = field(init=False)
    rate_limited: Counter = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.first_response = Histogram(
            "dmdesk_first_response_seconds",
            "Time from a customer's message to the first response.",
            CONVERSATION_LABELS,
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        self.resolution = Histogram(
            "dmdesk_resolution_seconds",
            "Time from a conversation's first message to its resolution.",
            CONVERSATION_LABELS,
            buckets=RESOLUTION_BUCKETS,
            registry=r,
        )
        self.breaches = Counter(
            "dmdesk_sla_breaches_total",
            "SLA targets breached.",
            ["sla", "priority", "channel"],
            registry=r,
        )
        self.at_risk = Counter(
            "dmdesk_sla_at_risk_total",
            "SLA targets at risk.",
            ["sla", "priority", "channel"],
            registry=r,
        )
        self.containment = Counter(
            "dmdesk_bot_containment_total",
            "Conversations the bot replied in, counted once each: contained (resolved or idle"
            " with no person's reply after the bot's) or escalated (a person replied).",
            ["outcome"],
            registry=r,
        )
        self.bot_decisions = Counter(
            "dmdesk_bot_decisions_total",
            "The bot's decisions on DMs, one per DM: answered, or handed_off to a team.",
            ["decision"],
            registry=r,
        )
        self.dead_letters = Counter(
            "dmdesk_dead_letters_total", "Messages a stage gave up on.", ["stage"], registry=r
        )
        self.overrides = Counter(
            "dmdesk_classifier_overrides_total",
            "Agents' corrections of the classifier, by the corrected category.",
            ["category"],
            registry=r,
        )
        self.projected = Counter(
            "dmdesk_projected_events_total",
            "Events written to the queue database, by event type.",
            ["event"],
            registry=r,
        )
        self.projection_failures = Counter(
            "dmdesk_projection_failures_total",
            "Events whose projection failed (redelivered later, or dead-lettered), by type.",
            ["event"],
            registry=r,
        )
        self.late_projections = Counter(
            "dmdesk_late_projections_total",
            "DMs put in the queue before their decision because it was late, by the"
            " upstream durable that was behind (responder-v1: from dm.classified,"
            " classifier-v1: from dm.inbound).",
            ["upstream"],
            registry=r,
        )
        self.conversation_changes = Counter(
            "dmdesk_conversation_changes_total",
            "Conversation states published on dm.conversation.changed (published, failed).",
            ["outcome"],
            registry=r,
        )
        self.rate_limited = Counter(
            "dmdesk_api_rate_limited_total",
            "Requests refused with 429, by reason (key, address, auth_failures).",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "dmdesk_queue_depth",
            "Conversations not resolved.",
            ["team", "priority", "status"],
            registry=r,
        )
        self.oldest_waiting = Gauge(
            "dmdesk_queue_oldest_waiting_seconds",
            "Longest wait in an open conversation since the first unanswered customer message.",
            ["team", "priority"],
            registry=r,
        )
        self.next_deadline = Gauge(
            "dmdesk_sla_next_deadline_seconds",
            "Time until the nearest SLA deadline (negative: overdue).",
            ["team", "priority"],
            registry=r,
        )

    def observe(self, conversation: ConversationRow, moved: Moved) -> None:
        """Record the counted (business) time of response and resolution clocks that just
        stopped met or breached (the same figure as their ``elapsed_seconds``), and the
        breaches the move found before the scheduler did, and the bot containment it
        decided."""
        for outcome in moved.contained:
            self.containment.labels(outcome).inc()
        for clock in moved.breached:
            self.breaches.labels(clock.metric, conversation.priority, conversation.channel).inc()
        for item in moved.stopped:
            if item.state not in (ClockState.MET.value, ClockState.BREACHED.value):
                continue
            labels = (
                conversation.channel,
                conversation.priority,
                conversation.category or "unknown",
                item.responder or "human",
            )
            histogram = {
                SlaMetric.FIRST_RESPONSE.value: self.first_response,
                SlaMetric.RESOLUTION.value: self.resolution,
            }.get(item.metric)
            if histogram is not None and item.elapsed_seconds is not None:
                histogram.labels(*labels).observe(item.elapsed_seconds)

    async def refresh_queue_gauges(self, session: AsyncSession, now: datetime) -> None:
        """Recompute the queue gauges with three grouped queries."""
        team = func.coalesce(col(ConversationRow.team), "unassigned")
        depth = await session.execute(
            select(team, col(ConversationRow.priority), col(ConversationRow.status), func.count())
            .where(unresolved())
            .group_by(team, col(ConversationRow.priority), col(ConversationRow.status))
        )
        self.queue_depth.clear()
        for team_name, priority, status, count in depth:
            self.queue_depth.labels(team_name, priority, status).set(count)
        # Waiting: open conversations whose customer has no response the policy counts
        # since ``awaiting_since`` (pending, waiting and snoozed ones are not waiting).
        waiting = await session.execute(
            select(
                team, col(ConversationRow.priority), func.min(col(ConversationRow.awaiting_since))
            )
            .where(
                col(ConversationRow.status) == ConversationStatus.OPEN.value,
                col(ConversationRow.awaiting_since).is_not(None),
            )
            .group_by(team, col(ConversationRow.priority))
        )
        self.oldest_waiting.clear()
        for team_name, priority, oldest in waiting:
            if oldest is not None:  # the WHERE excludes it; min() is typed optional
                self.oldest_waiting.labels(team_name, priority).set(
                    (now - as_utc(oldest)).total_seconds()
                )
        deadlines = await session.execute(
            select(team, col(ConversationRow.priority), func.min(col(ConversationRow.sla_due_at)))
            .where(unresolved(), col(ConversationRow.sla_due_at).is_not(None))
            .group_by(team, col(ConversationRow.priority))
        )
        self.next_deadline.clear()
        for team_name, priority, due in deadlines:
            if due is not None:
                self.next_deadline.labels(team_name, priority).set(
                    (as_utc(due) - now).total_seconds()
                )

    async def keep_gauges_fresh(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Refresh the queue gauges every few seconds, so a scrape costs no query."""
        while True:
            try:
                async with sessions() as session:
                    await self.refresh_queue_gauges(session, utcnow())
            except Exception:
                logger.exception("queue gauges not refreshed")
            await asyncio.sleep(GAUGE_REFRESH_SECONDS)
