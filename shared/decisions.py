"""What the bot decided, as data: the responder's decision about a DM, and the rules dry run
the api asks the responder for (request, answer, subject).

The api serves ``POST /v1/rules/dry-run`` without the responder's code: it sends the
request on :data:`DRY_RUN_SUBJECT` (core NATS request-reply, outside the ``dm.>`` stream)
and a responder replica answers with what it would decide on its live rule set and FAQ.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events import Category, Channel, CriticalSignal, Moment, Priority, PrivateInfoKind

DRY_RUN_SUBJECT = "dmdesk.rules.dry_run"
"""Requests for a dry run; the responder replicas answer in the queue group below."""
DRY_RUN_QUEUE = "responder-dry-run"

ReplyKind = Literal["template", "faq", "clarify", "handoff_ack", "opt_out", "opt_in"]


class PlannedReply(BaseModel):
    """A bot message to send."""

    rule_id: str
    text: str
    kind: ReplyKind = "template"
    template: str | None = None
    language: str


class PlannedHandoff(BaseModel):
    """A hand-off to a human team."""

    rule_id: str
    team: str
    priority: Priority
    reason: str
    signals: list[str] = Field(
        default_factory=list,
        description="What made the rule hand off: critical:legal, complaint...",
    )
    acknowledge: bool = True


class PlannedClose(BaseModel):
    """Closing the conversation without a reply."""

    rule_id: str
    reason: str


class FaqOutcome(BaseModel):
    """What the FAQ search found."""

    entry_id: str | None
    score: float
    answered: bool
    settles: float | None = Field(
        default=None,
        description="How likely the answer check found it that the entry's answer settles the "
        "message (asked only when the retrieval would answer; below the knowledge base's "
        "min_answer_probability a person answers instead).",
    )


class Decision(BaseModel):
    """Everything the bot decided about one message, and why (``trace``)."""

    replies: list[PlannedReply] = Field(default_factory=list)
    handoff: PlannedHandoff | None = None
    close: PlannedClose | None = None
    tags: list[str] = Field(default_factory=list)
    priority: Priority
    language: str
    matched_rules: list[str] = Field(default_factory=list)
    faq: FaqOutcome | None = None
    opt_out: Literal["out", "in"] | None = None
    new_session: bool = False
    silent_reason: str | None = Field(
        default=None, description="Why the bot stayed out of the conversation, when it did."
    )
    trace: list[str] = Field(default_factory=list)

    @property
    def publishes_nothing(self) -> bool:
        """A decision with no reply, hand-off or close (a human has it, or `nothing`)."""
        return not self.replies and self.handoff is None and self.close is None


class DryRunContact(BaseModel):
    """The customer in a dry run."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=512)
    tags: list[str] = Field(default_factory=list, max_length=50)
    vip: bool = False


class DryRunState(BaseModel):
    """The conversation so far, as the responder would remember it."""

    model_config = ConfigDict(extra="forbid")

    messages_seen: int = Field(default=0, ge=0)
    bot_turns: int = Field(default=0, ge=0)
    faq_misses: int = Field(default=0, ge=0)
    opted_out: bool = False
    human_took_over: bool = False
    last_customer_message_at: Moment | None = None


class DryRunRequest(BaseModel):
    """A DM to try against the rules: its text and how the classifier saw it."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000)
    channel: Channel = Channel.GENERIC
    language: str | None = Field(default=None, max_length=16, examples=["en"])
    category: Category = Category.INQUIRY
    priority: Priority = Priority.NORMAL
    confidence: float = Field(default=1.0, ge=0, le=1)
    spam: bool = False
    complaint: bool = Field(default=False, description="The classifier's complaint flag.")
    sentiment: float = Field(default=0.0, ge=-1, le=1)
    critical: list[CriticalSignal] = Field(
        default_factory=list, description="Critical signals the classifier found."
    )
    masked: list[PrivateInfoKind] = Field(
        default_factory=list, description="Kinds of private information ingest masked."
    )
    contact: DryRunContact = Field(default_factory=DryRunContact)
    at: Moment | None = Field(
        default=None, description="When it was sent (2000 to 2100); now if absent."
    )
    state: DryRunState = Field(default_factory=DryRunState)
    rules: dict[str, Any] | None = Field(
        default=None, description="A rule set to try instead of the live one (not stored)."
    )


class DryRunResult(BaseModel):
    """What the bot would do, and why."""

    revision: int = Field(description="Revision of the rule set used (0: `rules` of the request).")
    decision: Decision


class RuleProblem(BaseModel):
    """One thing wrong with a rule set."""

    rule_id: str | None = Field(description="The rule's id, when the problem is in a rule.")
    rule_index: int | None = Field(description="The rule's position in `rules` (0-based).")
    location: str = Field(description="Where in the rule (or the rule set), e.g. `then.0`.")
    reason: str


class DryRunAnswer(BaseModel):
    """The responder's answer to a dry-run request: a result, or why there is none."""

    result: DryRunResult | None = None
    refused: str | None = Field(default=None, description="The rule set of the request is bad.")
    problems: list[RuleProblem] = Field(default_factory=list)
    error_type: str | None = Field(
        default=None, description="The dry run failed in the responder (the exception's type)."
    )
