"""The responder service: ``dm.classified`` in, ``dm.handoff`` / ``dm.reply.bot`` /
``dm.closed`` out; ``dm.outbound.requested`` in, the platform's Send API and
``dm.outbound.result`` out.

Per-conversation state and the live rule set live in NATS KV buckets (see
``state.py`` and ``live_rules.py``), so any number of replicas share them.
"""

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import nats
import nats.errors
from faststream.nats import NatsRouter
from nats.aio.client import Client as NatsClient
from prometheus_client import CollectorRegistry, Counter

from services.responder.adapters import SendAdapter
from services.responder.attachments import AttachmentCopier
from services.responder.decide import Decision, apply_decision, decide
from services.responder.faq import FaqIndex, load_knowledge_base
from services.responder.guards import promotional_match
from services.responder.live_rules import (
    STOP_SECONDS,
    LiveRules,
    open_rules_bucket,
    read_document,
    seed_defaults,
)
from services.responder.meta import GraphApi, GraphSendAdapter, make_adapter
from services.responder.profiles import ProfileCache, ProfileFetcher, ProfileFetchError
from services.responder.rules import compile_rule_set, load_rule_set_document
from services.responder.state import ConversationState, ConversationStates, HandledMessage
from services.responder.window import RESPONSE, Refusal, messaging_policy
from shared import streams
from shared.bus import (
    RetryLater,
    durable_subscriber,
    event_publisher,
    make_broker,
    nats_credentials,
    publish_event,
    stage_router,
)
from shared.echoes import attribute_echo
from shared.events import (
    AttachmentCopied,
    Author,
    BotReply,
    Channel,
    ClassifiedMessage,
    ContactProfile,
    ConversationClosed,
    Handoff,
    InboundMessage,
    OutboundRequest,
    OutboundResult,
    OutboundStatus,
    PlatformError,
    utcnow,
)
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings
from shared.streams import conversation_state_bucket_config, open_key_value

STAGE = "responder"
logger = logging.getLogger("dmdesk.responder")

EVENT_TYPES: dict[str, type[Any]] = {
    streams.HANDOFF: Handoff,
    streams.BOT_REPLY: BotReply,
    streams.OUTBOUND_REQUESTED: OutboundRequest,
    streams.CLOSED: ConversationClosed,
}


def bot_request_id(classified: ClassifiedMessage, position: int) -> str:
    """The request id of the bot's ``position``-th reply to a message (stable on redelivery)."""
    message = classified.message
    digest = hashlib.sha256(
        f"{message.channel.value}\x00{message.account_id}\x00{message.mid}".encode()
    ).hexdigest()[:32]
    return f"bot-{digest}-{position}"


def decision_events(classified: ClassifiedMessage, decision: Decision) -> list[dict[str, Any]]:
    """The events a decision publishes, as outbox entries (subject, msg_id, event)."""
    message, classification = classified.message, classified.classification
    ref = message.conversation
    channel = ref.channel.value
    priority = decision.priority if decision.priority != classification.priority else None
    events: list[tuple[str, str, Any]] = []
    for position, reply in enumerate(decision.replies):
        request_id = bot_request_id(classified, position)
        events.append(
            (
                streams.BOT_REPLY,
                f"bot:{request_id}",
                BotReply(
                    conversation=ref,
                    trigger_mid=message.mid,
                    request_id=request_id,
                    rule_id=reply.rule_id,
                    text=reply.text,
                    tags=decision.tags,
                    priority=priority,
                    kind=reply.kind,
                    language=reply.language,
                    opt_out=decision.opt_out,
                ),
            )
        )
        events.append(
            (
                streams.OUTBOUND_REQUESTED,
                request_id,
                OutboundRequest(
                    request_id=request_id,
                    conversation=ref,
                    text=reply.text,
                    author=Author.BOT,
                    in_reply_to=message.mid,
                    customer_last_message_at=message.platform_ts,
                ),
            )
        )
    if decision.handoff is not None:
        handoff = decision.handoff
        events.append(
            (
                streams.HANDOFF,
                f"handoff:{channel}:{message.mid}",
                Handoff(
                    conversation=ref,
                    trigger_mid=message.mid,
                    team=handoff.team,
                    priority=handoff.priority,
                    category=classification.category,
                    reason=handoff.reason,
                    rule_id=handoff.rule_id,
                    tags=decision.tags,
                    language=decision.language,
                    signals=handoff.signals,
                    faq_entry=decision.faq.entry_id if decision.faq else None,
                    faq_score=decision.faq.score if decision.faq else None,
                    opt_out=decision.opt_out,
                ),
            )
        )
    if decision.close is not None:
        events.append(
            (
                streams.CLOSED,
                f"closed:{channel}:{message.mid}",
                ConversationClosed(
                    conversation=ref,
                    trigger_mid=message.mid,
                    reason=decision.close.reason,
                    rule_id=decision.close.rule_id,
                    category=classification.category,
                    tags=decision.tags,
                ),
            )
        )
    return [
        {"subject": subject, "msg_id": msg_id, "event": event.model_dump(mode="json")}
        for subject, msg_id, event in events
    ]


