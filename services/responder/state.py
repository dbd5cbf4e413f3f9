"""What the responder remembers per conversation, in a NATS KV bucket shared by replicas.

Writes use optimistic concurrency (``kv.update(..., last=revision)``): two replicas
handling messages of one conversation at once cannot lose each other's update;
the loser re-reads and applies its change again.
"""

import base64
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.events import ConversationRef

logger = logging.getLogger("dmdesk.responder.state")

KEEP_HANDLED = 50
KEEP_SENT = 50
UPDATE_ATTEMPTS = 20
T = TypeVar("T")


class ConversationState(BaseModel):
    """Per-conversation memory: bot turns, FAQ misses, opt-out, reply window, hand-over."""

    model_config = ConfigDict(extra="ignore")

    bot_turns: int = 0
    faq_misses: int = 0
    messages_seen: int = 0
    opted_out: bool = False
    human_took_over: bool = False
    human_took_over_at: datetime | None = None
    agent_replied_at: datetime | None = None
    last_customer_message_at: datetime | None = None
    handled_mids: list[str] = Field(
        default_factory=list,
        description="The customer messages this state counts already (the latest few).",
    )
    sent: dict[str, str] = Field(default_factory=dict, description="request_id -> platform mid.")
    sending: dict[str, datetime] = Field(
        default_factory=dict, description="request_id -> when a replica began to send it."
    )

    @model_validator(mode="before")
    @classmethod
    def _mids_of_the_outbox(cls, data: Any) -> Any:
        """A state written before 2 kept an outbox of decisions (``handled``): keep its mids."""
        if isinstance(data, dict) and "handled" in data and "handled_mids" not in data:
            outbox = data.get("handled") or []
            mids = [item["mid"] for item in outbox if isinstance(item, dict) and "mid" in item]
            return {**data, "handled_mids": mids}
        return data

    def handled(self, mid: str) -> bool:
        """Whether this state counts the customer message ``mid`` already."""
        return mid in self.handled_mids

    def remember_handled(self, mid: str) -> None:
        """Note that this state counts ``mid`` (and keep only the most recent few)."""
        self.handled_mids = [*self.handled_mids, mid][-KEEP_HANDLED:]

    def remember_sent(self, request_id: str, mid: str) -> None:
        """Keep the platform id of a sent request (and only the most recent few)."""
        items = [*self.sent.items(), (request_id, mid)][-KEEP_SENT:]
        self.sent = dict(items)
        self.sending.pop(request_id, None)

    def claim_send(self, request_id: str, at: datetime) -> datetime | None:
        """Note that sending ``request_id`` begins at ``at``; None, or when an earlier try began."""
        earlier = self.sending.get(request_id)
        if earlier is None:
            self.sending = dict([*self.sending.items(), (request_id, at)][-KEEP_SENT:])
        return earlier

    def sends_in_flight(self, claimed_after: datetime) -> bool:
        """Whether a send claimed after ``claimed_after`` has not ended yet."""
        return any(at > claimed_after for at in self.sending.values())

    def release_send(self, request_id: str) -> None:
        """Sending ``request_id`` ended without a message on the platform: it may be tried again."""
        self.sending.pop(request_id, None)

    def customer_wrote(self, at: datetime) -> None:
        """Move the reply window to ``at`` unless a later message already did."""
        if self.last_customer_message_at is None or at > self.last_customer_message_at:
            self.last_customer_message_at = at


def state_key(conversation: ConversationRef) -> str:
    """The bucket key of a conversation (KV keys allow few characters: base64url parts)."""

    def part(value: str) -> str:
        return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")

    account, contact = part(conversation.account_id), part(conversation.contact_id)
    return f"{conversation.channel.value}.{account}.{contact}"


class StateEntry(NamedTuple):
    """A conversation's state as stored: the state, its revision, its bytes."""

    state: ConversationState
    revision: int
    stored: bytes

    def fresh(self) -> ConversationState:
        """A copy of the state to change (parsed again: cheaper than a deep copy)."""
        if not self.stored:
            return self.state.model_copy(deep=True)
        return ConversationState.model_validate_json(self.stored)


class StateConflictError(RuntimeError):
    """Too many concurrent writers on one conversation's state."""


class ConversationStates:
    """Reads and atomically updates conversation states in a KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def read(self, conversation: ConversationRef) -> tuple[ConversationState, int]:
        """The state and its revision (0: never written)."""
        entry = await self.entry(conversation)
        return entry.state, entry.revision

    async def entry(self, conversation: ConversationRef) -> "StateEntry":
        """The state, its revision and its stored bytes (to tell whether a change changed it)."""
        try:
            found = await self.kv.get(state_key(conversation))
        except (KeyNotFoundError, KeyDeletedError):
            return StateEntry(ConversationState(), 0, b"")
        if not found.value:
            return StateEntry(ConversationState(), found.revision or 0, b"")
        state = ConversationState.model_validate_json(found.value)
        return StateEntry(state, found.revision or 0, found.value)

    async def write(
        self, conversation: ConversationRef, state: ConversationState, revision: int
    ) -> int:
        """Store ``state`` if nobody wrote since ``revision``; KeyWrongLastSequenceError if so."""
        return await self.kv.update(
            state_key(conversation), state.model_dump_json().encode(), last=revision
        )

    async def change(
        self,
        conversation: ConversationRef,
        apply: Callable[[ConversationState], Awaitable[T]],
        *,
        known: StateEntry | None = None,
    ) -> T:
        """Read, ``apply`` (which edits the state in place and returns a result), write.

        On a concurrent write the whole read-apply-write is retried with the fresh
        state, so ``apply`` must depend on nothing but the state it is given. A state
        ``apply`` left as it was is not written again (every echo of a bot reply, every
        redelivery of a message already decided on). ``known`` is an entry read
        already (a pull's states are read at once, a send's state before its claim):
        the first attempt starts from it instead of reading.
        """
        result, _ = await self.change_entry(conversation, apply, known=known)
        return result

    async def change_entry(
        self,
        conversation: ConversationRef,
        apply: Callable[[ConversationState], Awaitable[T]],
        *,
        known: StateEntry | None = None,
    ) -> tuple[T, StateEntry]:
        """:meth:`change`, also answering the entry it left (to change it again later
        without reading it first)."""
        for _ in range(UPDATE_ATTEMPTS):
            entry = known if known is not None else await self.entry(conversation)
            known = None
            state = entry.fresh()
            result = await apply(state)
            encoded = state.model_dump_json().encode()
            if encoded == entry.stored:
                return result, entry
            try:
                revision = await self.kv.update(
                    state_key(conversation), encoded, last=entry.revision
                )
            except KeyWrongLastSequenceError:
                logger.debug("conversation state changed concurrently; retrying")
                continue
            return result, StateEntry(state, revision, encoded)
        raise StateConflictError("conversation state kept changing; giving up for now")
