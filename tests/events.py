"""Events the integration tests put on the bus, built one way."""

from datetime import datetime

from shared.events import (
    Author,
    BotReply,
    Category,
    Channel,
    Classification,
    Contact,
    ConversationClosed,
    Handoff,
    InboundMessage,
    OutboundRequest,
    OutboundResult,
    OutboundStatus,
    Priority,
    RoutedMessage,
    RouteOutcome,
    utcnow,
)


def generic_inbound(
    mid: str, *, contact: str = "ana", text: str = "hello", echo: bool = False
) -> InboundMessage:
    """A DM from the generic channel to the page ``page``, sent just now."""
    return InboundMessage(
        mid=mid,
        channel=Channel.GENERIC,
        account_id="page",
        contact=Contact(platform_id=contact),
        text=text,
        is_echo=echo,
        platform_ts=utcnow(),
    )


def routed(
    message: InboundMessage,
    outcome: RouteOutcome,
    *,
    priority: Priority = Priority.NORMAL,
    at: datetime | None = None,
) -> RoutedMessage:
    """The responder's decision on ``message``, as it publishes it, made ``at`` (now)."""
    ref = message.conversation
    at = at or utcnow()
    decision = RoutedMessage(
        message=message,
        classification=Classification(
            category=Category.ORDER_SHIPPING,
            confidence=0.9,
            priority=priority,
            language="en",
            model_version="test",
        ),
        classified_at=at,
        decided_at=at,
        outcome=outcome,
    )
    if outcome == RouteOutcome.HANDOFF:
        return decision.model_copy(
            update={
                "handoff": Handoff(
                    conversation=ref,
                    trigger_mid=message.mid,
                    team="billing",
                    priority=priority,
                    reason="complaint",
                    rule_id="complaints",
                    signals=["complaint"],
                    decided_at=at,
                )
            }
        )
    if outcome == RouteOutcome.BOT:
        request_id = f"bot:{message.mid}"
        replies = [
            BotReply(
                conversation=ref,
                trigger_mid=message.mid,
                request_id=request_id,
                rule_id="where-is-my-order",
                text="It ships today.",
                decided_at=at,
            )
        ]
        requests = [
            OutboundRequest(
                request_id=request_id,
                conversation=ref,
                text="It ships today.",
                author=Author.BOT,
                requested_at=at,
            )
        ]
        return decision.model_copy(update={"replies": replies, "requests": requests})
    if outcome == RouteOutcome.CLOSED:
        closed = ConversationClosed(
            conversation=ref, trigger_mid=message.mid, reason="spam", tags=["spam"], decided_at=at
        )
        return decision.model_copy(update={"closed": closed})
    return decision


def sent_result(decision: RoutedMessage, mid: str, at: datetime | None = None) -> OutboundResult:
    """The Send API's answer to the bot's reply in ``decision``: sent, as platform ``mid``."""
    [request] = decision.requests
    return OutboundResult(
        request_id=request.request_id,
        conversation=decision.message.conversation,
        status=OutboundStatus.SENT,
        mid=mid,
        author=Author.BOT,
        finished_at=at or utcnow(),
    )
