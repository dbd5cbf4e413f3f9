"""The responder service: ``dm.classified`` in, ``dm.handoff`` / ``dm.reply.bot`` out;
``dm.outbound.requested`` in, the platform's Send API and ``dm.outbound.result`` out."""

from prometheus_client import CollectorRegistry, Counter

from services.responder.adapters import LogAdapter, SendAdapter
from services.responder.routing import route
from shared import streams
from shared.bus import durable_subscriber, event_publisher, make_broker, publish_event, stage_router
from shared.events import BotReply, ClassifiedMessage, Handoff, OutboundRequest, OutboundResult
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings

STAGE = "responder"


def build(settings: Settings, adapter: SendAdapter | None = None) -> ServiceSpec:
    """Wire the responder's broker, handlers and metrics."""
    registry = CollectorRegistry()
    decisions_total = Counter(
        "dmdesk_responder_decisions_total",
        "Routing decisions, by kind and team.",
        ["kind", "team"],
        registry=registry,
    )
    sent_total = Counter(
        "dmdesk_outbound_total",
        "Outbound messages by channel, author and result.",
        ["channel", "author", "status"],
        registry=registry,
    )
    sender = adapter or LogAdapter()
    broker = make_broker(settings, STAGE, registry)
    router = stage_router(STAGE, settings)
    handoff_out = event_publisher(
        router, streams.HANDOFF, Handoff, "A conversation handed to a human team."
    )
    event_publisher(router, streams.BOT_REPLY, BotReply, "The bot answered a DM itself.")
    event_publisher(router, streams.OUTBOUND_REQUESTED, OutboundRequest, "A bot reply to send.")
    result_out = event_publisher(
        router, streams.OUTBOUND_RESULT, OutboundResult, "How sending a reply ended."
    )

    @durable_subscriber(router, streams.RESPONDER, settings, title="route classified DMs")
    async def on_classified(classified: ClassifiedMessage) -> None:
        """Apply the rules to a classified DM."""
        handoff = route(classified, settings.default_team)
        await publish_event(
            handoff_out,
            handoff,
            msg_id=f"handoff:{handoff.conversation.channel.value}:{handoff.trigger_mid}",
            settings=settings,
        )
        decisions_total.labels("handoff", handoff.team).inc()

    @durable_subscriber(router, streams.SENDER, settings, title="send outbound messages")
    async def on_outbound(request: OutboundRequest) -> None:
        """Send a reply through the platform and publish how it ended."""
        result = await sender.send(request)
        await publish_event(
            result_out,
            result,
            msg_id=f"result:{request.request_id}",
            settings=settings,
        )
        sent_total.labels(
            request.conversation.channel.value, request.author.value, result.status.value
        ).inc()

    broker.include_router(router)
    return ServiceSpec(
        name=STAGE,
        settings=settings,
        broker=broker,
        registry=registry,
        consumers=(streams.RESPONDER, streams.SENDER),
        description="Routes classified DMs and sends replies; see docs/architecture.md.",
    )


def main() -> None:
    """Run the responder service."""
    settings = get_settings()
    serve(service_app(build(settings)), STAGE, settings, settings.responder_port)
