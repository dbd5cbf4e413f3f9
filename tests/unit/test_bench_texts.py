"""`dmdesk bench` counts a DM as queued once a team has it: its texts must stay hand-offs.

When the default rules learned to answer a login question from the FAQ, a quarter of the
bench's "hand-off" DMs never reached a team and every run waited out its timeout, which
the figures then reported as a throughput of 39 DMs/s.
"""

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from dmdesk.bench import BOT_TEXTS, HANDOFF_TEXTS
from services.classifier.pipeline import Classifier
from services.responder.decide import decide
from services.responder.faq import FaqIndex, load_knowledge_base
from services.responder.state import ConversationState
from shared.events import Channel, ClassifiedMessage, Contact, InboundMessage
from shared.rules import (
    ROUND_THE_CLOCK,
    compile_rule_set,
    load_rule_set_document,
    with_calendar_hours,
)

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
Route = Callable[[str], tuple[str | None, list[str]]]


@pytest.fixture(scope="module")
def route() -> Route:
    classifier = Classifier()
    rules = compile_rule_set(with_calendar_hours(load_rule_set_document(), ROUND_THE_CLOCK))
    faq = FaqIndex(load_knowledge_base())

    def routed(text: str) -> tuple[str | None, list[str]]:
        message = InboundMessage(
            mid="m-1",
            channel=Channel.MESSENGER,
            account_id="page",
            contact=Contact(platform_id="psid"),
            text=text,
            platform_ts=NOW,
        )
        classified = ClassifiedMessage(message=message, classification=classifier.classify(text))
        decision = decide(
            classified, ConversationState(), rules, faq, default_team="support", now=NOW
        )
        team = decision.handoff.team if decision.handoff else None
        return team, [reply.kind for reply in decision.replies]

    return routed


@pytest.mark.parametrize("text", HANDOFF_TEXTS)
def test_every_handoff_text_reaches_a_team(route: Route, text: str) -> None:
    team, _replies = route(text.format(n=1234))
    assert team is not None, f"the default rules no longer hand {text!r} to a team"


@pytest.mark.parametrize("text", BOT_TEXTS)
def test_every_bot_text_is_answered_by_the_bot(route: Route, text: str) -> None:
    team, replies = route(text)
    assert (team, replies) == (None, ["faq"]), text
