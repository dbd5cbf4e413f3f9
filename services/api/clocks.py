"""SLA clocks on conversations: started, paused, resumed, stopped as events arrive.

A conversation's clocks follow the first active policy that matches its priority
(and, when the policy names them, its category and channel). A clock stopped
late stays ``breached``; a policy change never touches stopped clocks.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlmodel import col

from services.api.sla import add_working_time, working_time_between
from shared.business_hours import Calendar
from shared.db import transaction_cache
from shared.models import (
    NO_DEADLINE,
    ClockState,
    ConversationRow,
    SlaClockRow,
    SlaMetric,
    SlaPolicyRow,
)

ACTIVE = (ClockState.RUNNING.value, ClockState.PAUSED.value)
RESPONSE_METRICS = (SlaMetric.FIRST_RESPONSE.value, SlaMetric.NEXT_RESPONSE.value)


@dataclass(frozen=True)
class StoppedClock:
    """A response or resolution clock that just stopped, for the metrics."""

    clock: SlaClockRow
    wall_seconds: float


def _calendar(policy: SlaPolicyRow) -> Calendar | None:
    return Calendar.model_validate(policy.calendar) if policy.calendar else None


def _target(policy: SlaPolicyRow, metric: str) -> int | None:
    return {
        SlaMetric.FIRST_RESPONSE.value: policy.first_response_seconds,
        SlaMetric.NEXT_RESPONSE.value: policy.next_response_seconds,
        SlaMetric.RESOLUTION.value: policy.resolution_seconds,
    }[metric]


def policy_for(session: Session, conversation: ConversationRow) -> SlaPolicyRow | None:
    """The most specific active policy for the conversation's priority, category, channel.

    The active policies (a handful of rows) are read once per transaction: the api's
    projections apply a whole group of events in one.
    """
    known: dict[str, list[SlaPolicyRow]] = transaction_cache(session, "sla_policies")
    policies = known.get("active")
    if policies is None:
        rows = session.execute(select(SlaPolicyRow).where(col(SlaPolicyRow.archived_at).is_(None)))
        policies = known["active"] = list(rows.scalars())
    matching = [
        policy
        for policy in policies
        if policy.priority == conversation.priority
        and policy.category in (None, conversation.category)
        and policy.channel in (None, conversation.channel)
    ]

    def specificity(policy: SlaPolicyRow) -> tuple[int, int]:
        return (2 if policy.category else 0) + (1 if policy.channel else 0), policy.id or 0

    return max(matching, key=specificity, default=None)


# Built once (bound parameters).
_CLOCKS_OF = select(SlaClockRow).where(
    col(SlaClockRow.conversation_id) == bindparam("conversation_id")
)


def _all_clocks(session: Session, conversation_id: int) -> list[SlaClockRow]:
    """Every clock of the conversation, read once per transaction.

    The clocks of a conversation change only under its row lock, through these
    functions, which keep the list whole (``_start`` appends to it): a DM's events
    asked for them five times, each a query.
    """
    known: dict[int, list[SlaClockRow]] = transaction_cache(session, "sla_clocks")
    clocks = known.get(conversation_id)
    if clocks is None:
        found = session.execute(_CLOCKS_OF, {"conversation_id": conversation_id})
        clocks = known[conversation_id] = list(found.scalars())
    return clocks


def clocks_of(
    session: Session, conversation_id: int, states: Sequence[str] = ACTIVE
) -> list[SlaClockRow]:
    """The conversation's clocks in ``states``."""
    return [clock for clock in _all_clocks(session, conversation_id) if clock.state in states]


def _start(
    session: Session, conversation: ConversationRow, metric: SlaMetric, at: datetime
) -> SlaClockRow | None:
    """Start a ``metric`` clock under the policy that applies (None: no target for it)."""
    assert conversation.id is not None
    policy = policy_for(session, conversation)
    if policy is None or policy.id is None:
        return None
    target = _target(policy, metric.value)
    if target is None:
        return None
    calendar = _calendar(policy)
    clock = SlaClockRow(
        conversation_id=conversation.id,
        policy_id=policy.id,
        metric=metric.value,
        started_at=at,
        due_at=add_working_time(at, timedelta(seconds=target), calendar),
        at_risk_at=add_working_time(at, timedelta(seconds=target * policy.at_risk_share), calendar),
        team=conversation.team,
        assignee=conversation.assignee,
    )
    known = _all_clocks(session, conversation.id)  # read before the new clock is flushed
    session.add(clock)
    known.append(clock)
    return clock


def _set_due(conversation: ConversationRow, clocks: Sequence[SlaClockRow]) -> None:
    running = [clock.due_at for clock in clocks if clock.state == ClockState.RUNNING.value]
    conversation.sla_due_at = min(running, default=None)
    conversation.queue_due_at = conversation.sla_due_at or NO_DEADLINE


def refresh_due(session: Session, conversation: ConversationRow) -> None:
    """The conversation's ``sla_due_at``: its nearest running deadline (queue order)."""
    assert conversation.id is not None
    _set_due(conversation, clocks_of(session, conversation.id, (ClockState.RUNNING.value,)))


