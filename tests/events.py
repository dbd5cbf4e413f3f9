"""Events the integration tests put on the bus, built one way."""

from shared.events import Channel, Contact, InboundMessage, utcnow


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
