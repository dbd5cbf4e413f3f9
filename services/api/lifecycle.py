"""The conversation lifecycle: its states, and what each move does to SLA clocks and flags.

No database and no web framework here: the projector, the agent actions and the
housekeeper load the conversation and its clocks, call one move of
:class:`Lifecycle`, and persist what it changed (the clocks it started come back
through the ``make`` callback). docs/architecture.md has the same rules as a
state table.

Clock times: a clock's ``elapsed_seconds`` is *business* time, in its policy's
calendar, without the time it was paused; its wall time is ``stopped_at -
started_at``. A resolution clock that a reopen continues counts both stretches.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from services.api.sla import add_working_time, working_time_between
from shared.business_hours import Calendar
from shared.states import ClockState, ConversationStatus, SlaMetric

OPEN = ConversationStatus.OPEN.value
PENDING = ConversationStatus.PENDING.value
WAITING = ConversationStatus.WAITING.value
SNOOZED = ConversationStatus.SNOOZED.value
RESOLVED = ConversationStatus.RESOLVED.value
RUNNING = ClockState.RUNNING.value
PAUSED = ClockState.PAUSED.value
ACTIVE = (RUNNING, PAUSED)
RESPONSE_METRICS = (SlaMetric.FIRST_RESPONSE.value, SlaMetric.NEXT_RESPONSE.value)
RESOLUTION = SlaMetric.RESOLUTION.value
# Statuses that pause every running clock unless a policy chooses otherwise: the
# customer has an answer (the bot's or an agent's), or an agent put it aside.
DEFAULT_PAUSES = frozenset({PENDING, WAITING, SNOOZED})


@dataclass(frozen=True)
class Policy:
    """The targets of one SLA policy, as the lifecycle needs them."""

    id: int
    first_response_seconds: int | None = None
    next_response_seconds: int | None = None
    resolution_seconds: int | None = None
    calendar: Calendar | None = None
    counts_bot: bool = False
    at_risk_share: float = 0.8
    pauses: frozenset[str] = DEFAULT_PAUSES

    def target(self, metric: str) -> timedelta | None:
        """The policy's target for ``metric`` (None: not measured)."""
        seconds = {
            SlaMetric.FIRST_RESPONSE.value: self.first_response_seconds,
            SlaMetric.NEXT_RESPONSE.value: self.next_response_seconds,
            RESOLUTION: self.resolution_seconds,
        }[metric]
        return None if seconds is None else timedelta(seconds=seconds)

    def counts(self, responder: str) -> bool:
        """Whether a reply by ``responder`` (``human`` or ``bot``) is a response."""
        return responder == "human" or self.counts_bot


class Clock(Protocol):
    """An SLA clock (the database row satisfies it)."""

    policy_id: int
    metric: str
    state: str
    started_at: datetime
    due_at: datetime
    at_risk_at: datetime | None
    at_risk_fired: bool
    paused_at: datetime | None
    stopped_at: datetime | None
    breached_at: datetime | None
    elapsed_seconds: float | None
    responder: str | None


class Conversation(Protocol):
    """The conversation's lifecycle fields (the database row satisfies it)."""

    status: str
    resolved_at: datetime | None
    snoozed_until: datetime | None
    nudged_at: datetime | None
    first_response_at: datetime | None
    last_customer_message_at: datetime | None
    awaiting_since: datetime | None
    status_changed_at: datetime | None


@dataclass(frozen=True)
class Activity:
    """A move worth a line in the conversation's activity log."""

    kind: str
    at: datetime
    detail: dict[str, str | None]


@dataclass(frozen=True)
class NewClock:
    """A clock to start: the caller stores it and hands it back (``Lifecycle.make``)."""

    policy_id: int
    metric: str
    started_at: datetime
    due_at: datetime
    at_risk_at: datetime


