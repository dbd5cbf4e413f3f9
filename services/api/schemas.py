"""What the REST API returns."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    StringConstraints,
    computed_field,
    field_validator,
    model_validator,
)

from services.api.lifecycle import LiveStateName
from shared.events import Category, Priority, PrivateInfoKind, utcnow


def _in_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("out of range in UTC") from exc


UtcTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]

"""A time with its offset (naive times are refused), converted to UTC."""

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
ActingAgent = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=128,
        description="The agent who acts: required, unless the API key is bound to an agent, who"
        " is then the only one it may name.",
    ),
]
MAX_TAGS = 50
"""Tags a conversation keeps at most."""
MAX_SNOOZE = timedelta(days=366)


class ContactOut(BaseModel):
    """The customer."""

    platform_id: str
    name: str | None
    tags: list[str]
    vip: bool
    followers: int | None
    bot_opted_out: bool = Field(
        default=False, description="The contact asked for no automated replies (STOP)."
    )


class SlaState(BaseModel):
    """Where the conversation stands against its SLA now, and the clock that says so."""

    state: LiveStateName = Field(
        description="breached: an active clock is past its deadline; at_risk: a running one is"
        " past its at-risk time; ok: clocks run in time; none: no clock is active."
    )
    metric: str | None = None
    due_at: datetime | None = None
    at_risk_at: datetime | None = None
    paused: bool = Field(default=False, description="The clock is paused (pending, snoozed...).")


class QueueItem(BaseModel):
    """A conversation waiting in a queue."""

    id: int
    channel: str
    account_id: str
    contact: ContactOut
    status: str
    team: str | None
    assignee: str | None
    priority: str
    priority_reason: str | None = Field(
        default=None, description="Why the contact raised the priority (VIP, followers...)."
    )
    category: str | None
    language: str | None
    is_request: bool
    tags: list[str]
    created_at: datetime
    snoozed_until: datetime | None
    resolved_at: datetime | None
    last_message_at: datetime | None
    last_customer_message_at: datetime | None
    sla_due_at: datetime | None
    sla_state: SlaState


class QueuePage(BaseModel):
    """One page of the queue; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[QueueItem]
    next_cursor: str | None = Field(description="Absent on the last page.")


class MessageOut(BaseModel):
    """A message in a conversation."""

    id: int
    mid: str
    direction: str
    author: str
    text: str | None
    attachments: list[dict[str, Any]]
    status: str
    error: str | None
    category: str | None
    priority: str | None
    language: str | None
    sentiment: float | None
    classification: dict[str, Any] | None
    reactions: dict[str, str]
    edit_count: int
    deleted_at: datetime | None
    platform_ts: datetime
    received_at: datetime


class BotHandoffOut(BaseModel):
    """Why the bot handed the conversation to people: the rule, the signals, the FAQ score."""

    reason: str
    rule_id: str | None
    signals: list[str] = Field(description="critical:legal, complaint, keyword:agent...")
    faq_entry: str | None = Field(description="The FAQ's best entry, when the FAQ ran.")
    faq_score: float | None = Field(description="Its match score (0..1).")
    faq_settles: float | None = Field(
        description="How likely the answer check found it that the entry's answer settles the"
        " message (0..1), when it was asked: under the knowledge base's min_answer_probability,"
        " the check refused the answer and a person takes it."
    )


class ConversationDetail(QueueItem):
    """A conversation with its messages (oldest first), SLA clocks and notes."""

    first_response_at: datetime | None
    bot_opted_out: bool = Field(
        default=False, description="The contact opted out of automated replies here."
    )
    bot_handoff: BotHandoffOut | None = Field(
        default=None, description="The bot's last hand-off and why; none if it never handed off."
    )
    messages: list[MessageOut]
    sla: list["SlaClockOut"]
    notes: list["NoteOut"]


class Problem(BaseModel):
    """An error: what went wrong, for a person to read."""

    detail: str


class FieldProblem(BaseModel):
    """One field of a request that was refused, and why (the input is not echoed)."""

    type: str
    loc: list[str | int]
    msg: str


class InputRefused(BaseModel):
    """A request whose fields did not validate (422)."""

    detail: list[FieldProblem]