def customer_wrote(session: Session, conversation: ConversationRow, at: datetime) -> None:
    """A customer message: start the response clock due now, resume paused clocks."""
    assert conversation.id is not None
    everything = clocks_of(session, conversation.id, [state.value for state in ClockState])
    _resume(session, everything, at)
    active = [clock for clock in everything if clock.state in ACTIVE]
    started: list[SlaClockRow | None] = []
    if not any(clock.metric in RESPONSE_METRICS for clock in active):
        first_ever = not any(c.metric == SlaMetric.FIRST_RESPONSE.value for c in everything)
        if first_ever:
            started.append(_start(session, conversation, SlaMetric.FIRST_RESPONSE, at))
        elif conversation.first_response_at is not None:
            started.append(_start(session, conversation, SlaMetric.NEXT_RESPONSE, at))
    if not any(clock.metric == SlaMetric.RESOLUTION.value for clock in active):
        started.append(_start(session, conversation, SlaMetric.RESOLUTION, at))
    _set_due(conversation, [*everything, *filter(None, started)])


def _stop(session: Session, clock: SlaClockRow, at: datetime, *, state: ClockState) -> None:
    policy = session.get(SlaPolicyRow, clock.policy_id)
    assert policy is not None
    end = clock.paused_at or at
    clock.elapsed_seconds = working_time_between(
        clock.started_at, end, _calendar(policy)
    ).total_seconds()
    clock.stopped_at = at
    clock.paused_at = None
    if state == ClockState.CANCELLED:
        clock.state = state.value
    elif clock.breached_at is not None or at > clock.due_at:
        clock.state = ClockState.BREACHED.value
        clock.breached_at = clock.breached_at or clock.due_at
    else:
        clock.state = ClockState.MET.value


def responded(
    session: Session, conversation: ConversationRow, at: datetime, *, responder: str
) -> list[StoppedClock]:
    """A reply reached the customer: stop the response clocks it counts for."""
    assert conversation.id is not None
    stopped = []
    for clock in clocks_of(session, conversation.id):
        if clock.metric not in RESPONSE_METRICS:
            continue
        policy = session.get(SlaPolicyRow, clock.policy_id)
        if responder == "bot" and not (policy and policy.counts_bot):
            continue
        clock.responder = responder
        _stop(session, clock, at, state=ClockState.MET)
        stopped.append(StoppedClock(clock, (at - clock.started_at).total_seconds()))
    refresh_due(session, conversation)
    return stopped


def resolved(
    session: Session, conversation: ConversationRow, at: datetime, *, responder: str
) -> list[StoppedClock]:
    """The conversation is resolved: the resolution clock stops, response clocks are moot."""
    assert conversation.id is not None
    stopped = []
    for clock in clocks_of(session, conversation.id):
        if clock.metric == SlaMetric.RESOLUTION.value:
            clock.responder = responder
            _stop(session, clock, at, state=ClockState.MET)
            stopped.append(StoppedClock(clock, (at - clock.started_at).total_seconds()))
        else:
            _stop(session, clock, at, state=ClockState.CANCELLED)
    refresh_due(session, conversation)
    return stopped


def reopened(session: Session, conversation: ConversationRow, at: datetime) -> None:
    """An agent reopened the conversation: resolution is measured again."""
    assert conversation.id is not None
    active = clocks_of(session, conversation.id)
    if not any(clock.metric == SlaMetric.RESOLUTION.value for clock in active):
        _start(session, conversation, SlaMetric.RESOLUTION, at)
    refresh_due(session, conversation)


def pause(session: Session, conversation: ConversationRow, at: datetime) -> None:
    """Waiting on the customer, or snoozed: running clocks stop counting."""
    assert conversation.id is not None
    for clock in clocks_of(session, conversation.id, (ClockState.RUNNING.value,)):
        clock.state, clock.paused_at = ClockState.PAUSED.value, at
    refresh_due(session, conversation)


def resume(session: Session, conversation: ConversationRow, at: datetime) -> None:
    """Paused clocks count again; their deadlines move by the time they were paused."""
    assert conversation.id is not None
    _resume(session, clocks_of(session, conversation.id, (ClockState.PAUSED.value,)), at)
    refresh_due(session, conversation)


def _resume(session: Session, clocks: Sequence[SlaClockRow], at: datetime) -> None:
    for clock in clocks:
        if clock.state != ClockState.PAUSED.value:
            continue
        policy = session.get(SlaPolicyRow, clock.policy_id)
        assert policy is not None
        assert clock.paused_at is not None
        calendar = _calendar(policy)
        remaining = working_time_between(clock.paused_at, clock.due_at, calendar)
        clock.due_at = add_working_time(at, remaining, calendar)
        if clock.at_risk_at is not None and not clock.at_risk_fired:
            risk_left = working_time_between(clock.paused_at, clock.at_risk_at, calendar)
            clock.at_risk_at = add_working_time(at, risk_left, calendar)
        clock.state, clock.paused_at = ClockState.RUNNING.value, None


def retarget(session: Session, conversation: ConversationRow) -> None:
    """Priority or category changed: running clocks follow the policy that now applies."""
    assert conversation.id is not None
    policy = policy_for(session, conversation)
    if policy is None or policy.id is None:
        return
    active = clocks_of(session, conversation.id)
    for clock in active:
        target = _target(policy, clock.metric)
        if clock.policy_id == policy.id or clock.breached_at is not None or target is None:
            continue
        calendar = _calendar(policy)
        clock.policy_id = policy.id
        clock.due_at = add_working_time(clock.started_at, timedelta(seconds=target), calendar)
        clock.at_risk_at = add_working_time(
            clock.started_at, timedelta(seconds=target * policy.at_risk_share), calendar
        )
    _set_due(conversation, active)
