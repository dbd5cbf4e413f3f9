"""SLA clocks on conversations, stored: the lifecycle's moves applied to the database.

What each move does is decided in :mod:`services.api.lifecycle` (no database
there); this module loads a conversation's clocks and policies, runs the move,
and stores what it changed. A conversation's clocks follow the most specific
active policy that matches its priority (and, when the policy names them, its
category and channel).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session
from sqlmodel import col

from services.api import activity, containment
from services.api.lifecycle import (
    ACTIVE,
    DEFAULT_PAUSES,
    RESPONSE_METRICS,
    Clock,
    Lifecycle,
    NewClock,
    Policy,
)
from shared.business_hours import Calendar
from shared.db import transaction_cache
from shared.events import Priority
from shared.models import (
    NO_DEADLINE,
    ConversationRow,
    SlaClockRow,
    SlaPolicyRow,
    new_row,
)
from shared.states import ClockState, ConversationStatus

__all__ = [
    "ACTIVE",
    "RESPONSE_METRICS",
    "Moved",
    "apply",
    "clocks_of",
    "earliest_deadline",
    "policy_for",
    "retarget",
]

Move = Callable[[Lifecycle], None]
EARLIEST = "dmdesk.earliest_deadline"


@dataclass(frozen=True)
class Moved:
    """What a move did that the metrics count: clocks it stopped, breaches it found."""

    stopped: list[SlaClockRow]
    breached: list[SlaClockRow]
    contained: list[containment.Outcome] = field(default_factory=list)


def _policy(row: SlaPolicyRow) -> Policy:
    """The lifecycle's view of a stored policy."""
    assert row.id is not None
    return Policy(
        id=row.id,
        first_response_seconds=row.first_response_seconds,
        next_response_seconds=row.next_response_seconds,
        resolution_seconds=row.resolution_seconds,
        calendar=Calendar.model_validate(row.calendar) if row.calendar else None,
        counts_bot=row.counts_bot,
        at_risk_share=row.at_risk_share,
        pauses=DEFAULT_PAUSES if row.pausing_statuses is None else frozenset(row.pausing_statuses),
    )


def policy_for(session: Session, conversation: ConversationRow) -> SlaPolicyRow | None:
    """The first active policy in match order for the conversation's priority, category
    and channel.

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

    return min(matching, key=match_order, default=None)


def match_order(policy: SlaPolicyRow) -> tuple[int, int, int]:
    """Where the policy stands in the ordered list (first match wins): by priority, then
    the most specific first (category and channel, category, channel, neither). Two active
    policies never share a place: the api refuses the second (409)."""
    specificity = (2 if policy.category else 0) + (1 if policy.channel else 0)
    return Priority(policy.priority).rank, -specificity, policy.id or 0


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


def _set_due(conversation: ConversationRow, due: datetime | None) -> None:
    conversation.sla_due_at = due
    conversation.queue_due_at = due or NO_DEADLINE


def apply(
    session: Session, conversation: ConversationRow, move: Move, actor: str = "system"
) -> Moved:
    """Run one lifecycle ``move`` on the (locked) conversation and store what it changed,
    its activity by ``actor`` included; return what the metrics count."""
    assert conversation.id is not None
    conversation_id = conversation.id
    rows = _all_clocks(session, conversation_id)
    current = policy_for(session, conversation)
    policies = {
        policy_id: _policy(row)
        for policy_id in {clock.policy_id for clock in rows}
        if (row := session.get(SlaPolicyRow, policy_id)) is not None
    }
    if current is not None:
        policies[_policy(current).id] = _policy(current)

    def make(new: NewClock) -> Clock:
        row = new_row(
            SlaClockRow,
            conversation_id=conversation_id,
            policy_id=new.policy_id,
            metric=new.metric,
            started_at=new.started_at,
            due_at=new.due_at,
            at_risk_at=new.at_risk_at,
            team=conversation.team,
            assignee=conversation.assignee,
        )
        session.add(row)
        return row

    # The lifecycle appends the clocks it starts to ``rows``: the transaction's list stays whole.
    lifecycle = Lifecycle(
        conversation=conversation,
        clocks=rows,  # type: ignore[arg-type]  # SlaClockRow is a Clock
        policy=policies[current.id] if current is not None and current.id is not None else None,
        policies=policies,
        make=make,
    )
    move(lifecycle)
    _set_due(conversation, lifecycle.due_at())
    _note_deadlines(session, rows)
    for entry in lifecycle.activity:
        activity.record(session, conversation_id, entry.kind, actor, entry.at, **entry.detail)
    resolved = conversation.status == ConversationStatus.RESOLVED.value
    outcome = containment.settle(conversation, containment.CONTAINED) if resolved else None
    return Moved(
        stopped=[clock for clock in rows if any(clock is s for s in lifecycle.stopped)],
        breached=[clock for clock in rows if any(clock is s for s in lifecycle.breached)],
        contained=[outcome] if outcome is not None else [],
    )


def _note_deadlines(session: Session, rows: Sequence[SlaClockRow]) -> None:
    """Keep the earliest time the scheduler must look at among these running clocks."""
    times = [
        when
        for clock in rows
        if clock.state == ClockState.RUNNING.value
        for when in (
            None if clock.at_risk_fired else clock.at_risk_at,
            None if clock.breached_at is not None else clock.due_at,
        )
        if when is not None
    ]
    if times:
        noted: datetime | None = session.info.get(EARLIEST)
        session.info[EARLIEST] = min(times) if noted is None else min(noted, *times)


def earliest_deadline(session: Session) -> datetime | None:
    """The earliest at-risk time or deadline of a clock ``session``'s moves left running
    (and forgets it): the SLA scheduler needs to look again only if it is before its next
    look."""
    noted: datetime | None = session.info.pop(EARLIEST, None)
    return noted


def retarget(session: Session, conversation: ConversationRow, at: datetime) -> None:
    """Priority or category changed: active clocks follow the policy that now applies."""
    apply(session, conversation, lambda lifecycle: lifecycle.retarget(lifecycle.policy, at))
