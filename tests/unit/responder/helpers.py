"""Builders for responder unit tests."""

from datetime import UTC, datetime
from typing import Any

from services.responder.answer_check import faq_index as packaged_faq_index
from services.responder.decide import decide
from services.responder.faq import FaqIndex
from services.responder.state import ConversationState
from shared.decisions import Decision
from shared.events import (
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    CriticalSignal,
    InboundMessage,
    Priority,
    PrivateInfoKind,
)
from shared.rules import CompiledRuleSet, compile_rule_set, load_rule_set_document

# A Wednesday at noon in London: inside the default office hours.
OFFICE_NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def default_rules() -> CompiledRuleSet:
    return compile_rule_set(load_rule_set_document())


def faq_index() -> FaqIndex:
    """The packaged FAQ with its answer check, as the responder builds it (once a process)."""
    return packaged_faq_index()


def classified(
    text: str,
    *,
    category: Category = Category.INQUIRY,
    priority: Priority = Priority.NORMAL,
    language: str | None = "en",
    confidence: float = 0.9,
    spam: bool = False,
    name: str | None = "Ana López",
    tags: list[str] | None = None,
    channel: Channel = Channel.MESSENGER,
    at: datetime = OFFICE_NOON,
    mid: str = "m-1",
    contact_id: str = "psid-1",
    complaint: bool = False,
    sentiment: float = 0.0,
    critical: list[CriticalSignal] | None = None,
    masked: list[PrivateInfoKind] | None = None,
) -> ClassifiedMessage:
    return ClassifiedMessage(
        message=InboundMessage(
            mid=mid,
            channel=channel,
            account_id="page-1",
            contact=Contact(platform_id=contact_id, name=name, tags=tags or []),
            text=text,
            masked=masked or [],
            platform_ts=at,
        ),
        classification=Classification(
            language=language,
            category=category,
            confidence=confidence,
            priority=priority,
            spam=spam,
            complaint=complaint,
            sentiment=sentiment,
            critical=critical or [],
            model_version="test",
        ),
    )


def run(
    message: ClassifiedMessage,
    rules: CompiledRuleSet | None = None,
    state: ConversationState | None = None,
    **kwargs: Any,
) -> Decision:
    return decide(
        message,
        state or ConversationState(),
        rules or default_rules(),
        faq_index(),
        default_team="support",
        now=kwargs.pop("now", message.message.platform_ts),
    )
