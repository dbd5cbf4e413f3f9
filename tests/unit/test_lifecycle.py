"""The conversation lifecycle without a database: moves, clocks and flags (issue #16)."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from services.api.lifecycle import (
    Clock,
    Lifecycle,
    NewClock,
    Policy,
    classification_wins,
    live_state,
    wall_seconds,
)
from services.api.schemas import SlaClockOut
from shared.business_hours import Calendar

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)  # a Friday
NORMAL = Policy(id=1, first_response_seconds=60, next_response_seconds=120, resolution_seconds=600)
COUNTS_BOT = Policy(id=2, first_response_seconds=60, resolution_seconds=600, counts_bot=True)
NO_RESOLUTION = Policy(id=3, first_response_seconds=300)


@dataclass
class FakeClock:
    policy_id: int
    metric: str
    started_at: datetime
    due_at: datetime
    at_risk_at: datetime | None
    state: str = "running"
    at_risk_fired: bool = False
    paused_at: datetime | None = None
    stopped_at: datetime | None = None
    breached_at: datetime | None = None
    elapsed_seconds: float | None = None
    responder: str | None = None


@dataclass
class FakeConversation:
    status: str = "open"
    resolved_at: datetime | None = None
    snoozed_until: datetime | None = None
    nudged_at: datetime | None = None
    first_response_at: datetime | None = None
    last_customer_message_at: datetime | None = None
    awaiting_since: datetime | None = None
    status_changed_at: datetime | None = None


@dataclass
class Desk:
    """One conversation and its clocks, as the database would keep them."""

    policy: Policy | None = NORMAL
    conversation: FakeConversation = field(default_factory=FakeConversation)
    clocks: list[Clock] = field(default_factory=list)
    policies: dict[int, Policy] = field(
        default_factory=lambda: {p.id: p for p in (NORMAL, COUNTS_BOT, NO_RESOLUTION)}
    )

    def lifecycle(self) -> Lifecycle:
        def make(new: NewClock) -> Clock:
            return FakeClock(new.policy_id, new.metric, new.started_at, new.due_at, new.at_risk_at)

        return Lifecycle(self.conversation, self.clocks, self.policy, self.policies, make)

    def states(self) -> list[tuple[str, str]]:
        return [(clock.metric, clock.state) for clock in self.clocks]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_bot_answer_pauses_every_clock_finding_2() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    lifecycle = desk.lifecycle()
    lifecycle.responded(at(0.4), "bot")
    lifecycle.move("pending", at(0.4))
    assert desk.states() == [("first_response", "paused"), ("resolution", "paused")]
    assert lifecycle.due_at() is None, "nothing can breach while the customer has an answer"
    assert desk.conversation.first_response_at is None, "the policy does not count the bot"


def test_a_bot_answer_that_counts_meets_first_response_and_pauses_resolution_finding_2() -> None:
    desk = Desk(policy=COUNTS_BOT)
    desk.lifecycle().customer_wrote(at(0))
    lifecycle = desk.lifecycle()
    lifecycle.responded(at(0.4), "bot")
    lifecycle.move("pending", at(0.4))
    assert desk.states() == [("first_response", "met"), ("resolution", "paused")]
    assert desk.conversation.first_response_at == at(0.4)


def test_a_message_projected_after_the_bot_answer_starts_its_clocks_paused() -> None:
    desk = Desk()
    desk.lifecycle().move("pending", at(1))
    desk.lifecycle().customer_wrote(at(0))
    assert desk.conversation.status == "pending"
    assert desk.states() == [("first_response", "paused"), ("resolution", "paused")]
    assert all(clock.paused_at == at(1) for clock in desk.clocks), "counted until the answer"


def test_a_hand_off_after_a_bot_answer_resumes_the_clocks() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    desk.lifecycle().move("pending", at(10))
    lifecycle = desk.lifecycle()
    lifecycle.move("open", at(40))
    first = desk.clocks[0]
    assert (first.state, first.due_at) == ("running", at(60 + 30)), "paused for 30 s"


def test_writing_after_an_unanswered_resolve_starts_first_response_finding_4() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    desk.lifecycle().resolve(at(30), "human")
    desk.lifecycle().customer_wrote(at(100))
    running = [(c.metric, c.due_at) for c in desk.clocks if c.state == "running"]
    assert ("first_response", at(160)) in running


def test_writing_after_pending_starts_next_response_finding_4() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    lifecycle = desk.lifecycle()
    lifecycle.responded(at(20), "human")
    lifecycle.move("waiting", at(20))
    desk.lifecycle().customer_wrote(at(100))
    assert desk.conversation.status == "open"
    assert ("next_response", "running") in desk.states()


def test_resolving_without_a_reply_is_unanswered_not_met_finding_6() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    desk.lifecycle().resolve(at(30), "human")
    assert desk.states() == [("first_response", "cancelled"), ("resolution", "unanswered")]
    assert desk.clocks[1].responder is None


def test_a_reopen_continues_the_resolution_measure_finding_6() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    desk.lifecycle().responded(at(10), "human")
    for start in (0, 1000, 2000):
        if start:
            desk.lifecycle().customer_wrote(at(start))
            desk.lifecycle().responded(at(start + 10), "human")
        desk.lifecycle().resolve(at(start + 100), "human")
    resolution = [c for c in desk.clocks if c.metric == "resolution"]
    assert len(resolution) == 1
    assert (resolution[0].state, resolution[0].elapsed_seconds) == ("met", 300.0)


def test_an_agent_reopen_continues_resolution_without_a_response_clock() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    desk.lifecycle().responded(at(10), "human")
    desk.lifecycle().resolve(at(100), "human")
    desk.lifecycle().reopen(at(1000))
    resolution = desk.clocks[-1]
    assert (resolution.metric, resolution.state) == ("resolution", "running")
    assert resolution.due_at == at(600 + 900), "the 900 s it was resolved do not count"
    assert [c.metric for c in desk.clocks if c.state == "running"] == ["resolution"]


def test_a_policy_change_cancels_the_clocks_the_new_policy_does_not_define_finding_5() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    desk.lifecycle().retarget(NO_RESOLUTION, at(30))
    assert desk.states() == [("first_response", "running"), ("resolution", "cancelled")]
    first = desk.clocks[0]
    assert (first.policy_id, first.due_at) == (NO_RESOLUTION.id, at(300))


def test_elapsed_is_business_time_without_pauses_finding_7() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    desk.lifecycle().move("snoozed", at(10), until=at(30))
    desk.lifecycle().move("open", at(30))
    desk.lifecycle().responded(at(34.2), "human")
    first = desk.clocks[0]
    assert first.state == "met"
    assert first.elapsed_seconds is not None
    assert round(first.elapsed_seconds, 6) == 14.2, "34.2 s wall, 20 s snoozed"
    assert wall_seconds(first) == 34.2


def test_elapsed_counts_only_business_hours() -> None:
    weekdays = Calendar(
        timezone="UTC",
        hours={day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
        holidays=[date(2026, 12, 25)],
    )
    office = Policy(id=4, first_response_seconds=3600, calendar=weekdays)
    desk = Desk(policy=office, policies={4: office})
    desk.lifecycle().customer_wrote(T0 + timedelta(hours=7, minutes=30))  # Friday 16:30
    monday = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
    desk.lifecycle().responded(monday, "human")
    first = desk.clocks[0]
    assert (first.state, first.elapsed_seconds) == ("met", 45 * 60.0)


def test_a_late_reply_is_breached_with_its_elapsed_time() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    desk.lifecycle().responded(at(90), "human")
    first = desk.clocks[0]
    assert (first.state, first.breached_at, first.elapsed_seconds) == ("breached", at(60), 90.0)


def test_a_message_older_than_the_resolve_changes_nothing() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    desk.lifecycle().resolve(at(50), "bot")
    desk.lifecycle().customer_wrote(at(40))
    assert desk.conversation.status == "resolved"
    assert [c.state for c in desk.clocks if c.state == "running"] == []


def test_the_first_classification_wins_and_only_a_more_urgent_one_replaces_it_finding_9() -> None:
    assert classification_wins(None, 2, 3), "the first classification"
    assert not classification_wins("complaint", 1, 1), "'It is hugo.new@...': same priority"
    assert not classification_wins("complaint", 1, 3), "'Version 4.2': milder"
    assert classification_wins("inquiry", 2, 0), "an urgent message raises it"


def test_the_live_state_is_the_worst_active_clock_finding_10() -> None:
    desk = Desk()
    desk.lifecycle().customer_wrote(at(0))
    assert live_state(desk.clocks, at(10)).state == "ok"
    risky = live_state(desk.clocks, at(50))
    assert (risky.state, risky.clock and risky.clock.metric) == ("at_risk", "first_response")
    assert live_state(desk.clocks, at(61)).state == "breached"
    desk.lifecycle().move("snoozed", at(20), until=at(100))
    assert live_state(desk.clocks, at(61)).state == "ok", "paused: nothing can breach"
    desk.lifecycle().resolve(at(30), "human")
    assert live_state(desk.clocks, at(61)).state == "none"


def test_a_clock_says_its_wall_time_beside_its_business_time() -> None:

    started = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    clock = SlaClockOut(
        id=1,
        metric="first_response",
        policy_id=1,
        state="met",
        started_at=started,
        due_at=started + timedelta(hours=1),
        stopped_at=started + timedelta(hours=16),
        breached_at=None,
        elapsed_seconds=1800.0,
        responder="human",
    )
    assert clock.wall_seconds == 16 * 3600, "the night counts in wall time"
    assert clock.model_dump()["wall_seconds"] == 16 * 3600, "and is in the API's answer"
    assert clock.model_copy(update={"stopped_at": None}).wall_seconds is None