@dataclass
class Lifecycle:
    """One conversation, its clocks and the policies they follow, moved as events arrive.

    ``policy`` is the policy that applies to the conversation now (None: no targets);
    ``policies`` holds every policy a clock of the conversation belongs to.
    """

    conversation: Conversation
    clocks: list[Clock]
    policy: Policy | None
    policies: Mapping[int, Policy]
    make: Callable[[NewClock], Clock]
    stopped: list[Clock] = field(default_factory=list)
    # Clocks this move found past their deadline before the scheduler did: the metrics
    # count the breach (the scheduler counts the ones it fires).
    breached: list[Clock] = field(default_factory=list)
    activity: list[Activity] = field(default_factory=list)

    # -- queries -------------------------------------------------------------------

    def active(self, metrics: tuple[str, ...] | None = None) -> list[Clock]:
        """Running or paused clocks (of ``metrics``)."""
        return [
            c for c in self.clocks if c.state in ACTIVE and (metrics is None or c.metric in metrics)
        ]

    def due_at(self) -> datetime | None:
        """The nearest deadline of a running clock (the queue's order)."""
        return min((c.due_at for c in self.clocks if c.state == RUNNING), default=None)

    def _policy_of(self, clock: Clock) -> Policy:
        return self.policies[clock.policy_id]

    # -- moves ---------------------------------------------------------------------

    def customer_wrote(self, at: datetime) -> None:
        """A customer message: the conversation is open and the clocks it needs run.

        A message older than the conversation's last move (projected late: events
        arrive in any order) does not undo that move, but still starts the clocks it
        needs (paused, when the move pauses them); one older than the resolution it
        led to changes nothing.
        """
        conversation = self.conversation
        previous = conversation.last_customer_message_at
        conversation.last_customer_message_at = max(filter(None, (previous, at)))
        if conversation.resolved_at is not None and at <= conversation.resolved_at:
            return
        moved = conversation.status_changed_at
        if conversation.status == OPEN or moved is None or at > moved:
            self._set_status(OPEN, at)
            conversation.nudged_at = None
            conversation.snoozed_until = None
        conversation.awaiting_since = min(filter(None, (conversation.awaiting_since, at)))
        if not self.active(RESPONSE_METRICS):
            answered = conversation.first_response_at is not None
            metric = SlaMetric.NEXT_RESPONSE if answered else SlaMetric.FIRST_RESPONSE
            self._start(metric.value, at)
        self._continue_resolution(at)

    def responded(self, at: datetime, responder: str) -> None:
        """A reply reached the customer: it stops the response clocks whose policy counts it."""
        for clock in self.active(RESPONSE_METRICS):
            if self._policy_of(clock).counts(responder):
                clock.responder = responder
                self._stop(clock, at)
        counts = self.policy.counts(responder) if self.policy else responder == "human"
        if counts:
            conversation = self.conversation
            conversation.first_response_at = conversation.first_response_at or at
            conversation.awaiting_since = None

    def move(self, status: str, at: datetime, *, until: datetime | None = None) -> None:
        """Open, pending (the bot answered), waiting (on the customer) or snoozed (``until``)."""
        if status == RESOLVED:
            raise ValueError("resolve with Lifecycle.resolve")
        self._set_status(status, at)
        self.conversation.snoozed_until = until if status == SNOOZED else None

    def resolve(self, at: datetime, responder: str) -> None:
        """Resolved: response clocks are moot, the resolution clock stops.

        Without any response first, the resolution clock is ``unanswered``: neither
        met nor breached.
        """
        conversation = self.conversation
        if conversation.status == RESOLVED:
            return
        self._set_status(RESOLVED, at)
        conversation.resolved_at = at
        conversation.snoozed_until = None
        conversation.awaiting_since = None
        unanswered = conversation.first_response_at is None
        for clock in self.active():
            if clock.metric != RESOLUTION:
                self._stop(clock, at, state=ClockState.CANCELLED)
            elif unanswered:
                self._stop(clock, at, state=ClockState.UNANSWERED)
            else:
                clock.responder = responder
                self._stop(clock, at)

    def reopen(self, at: datetime) -> None:
        """An agent reopened the conversation: open, and its resolution measure continues."""
        self._set_status(OPEN, at)
        self.conversation.resolved_at = None
        self.conversation.snoozed_until = None
        self._continue_resolution(at)

    def retarget(self, policy: Policy | None, at: datetime) -> None:
        """Another policy applies now: active clocks follow it, keeping the time they have
        counted; those it has no target for (every one, without a policy) are cancelled.
        A breached clock stays breached."""
        self.policy = policy
        for clock in self.active():
            if policy is not None and clock.policy_id == policy.id:
                continue
            target = policy.target(clock.metric) if policy is not None else None
            if policy is None or target is None:
                self._stop(clock, at, state=ClockState.CANCELLED)
                continue
            anchor = clock.paused_at or at
            counted = self._counted(clock, anchor)
            due = _after(anchor, target - counted, policy.calendar)
            at_risk = _after(anchor, target * policy.at_risk_share - counted, policy.calendar)
            if due is None or at_risk is None:
                self._stop(clock, at, state=ClockState.CANCELLED)
                continue
            clock.policy_id = policy.id
            if clock.breached_at is None:
                clock.due_at = due
            if not clock.at_risk_fired:
                clock.at_risk_at = at_risk

    # -- the arithmetic --------------------------------------------------------------

    def _set_status(self, status: str, at: datetime) -> None:
        conversation = self.conversation
        if conversation.status != status:
            change: dict[str, str | None] = {"from": conversation.status, "to": status}
            self.activity.append(Activity("status", at, change))
            conversation.status = status
            conversation.status_changed_at = at
        for clock in self.active():
            pauses = status in self._policy_of(clock).pauses or status == RESOLVED
            if pauses and clock.state == RUNNING:
                clock.state, clock.paused_at = PAUSED, at
            elif not pauses and clock.state == PAUSED:
                self._resume(clock, at)

    def _start(self, metric: str, at: datetime) -> None:
        policy = self.policy
        target = policy.target(metric) if policy is not None else None
        if policy is None or target is None:
            return
        due = _after(at, target, policy.calendar)
        at_risk = _after(at, target * policy.at_risk_share, policy.calendar)
        if due is None or at_risk is None:
            return  # a calendar with no working time (refused today, maybe stored before)
        clock = self.make(
            NewClock(
                policy_id=policy.id, metric=metric, started_at=at, due_at=due, at_risk_at=at_risk
            )
        )
        self.clocks.append(clock)
        if self.conversation.status in policy.pauses:
            # Started by a message projected after the move that pauses it: it counted
            # until that move.
            moved = self.conversation.status_changed_at or at
            clock.state, clock.paused_at = PAUSED, max(at, moved)

    def _continue_resolution(self, at: datetime) -> None:
        """Resolution is measured once per conversation: after a resolve, its clock goes on."""
        if self.active((RESOLUTION,)):
            return
        ended = [c for c in self.clocks if c.metric == RESOLUTION and c.stopped_at is not None]
        last = max(ended, key=lambda c: c.stopped_at or c.started_at, default=None)
        if last is None or last.state == ClockState.CANCELLED.value:
            self._start(RESOLUTION, at)
            return
        assert last.stopped_at is not None
        last.state, last.paused_at = PAUSED, last.stopped_at
        last.stopped_at = last.elapsed_seconds = last.responder = None
        if last in self.stopped:
            self.stopped.remove(last)
        if self.conversation.status not in self._policy_of(last).pauses:
            self._resume(last, at)

    def _resume(self, clock: Clock, at: datetime) -> None:
        """A paused clock counts again; its deadline moves by the business time it was paused."""
        assert clock.paused_at is not None
        calendar = self._policy_of(clock).calendar
        paused = working_time_between(clock.paused_at, at, calendar)
        if clock.breached_at is None:
            clock.due_at = add_working_time(clock.due_at, paused, calendar)
        if clock.at_risk_at is not None and not clock.at_risk_fired:
            clock.at_risk_at = add_working_time(clock.at_risk_at, paused, calendar)
        clock.state, clock.paused_at = RUNNING, None

    def _counted(self, clock: Clock, end: datetime) -> timedelta:
        """Business time the clock has counted by ``end`` (paused time left out)."""
        policy = self._policy_of(clock)
        target = policy.target(clock.metric) or timedelta()
        calendar = policy.calendar
        if clock.breached_at is not None or end > clock.due_at:
            return target + working_time_between(clock.due_at, end, calendar)
        return target - working_time_between(end, clock.due_at, calendar)

    def _stop(self, clock: Clock, at: datetime, *, state: ClockState | None = None) -> None:
        end = clock.paused_at or at
        clock.elapsed_seconds = max(self._counted(clock, end), timedelta()).total_seconds()
        clock.stopped_at, clock.paused_at = at, None
        if state is not None:
            clock.state = state.value
        elif clock.breached_at is not None or end > clock.due_at:
            clock.state = ClockState.BREACHED.value
            if clock.breached_at is None:
                clock.breached_at = clock.due_at
                self.breached.append(clock)
        else:
            clock.state = ClockState.MET.value
        self.stopped.append(clock)