class ResponderRuntime:
    """What the handlers share: the KV buckets, the live rules, the FAQ and the adapter."""

    def __init__(self, settings: Settings, adapter: SendAdapter) -> None:
        self.settings = settings
        self.adapter = adapter
        self.faq = FaqIndex(load_knowledge_base(settings.faq_path))
        self.defaults = load_rule_set_document(settings.rules_path)
        # Fail at start-up, not at the first DM, when the defaults are broken.
        self.initial = compile_rule_set(self.defaults)
        # Longer than any one send with its retries: an older claim is from a dead replica.
        self.send_claim_ttl = timedelta(
            seconds=settings.send_max_attempts * settings.send_timeout_seconds
            + settings.send_backoff_seconds * 2**settings.send_max_attempts
        )
        self._client: NatsClient | None = None
        self._states: ConversationStates | None = None
        self._rules: LiveRules | None = None
        self._profiles: ProfileCache | None = None
        self._fetcher: ProfileFetcher | None = None
        self._copier: AttachmentCopier | None = None
        # One Graph API client: the Send API adapter's when it has one.
        self.graph = adapter.graph if isinstance(adapter, GraphSendAdapter) else GraphApi(settings)

    @property
    def states(self) -> ConversationStates:
        """The conversation-state bucket (after :meth:`start`)."""
        assert self._states is not None, "responder runtime not started"
        return self._states

    @property
    def rules(self) -> LiveRules:
        """The live rule set (after :meth:`start`)."""
        assert self._rules is not None, "responder runtime not started"
        return self._rules

    @property
    def profiles(self) -> ProfileCache:
        """The profile cache (after :meth:`start`)."""
        assert self._profiles is not None, "responder runtime not started"
        return self._profiles

    @property
    def fetcher(self) -> ProfileFetcher:
        """Fetches contacts' profiles (after :meth:`start`)."""
        assert self._fetcher is not None, "responder runtime not started"
        return self._fetcher

    @property
    def copier(self) -> AttachmentCopier:
        """Copies inbound attachments (after :meth:`start`)."""
        assert self._copier is not None, "responder runtime not started"
        return self._copier

    async def start(self) -> None:
        """Connect, open the buckets, seed the default rules, load and follow the live set."""
        if self._client is None:  # a start-up retried after JetStream was not ready yet
            self._client = await nats.connect(
                self.settings.nats_url.split(","),
                name="dmdesk-responder-kv",
                **nats_credentials(self.settings),
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
            )
        js = self._client.jetstream()
        state_kv = await open_key_value(js, conversation_state_bucket_config(self.settings))
        rules_kv = await open_rules_bucket(js, self.settings)
        document, _ = await read_document(rules_kv)
        if document is None:
            await seed_defaults(rules_kv, self.defaults)
        self._states = ConversationStates(state_kv)
        profiles_kv = await streams.open_key_value(
            js, streams.profiles_bucket_config(self.settings)
        )
        self._profiles = ProfileCache(profiles_kv, self.settings)
        self._fetcher = ProfileFetcher(self.graph, self._profiles, self.settings)
        store = await streams.bind_object_store(js, streams.attachments_store_config(self.settings))
        self._copier = AttachmentCopier(self.graph.client, store, self.settings)
        self._rules = LiveRules(rules_kv, self.initial)
        await self._rules.refresh()
        self._rules.start()

    async def stop(self) -> None:
        """Stop following the rules and close the connection and the adapter.

        No step waits on NATS for long: a connection that does not drain within
        STOP_SECONDS is closed (its KV writes are all awaited already).
        """
        if self._rules is not None:
            await self._rules.stop()
        if self._client is not None:
            try:
                async with asyncio.timeout(STOP_SECONDS):
                    await self._client.drain()
            except (TimeoutError, nats.errors.Error) as error:
                logger.warning(
                    "KV connection not drained", extra={"error_type": type(error).__name__}
                )
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STOP_SECONDS):
                        await self._client.close()
        await self.adapter.aclose()
        if self.graph is not getattr(self.adapter, "graph", None):
            await self.graph.aclose()

    async def page_wrote(self, echo: InboundMessage) -> bool:
        """A message the page sent: unless it is dmdesk's own, a human took over; True if so.

        Meta echoes every message a page sends, the bot's replies too; whose it is, is
        :func:`shared.echoes.attribute_echo`'s to say (the api asks the same). A send
        claimed by a replica that died (older than a send with its retries) is not in flight.
        """
        live_after = utcnow() - self.send_claim_ttl

        async def apply(state: ConversationState) -> bool:
            attribution = attribute_echo(
                app_id=echo.app_id,
                mid=echo.mid,
                our_app_ids=self.settings.meta_app_ids,
                recorded={mid: request_id for request_id, mid in state.sent.items()},
                sends_in_flight=state.sends_in_flight(live_after),
            )
            if attribution.ours:
                return False
            await _human_replied(echo.platform_ts)(state)
            return True

        return await self.states.change(echo.conversation, apply)

    async def handle(self, classified: ClassifiedMessage) -> tuple[HandledMessage, Decision | None]:
        """Decide on a DM once: the events to publish, and the decision if made just now.

        The decision and the state change are written together (optimistic
        concurrency); a redelivered DM finds its earlier events in the state, and
        writes nothing.
        """
        classified = await self.with_profile(classified)
        message = classified.message
        ref = message.conversation
        decided: list[Decision] = []

        async def decide_and_remember(state: ConversationState) -> HandledMessage:
            if (earlier := state.handled_message(message.mid)) is not None:
                decided.clear()
                return earlier
            decision = decide(
                classified,
                state,
                self.rules.current,
                self.faq,
                default_team=self.settings.default_team,
                now=utcnow(),
            )
            decided[:] = [decision]
            handled = HandledMessage(mid=message.mid, events=decision_events(classified, decision))
            apply_decision(state, classified, decision)
            state.remember(handled)
            return handled

        handled = await self.states.change(ref, decide_and_remember)
        decision = decided[0] if decided else None
        if decision is not None:
            # Per DM, so DEBUG: dmdesk_responder_decisions_total counts them by kind and team.
            kind, team = decision_kind(decision)
            logger.debug(
                "decided",
                extra={
                    "channel": ref.channel.value,
                    "kind": kind,
                    "team": team,
                    "rules": decision.matched_rules,
                    "replies": len(decision.replies),
                    "rules_revision": self.rules.current.revision,
                },
            )
        return handled, decision

    async def with_profile(self, classified: ClassifiedMessage) -> ClassifiedMessage:
        """The DM with its contact's name from the platform profile, when there is one.

        A profile being fetched is waited for, a little (``DMDESK_PROFILE_WAIT_SECONDS``
        after the DM was received, at most); without one the DM is decided as it is.
        """
        message = classified.message
        if message.is_echo or message.channel == Channel.GENERIC:
            return classified
        profile = await self.profiles.profile(
            message.conversation,
            received_at=message.received_at,
            wait=self.settings.profile_wait_seconds,
        )
        if profile is None or profile.display_name is None:
            return classified
        contact = message.contact.model_copy(
            update={"name": profile.display_name, "first_name": profile.given_name}
        )
        return classified.model_copy(
            update={"message": message.model_copy(update={"contact": contact})}
        )

    async def deliver(self, request: OutboundRequest) -> OutboundResult:
        """Send ``request`` unless a guard or the reply window refuses it; say how it ended."""
        ref = request.conversation
        state, _ = await self.states.read(ref)
        if (mid := state.sent.get(request.request_id)) is not None:
            return already_sent(request, mid)
        now = utcnow()
        if request.author == Author.AGENT:
            await self.states.change(ref, _human_replied(now))
        elif (reason := self._bot_refusal(request, state)) is not None:
            return refused(request, *reason)
        known = (state.last_customer_message_at, request.customer_last_message_at)
        last = max((at for at in known if at is not None), default=None)
        policy = (
            RESPONSE
            if ref.channel == Channel.GENERIC
            else messaging_policy(ref.channel, request.author, last, now)
        )
        if isinstance(policy, Refusal):
            return refused(request, policy.reason, policy.kind)
        # At most once: the Send API takes no idempotency key, so a redelivery must not
        # send again what an earlier delivery (maybe on a replica that died) began to send.
        sent_mid, earlier = await self.states.change(ref, _claim(request.request_id, now))
        if sent_mid is not None:
            return already_sent(request, sent_mid)
        if earlier is not None:
            if earlier > now - self.send_claim_ttl:
                raise RetryLater(f"request {request.request_id} is being sent since {earlier}")
            return refused(
                request,
                "sending was interrupted (the responder stopped mid-send): the message may"
                " or may not have reached the customer, so it is not sent again",
                "send_interrupted",
            )
        result = await self.adapter.send(request, policy)
        if result.status == OutboundStatus.SENT and result.mid is not None:
            await self.states.change(ref, _sent(request.request_id, result.mid))
        else:
            await self.states.change(ref, _released(request.request_id))
        return result

    def _bot_refusal(
        self, request: OutboundRequest, state: ConversationState
    ) -> tuple[str, str] | None:
        agent_at = state.agent_replied_at
        if agent_at is not None and agent_at >= request.requested_at:
            return "a human has taken the conversation", "human_took_over"
        promo = promotional_match(request.text, self.rules.current.promotional)
        if promo is not None:
            return f"promotional wording ({promo!r}) in a bot reply", "promotional"
        return None