KEYED: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing, unknown or revoked API key."},
    429: {
        "model": Problem,
        "description": "A rate limit is reached: retry after `Retry-After` seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}
"""The answers of every endpoint that needs an API key, besides its own."""


class SlaClockOut(BaseModel):
    """One SLA target measured on the conversation."""

    id: int
    metric: str
    policy_id: int
    state: str
    started_at: datetime
    due_at: datetime
    stopped_at: datetime | None
    breached_at: datetime | None
    elapsed_seconds: float | None = Field(
        description="Once stopped: business time in the policy's calendar, without paused"
        " time (what the target is measured against, the histograms and the summary use)."
    )
    responder: str | None

    @computed_field(  # type: ignore[prop-decorator]  # pydantic's documented pattern
        description="Once stopped: wall time from start to stop, paused time and closed hours"
        " included."
    )
    @property
    def wall_seconds(self) -> float | None:
        """``stopped_at - started_at``, in seconds."""
        if self.stopped_at is None:
            return None
        return (self.stopped_at - self.started_at).total_seconds()


class ActivityOut(BaseModel):
    """One thing that happened to a conversation."""

    at: datetime
    kind: str = Field(
        description="status, assigned, transferred, sla.at_risk, sla.breached, bot.answered,"
        " bot.handoff, bot.closed"
    )
    actor: str = Field(
        description="customer, bot, human, the agent an API key is bound to or else the"
        " key's name, an agent, round_robin, housekeeper, sla, system"
    )
    detail: dict[str, Any]


class NoteOut(BaseModel):
    """An internal note."""

    id: int
    author: str
    text: str
    created_at: datetime


class ClaimRequest(BaseModel):
    """Who claims, and optionally from which team's queue."""

    agent: ActingAgent = None
    team: str | None = Field(default=None, max_length=128)


class ReplyRequest(BaseModel):
    """An agent's reply to the customer."""

    agent: ActingAgent = None
    text: str = Field(min_length=1, max_length=2000)
    wait_for_customer: bool = Field(
        default=False, description="Then wait on the customer (SLA clocks pause)."
    )
    confirm_private_info: list[PrivateInfoKind] = Field(
        default_factory=list,
        max_length=len(PrivateInfoKind),
        description="Kinds of private information the agent means to send (card, iban...):"
        " a reply containing a kind that needs confirming and is not listed is refused (409).",
    )


class ReplyAccepted(BaseModel):
    """The reply is on its way; its delivery result shows on the conversation."""

    request_id: str
    private_info: list[str] = Field(
        default_factory=list,
        description="Kinds of private information in the reply (card, email, phone...): a "
        "warning to the agent; those that need confirming were confirmed.",
    )


class PrivateInfoRefused(BaseModel):
    """A reply holding private information that needs the agent's confirmation; not sent."""

    detail: str
    private_info: list[str] = Field(
        description="The kinds found that need confirming (never the values): send the reply"
        " again with them in `confirm_private_info`."
    )


class AssignRequest(BaseModel):
    """Give the conversation to a registered agent (null: unassign)."""

    assignee: str | None = Field(min_length=1, max_length=128)


class TransferRequest(BaseModel):
    """Move the conversation to another team's queue (the assignee is cleared)."""

    team: str = Field(min_length=1, max_length=128)


class TagsRequest(BaseModel):
    """Tags to add and remove."""

    add: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    remove: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)


class NoteRequest(BaseModel):
    """An internal note, never sent to the customer."""

    author: ActingAgent = None
    text: str = Field(min_length=1, max_length=10_000)


class SnoozeRequest(BaseModel):
    """Hide the conversation until a time; SLA clocks pause meanwhile."""

    until: UtcTime = Field(description="With its UTC offset; at most a year ahead.")

    @field_validator("until")
    @classmethod
    def _in_the_future(cls, value: datetime) -> datetime:
        now = utcnow()
        if value <= now:
            raise ValueError("must be in the future")
        if value > now + MAX_SNOOZE:
            raise ValueError("must be within a year")
        return value


class CorrectionRequest(BaseModel):
    """An agent's correction of the classification (category and/or priority)."""

    agent: ActingAgent = None
    category: Category | None = None
    priority: Priority | None = None

    @model_validator(mode="after")
    def _corrects_something(self) -> "CorrectionRequest":
        if self.category is None and self.priority is None:
            raise ValueError("give a category, a priority or both")
        return self