def _after(start: datetime, remaining: timedelta, calendar: Calendar | None) -> datetime | None:
    """``remaining`` business time after ``start``; ``start`` itself when none is left;
    None when the calendar has no working time to give."""
    if remaining <= timedelta():
        return start
    try:
        return add_working_time(start, remaining, calendar)
    except ValueError:
        return None


LiveStateName = Literal["none", "ok", "at_risk", "breached"]


@dataclass(frozen=True)
class LiveState:
    """Where a conversation stands against its SLA now, and the clock that says so."""

    state: LiveStateName
    clock: Clock | None


def live_state(clocks: list[Clock], now: datetime) -> LiveState:
    """The conversation's SLA state now: ``breached`` if an active clock is past its
    deadline, else ``at_risk`` if a running one is past its at-risk time, else ``ok``
    (``none`` without an active clock); the clock is the worst one, nearest deadline first."""
    active = sorted((c for c in clocks if c.state in ACTIVE), key=lambda c: c.due_at)
    breached = [
        c for c in active if c.breached_at is not None or (c.state == RUNNING and c.due_at <= now)
    ]
    at_risk = [
        c
        for c in active
        if c.state == RUNNING and (c.at_risk_fired or (c.at_risk_at and c.at_risk_at <= now))
    ]
    ranked: tuple[tuple[LiveStateName, list[Clock]], ...] = (
        ("breached", breached),
        ("at_risk", at_risk),
        ("ok", active),
    )
    for state, found in ranked:
        if found:
            return LiveState(state, found[0])
    return LiveState("none", None)


def classification_wins(category: str | None, rank: int, new_rank: int) -> bool:
    """Whether a message's classification becomes its conversation's: the first one does,
    then only one of a more urgent priority (lower ``rank``). A later, milder message
    ("Version 4.2", an e-mail address) does not rewrite what the conversation is about;
    the language is the first one known, likewise."""
    return category is None or new_rank < rank


def wall_seconds(clock: Clock) -> float | None:
    """A stopped clock's wall time, paused time included."""
    if clock.stopped_at is None:
        return None
    return (clock.stopped_at - clock.started_at).total_seconds()