def _human_replied(at: datetime) -> Callable[[ConversationState], Awaitable[None]]:
    async def apply(state: ConversationState) -> None:
        state.human_took_over = True
        state.human_took_over_at = state.human_took_over_at or at
        if state.agent_replied_at is None or at > state.agent_replied_at:
            state.agent_replied_at = at

    return apply


def _sent(request_id: str, mid: str) -> Callable[[ConversationState], Awaitable[None]]:
    async def apply(state: ConversationState) -> None:
        state.remember_sent(request_id, mid)

    return apply


def _claim(
    request_id: str, at: datetime
) -> Callable[[ConversationState], Awaitable[tuple[str | None, datetime | None]]]:
    """Claim sending ``request_id``: (its mid if already sent, when an earlier try began)."""

    async def apply(state: ConversationState) -> tuple[str | None, datetime | None]:
        if (mid := state.sent.get(request_id)) is not None:
            return mid, None
        return None, state.claim_send(request_id, at)

    return apply


def _released(request_id: str) -> Callable[[ConversationState], Awaitable[None]]:
    async def apply(state: ConversationState) -> None:
        state.release_send(request_id)

    return apply


def already_sent(request: OutboundRequest, mid: str) -> OutboundResult:
    """The result of a request an earlier delivery sent (as platform message ``mid``)."""
    return OutboundResult(
        request_id=request.request_id,
        conversation=request.conversation,
        status=OutboundStatus.SENT,
        mid=mid,
    )


