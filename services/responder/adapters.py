"""Platform adapters: how an outbound request reaches the customer."""

import logging
from typing import Protocol

from services.responder.window import RESPONSE, MessagingPolicy
from shared.events import OutboundRequest, OutboundResult, OutboundStatus

logger = logging.getLogger("dmdesk.responder.send")


class SendAdapter(Protocol):
    """Sends one outbound request and says how it ended."""

    async def send(
        self, request: OutboundRequest, policy: MessagingPolicy = RESPONSE
    ) -> OutboundResult:
        """Send ``request`` through the platform (``policy``: messaging type and tag)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class LogAdapter:
    """Records what would be sent and reports it sent (the default in ``dmdesk up``)."""

    async def send(
        self, request: OutboundRequest, policy: MessagingPolicy = RESPONSE
    ) -> OutboundResult:
        """Log the request's ids (never its text) and report success."""
        logger.info(
            "outbound message (log adapter)",
            extra={
                "request_id": request.request_id,
                "channel": request.conversation.channel.value,
                "author": request.author.value,
                "messaging_type": policy.messaging_type,
                "tag": policy.tag,
            },
        )
        return OutboundResult(
            request_id=request.request_id,
            conversation=request.conversation,
            status=OutboundStatus.SENT,
            mid=f"log:{request.request_id}",
        )

    async def aclose(self) -> None:
        """Nothing to release."""
