"""The thin stage logic of the skeleton: the keyword baseline and default routing."""

from datetime import UTC, datetime

import pytest

from services.classifier.keywords import classify
from services.responder.routing import route
from shared.events import (
    Category,
    Channel,
    ClassifiedMessage,
    Contact,
    InboundMessage,
    Priority,
)


@pytest.mark.parametrize(
    ("text", "category", "priority"),
    [
        ("Where is my order?", Category.ORDER_SHIPPING, Priority.NORMAL),
        ("This is the worst, I want to complain", Category.COMPLAINT, Priority.HIGH),
        ("My account was hacked", Category.ACCOUNT, Priority.URGENT),
        ("Thanks, love it", Category.FEEDBACK, Priority.LOW),
        ("Do you open on Sundays?", Category.INQUIRY, Priority.NORMAL),
        (None, Category.INQUIRY, Priority.NORMAL),
    ],
)
def test_placeholder_classifier(text: str | None, category: Category, priority: Priority) -> None:
    result = classify(text)
    assert (result.category, result.priority) == (category, priority)
    assert result.reasons


def test_every_dm_is_handed_to_the_default_team_with_its_priority() -> None:
    message = InboundMessage(
        mid="m-1",
        channel=Channel.WHATSAPP,
        account_id="waba",
        contact=Contact(platform_id="4915"),
        text="I want to complain",
        platform_ts=datetime.now(UTC),
    )
    handoff = route(
        ClassifiedMessage(message=message, classification=classify(message.text)), "care"
    )
    assert (handoff.team, handoff.priority, handoff.trigger_mid) == ("care", Priority.HIGH, "m-1")
    assert handoff.conversation == message.conversation