def refused(request: OutboundRequest, reason: str, kind: str) -> OutboundResult:
    """A failed result for a request dmdesk refused to send (``kind``: which guard)."""
    return OutboundResult(
        request_id=request.request_id,
        conversation=request.conversation,
        status=OutboundStatus.FAILED,
        error=PlatformError(type=f"dmdesk.{kind}", message=reason, retryable=False),
    )


def decision_kind(decision: Decision) -> tuple[str, str]:
    """The metric labels of a decision: kind and team."""
    if decision.handoff is not None:
        return "handoff", decision.handoff.team
    if decision.close is not None:
        return "close", ""
    if decision.replies:
        return "bot_reply", ""
    return "silent", ""


def _subscribe_contact_work(
    router: NatsRouter, runtime: ResponderRuntime, settings: Settings, registry: CollectorRegistry
) -> None:
    """Who wrote and what they sent: the profile fetcher and the attachment copier."""
    profile_fetches = Counter(
        "dmdesk_profile_fetches_total",
        "Contact profile fetches by channel and result (fetched, or why not: rate_limited,"
        " network, graph_error, no_token, no_name, bad_answer).",
        ["channel", "result"],
        registry=registry,
    )
    attachment_out = event_publisher(
        router, streams.ATTACHMENT, AttachmentCopied, "An inbound attachment copied, or why not."
    )
    attachments_total = Counter(
        "dmdesk_attachments_total",
        "Inbound attachments by channel and outcome (stored, refused, failed).",
        ["channel", "state"],
        registry=registry,
    )
    profile_out = event_publisher(
        router, streams.CONTACT_PROFILE, ContactProfile, "A contact's profile from the platform."
    )

    @durable_subscriber(router, streams.PROFILES, settings, title="fetch contacts' profiles")
    async def on_inbound_profile(message: InboundMessage) -> None:
        """Fetch the profile of a DM's contact when one is due; publish it, then cache it."""
        channel = message.channel.value
        try:
            profile = await runtime.fetcher.on_inbound(message)
        except ProfileFetchError as failure:
            profile_fetches.labels(channel, failure.reason).inc()
            error = failure.error
            logger.warning(
                "profile not fetched",
                extra={
                    "channel": channel,
                    "reason": failure.reason,
                    "code": error.code if error else None,
                    "subcode": error.subcode if error else None,
                },
            )
            return
        if profile is None:
            return
        await publish_event(
            profile_out,
            profile,
            msg_id=f"profile:{streams.contact_key(message.conversation)}:{message.mid}",
            settings=settings,
        )
        await runtime.fetcher.remember(profile)
        profile_fetches.labels(channel, "fetched").inc()

    @durable_subscriber(router, streams.ATTACHMENTS, settings, title="copy inbound attachments")
    async def on_inbound_attachments(message: InboundMessage) -> None:
        """Copy a DM's attachments into the object store; publish how each ended."""
        for copied in await runtime.copier.copy_all(message):
            await publish_event(
                attachment_out,
                copied,
                msg_id=f"attachment:{message.channel.value}:{message.mid}:{copied.index}",
                settings=settings,
            )
            attachments_total.labels(message.channel.value, copied.state.value).inc()


def build(settings: Settings, adapter: SendAdapter | None = None) -> ServiceSpec:
    """Wire the responder's broker, handlers and metrics."""
    registry = CollectorRegistry()
    decisions_total = Counter(
        "dmdesk_responder_decisions_total",
        "Decisions on classified DMs, by kind (bot_reply, handoff, close, silent) and team.",
        ["kind", "team"],
        registry=registry,
    )
    sent_total = Counter(
        "dmdesk_outbound_total",
        "Outbound messages by channel, author and result.",
        ["channel", "author", "status"],
        registry=registry,
    )
    refused_total = Counter(
        "dmdesk_outbound_refused_total",
        "Outbound messages refused before the platform, by reason.",
        ["reason"],
        registry=registry,
    )
    runtime = ResponderRuntime(settings, adapter or make_adapter(settings))
    broker = make_broker(settings, STAGE, registry)
    router = stage_router(STAGE, settings)
    publishers = {
        streams.HANDOFF: event_publisher(
            router, streams.HANDOFF, Handoff, "A conversation handed to a human team."
        ),
        streams.BOT_REPLY: event_publisher(
            router, streams.BOT_REPLY, BotReply, "The bot answered a DM itself."
        ),
        streams.OUTBOUND_REQUESTED: event_publisher(
            router, streams.OUTBOUND_REQUESTED, OutboundRequest, "A bot reply to send."
        ),
        streams.CLOSED: event_publisher(
            router, streams.CLOSED, ConversationClosed, "The bot closed a conversation (spam)."
        ),
    }
    result_out = event_publisher(
        router, streams.OUTBOUND_RESULT, OutboundResult, "How sending a reply ended."
    )

    async def publish_outbox(handled: HandledMessage) -> None:
        for item in handled.events:
            subject = item["subject"]
            event = EVENT_TYPES[subject].model_validate(item["event"])
            await publish_event(
                publishers[subject], event, msg_id=item["msg_id"], settings=settings
            )

    @durable_subscriber(router, streams.RESPONDER, settings, title="route classified DMs")
    async def on_classified(classified: ClassifiedMessage) -> None:
        """Apply guards, rules and the FAQ to a classified DM; publish what was decided."""
        handled, decision = await runtime.handle(classified)
        await publish_outbox(handled)
        if decision is not None:
            kind, team = decision_kind(decision)
            decisions_total.labels(kind, team).inc()

    @durable_subscriber(
        router, streams.RESPONDER_ECHOES, settings, title="notice humans replying elsewhere"
    )
    async def on_inbound(message: InboundMessage) -> None:
        """The page's own messages (echoes): a human replying outside dmdesk took over."""
        if message.is_echo and await runtime.page_wrote(message):
            logger.info("a human took over", extra={"channel": message.channel.value})

    _subscribe_contact_work(router, runtime, settings, registry)

    @durable_subscriber(router, streams.SENDER, settings, title="send outbound messages")
    async def on_outbound(request: OutboundRequest) -> None:
        """Check the guards and the reply window, send, and publish how it ended."""
        result = (await runtime.deliver(request)).model_copy(update={"author": request.author})
        await publish_event(
            result_out, result, msg_id=f"result:{request.request_id}", settings=settings
        )
        if (
            result.error is not None
            and result.error.type
            and result.error.type.startswith("dmdesk.")
        ):
            refused_total.labels(result.error.type.removeprefix("dmdesk.")).inc()
        sent_total.labels(
            request.conversation.channel.value, request.author.value, result.status.value
        ).inc()

    broker.include_router(router)
    return ServiceSpec(
        name=STAGE,
        settings=settings,
        broker=broker,
        registry=registry,
        consumers=(
            streams.RESPONDER,
            streams.SENDER,
            streams.RESPONDER_ECHOES,
            streams.PROFILES,
            streams.ATTACHMENTS,
        ),
        on_startup=(runtime.start,),
        on_shutdown=(runtime.stop,),
        description="Answers DMs with rules and the FAQ, hands off, sends; see docs/responder.md.",
        state={"runtime": runtime},
    )


def main() -> None:
    """Run the responder service."""
    settings = get_settings()
    serve(service_app(build(settings)), STAGE, settings, settings.responder_port)
