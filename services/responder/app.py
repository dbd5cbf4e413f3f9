"""The responder service: ``dm.classified`` in, one ``dm.routed.*`` per DM out (the DM,
its classification and the decision); ``dm.routed.reply`` and ``dm.outbound.requested``
in, the platform's Send API and ``dm.outbound.result`` out; ``dm.echo.*`` in (a human
replying elsewhere); ``dm.inbound.*`` in, contacts' profiles and attachments' copies out.

Per-conversation state and the live rule set live in NATS KV buckets (see
``state.py`` and ``live_rules.py``), so any number of replicas share them. Every
consumer is a :class:`~shared.bus.BatchConsumer`: one handler call per pull.
"""

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, TypeVar

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from services.responder.adapters import SendAdapter
from services.responder.answer_check import faq_index
from services.responder.attachments import AttachmentCopier
from services.responder.decide import apply_decision, decide
from services.responder.dry_run import serve_dry_runs
from services.responder.meta import GraphApi, GraphSendAdapter, make_adapter
from services.responder.profiles import (
    Known,
    ProfileCache,
    ProfileFetcher,
    ProfileFetchError,
    has_profile_to_fetch,
)
from services.responder.state import ConversationState, ConversationStates, state_key
from services.responder.window import RESPONSE, Refusal, messaging_policy
from shared import streams
from shared.bus import (
    BatchConsumer,
    EventBus,
    PublishMetrics,
    RetryLater,
    event_publisher,
    make_broker,
    nats_credentials,
    settle_failure,
    stage_router,
)
from shared.decisions import Decision
from shared.echoes import attribute_echo
from shared.events import (
    AttachmentCopied,
    Author,
    BotReply,
    Channel,
    ClassifiedMessage,
    ContactProfile,
    ConversationClosed,
    ConversationRef,
    Handoff,
    InboundMessage,
    OutboundRequest,
    OutboundResult,
    OutboundStatus,
    PlatformError,
    ProfileDue,
    RoutedMessage,
    RouteOutcome,
    utcnow,
)
from shared.live_rules import (
    STOP_SECONDS,
    LiveRules,
    default_releases,
    open_rules_bucket,
    seed_defaults,
)
from shared.ops import service_registry
from shared.rule_guards import promotional_match
from shared.rules import compile_rule_set, load_rule_set_document
from shared.service import ServiceSpec, serve, service_app
from shared.settings import Settings, get_settings
from shared.streams import conversation_state_bucket_config, open_key_value

STAGE = "responder"
logger = logging.getLogger("dmdesk.responder")

Publish = Callable[[RoutedMessage], Awaitable[None]]


class Routed(NamedTuple):
    """A DM routed: the event published and the decision, or (None, None) when the
    conversation's state counts the DM already (a redelivery after its state was written)."""

    routed: RoutedMessage | None
    decision: Decision | None


def bot_request_id(classified: ClassifiedMessage, position: int) -> str:
    """The request id of the bot's ``position``-th reply to a message (stable on redelivery)."""
    message = classified.message
    digest = hashlib.sha256(
        f"{message.channel.value}\x00{message.account_id}\x00{message.mid}".encode()
    ).hexdigest()[:32]
    return f"bot-{digest}-{position}"


def route_outcome(decision: Decision) -> RouteOutcome:
    """What a decision amounts to, for the api and the metrics."""
    if decision.handoff is not None:
        return RouteOutcome.HANDOFF
    if decision.close is not None:
        return RouteOutcome.CLOSED
    if decision.replies:
        return RouteOutcome.BOT
    return RouteOutcome.IGNORED


def routed_message(classified: ClassifiedMessage, decision: Decision) -> RoutedMessage:
    """The one event a decision publishes: the DM, its classification and what was decided."""
    message, classification = classified.message, classified.classification
    ref = message.conversation
    priority = decision.priority if decision.priority != classification.priority else None
    now = utcnow()
    replies: list[BotReply] = []
    requests: list[OutboundRequest] = []
    for position, reply in enumerate(decision.replies):
        request_id = bot_request_id(classified, position)
        replies.append(
            BotReply(
                conversation=ref,
                trigger_mid=message.mid,
                request_id=request_id,
                rule_id=reply.rule_id,
                text=reply.text,
                decided_at=now,
                tags=decision.tags,
                priority=priority,
                kind=reply.kind,
                language=reply.language,
                opt_out=decision.opt_out,
            )
        )
        requests.append(
            OutboundRequest(
                request_id=request_id,
                conversation=ref,
                text=reply.text,
                author=Author.BOT,
                in_reply_to=message.mid,
                requested_at=now,
                customer_last_message_at=message.platform_ts,
            )
        )
    handoff = None
    if (planned := decision.handoff) is not None:
        handoff = Handoff(
            conversation=ref,
            trigger_mid=message.mid,
            team=planned.team,
            priority=planned.priority,
            category=classification.category,
            reason=planned.reason,
            rule_id=planned.rule_id,
            decided_at=now,
            tags=decision.tags,
            language=decision.language,
            signals=planned.signals,
            faq_entry=decision.faq.entry_id if decision.faq else None,
            faq_score=decision.faq.score if decision.faq else None,
            faq_settles=decision.faq.settles if decision.faq else None,
            opt_out=decision.opt_out,
        )
    closed = None
    if decision.close is not None:
        closed = ConversationClosed(
            conversation=ref,
            trigger_mid=message.mid,
            reason=decision.close.reason,
            rule_id=decision.close.rule_id,
            category=classification.category,
            tags=decision.tags,
            decided_at=now,
        )
    return RoutedMessage(
        message=message,
        classification=classification,
        classified_at=classified.classified_at,
        outcome=route_outcome(decision),
        decided_at=now,
        handoff=handoff,
        replies=replies,
        requests=requests,
        closed=closed,
    )


async def publish_nowhere(_routed: RoutedMessage) -> None:
    """For callers that only want the decision (tests, tools)."""


class ResponderRuntime:
    """What the handlers share: the KV buckets, the live rules, the FAQ and the adapter."""

    def __init__(self, settings: Settings, adapter: SendAdapter) -> None:
        self.settings = settings
        self.adapter = adapter
        self.faq = faq_index(settings.faq_path, settings.faq_examples_path, settings.cache_dir)
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
        # The packaged defaults (not an operator's DMDESK_RULES_PATH) upgrade their own.
        releases = default_releases() if self.settings.rules_path is None else ()
        await seed_defaults(rules_kv, self.defaults, releases)
        self._states = ConversationStates(state_kv)
        profiles_kv = await streams.open_key_value(
            js, streams.profiles_bucket_config(self.settings)
        )
        self._profiles = ProfileCache(profiles_kv, self.settings)
        self._fetcher = ProfileFetcher(self.graph, self._profiles, self.settings)
        store = await streams.bind_object_store(js, streams.attachments_store_config(self.settings))
        self._copier = AttachmentCopier(self.graph.http, store, self.settings)
        self._rules = LiveRules(rules_kv, self.initial)
        await self._rules.refresh()
        self._rules.start()
        await serve_dry_runs(
            self._client, lambda: self.rules.current, self.faq, self.settings.default_team
        )

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

    async def handle(
        self, classified: ClassifiedMessage, publish: Publish = publish_nowhere
    ) -> Routed:
        """:meth:`route` for one DM; raises what routing it raised."""
        [outcome] = await self.route([classified], publish)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def route(
        self, pull: Sequence[ClassifiedMessage], publish: Publish
    ) -> list[Routed | Exception]:
        """Decide on each DM of a pull, publish its decision, then record it in its
        conversation's state; each DM's outcome, in order (an exception for one that
        failed: nothing of it is recorded, it is to be redelivered).

        The states are read at once, one per conversation; a conversation's DMs are
        decided one after the other on the state the previous ones left, their events
        published together, and the state written once for them all (compare-and-set).
        A DM the state counts already (redelivered after its state was written) is
        neither decided nor published again. See docs/architecture.md (delivery
        guarantees) for why the event is published before the state is written.
        """
        try:
            pull = await self.with_profiles(pull)
        except Exception as error:  # the names help; they never hold a decision up
            logger.warning("profiles unreadable", extra={"error_type": type(error).__name__})
        by_conversation: dict[str, list[int]] = {}
        for index, classified in enumerate(pull):
            by_conversation.setdefault(state_key(classified.message.conversation), []).append(index)
        outcomes: list[Routed | Exception] = [Routed(None, None)] * len(pull)

        async def conversation(indices: list[int]) -> None:
            dms = [pull[i] for i in indices]
            for i, outcome in zip(
                indices, await self._route_conversation(dms, publish), strict=True
            ):
                outcomes[i] = outcome

        await asyncio.gather(*(conversation(indices) for indices in by_conversation.values()))
        return outcomes

    async def _route_conversation(
        self, dms: list[ClassifiedMessage], publish: Publish
    ) -> list[Routed | Exception]:
        ref = dms[0].message.conversation
        try:
            known = await self.states.entry(ref)
        except Exception as error:  # the state is unreadable now: each DM is redelivered
            return [error] * len(dms)
        working = known.fresh()
        outcomes: list[Routed | Exception] = []
        decided: list[tuple[int, ClassifiedMessage, Decision, RoutedMessage]] = []
        for classified in dms:
            mid = classified.message.mid
            if working.handled(mid):
                outcomes.append(Routed(None, None))
                continue
            decision = decide(
                classified,
                working,
                self.rules.current,
                self.faq,
                default_team=self.settings.default_team,
                now=utcnow(),
            )
            apply_decision(working, classified, decision)
            working.remember_handled(mid)
            routed = routed_message(classified, decision)
            decided.append((len(outcomes), classified, decision, routed))
            outcomes.append(Routed(routed, decision))
        published = await asyncio.gather(
            *(publish(routed) for *_, routed in decided), return_exceptions=True
        )
        kept: list[tuple[ClassifiedMessage, Decision]] = []
        for (position, classified, decision, _), result in zip(decided, published, strict=True):
            if isinstance(result, Exception):
                outcomes[position] = result
            elif isinstance(result, BaseException):  # cancelled: nothing is acked
                raise result
            else:
                kept.append((classified, decision))
        if not kept:
            return outcomes

        async def record(state: ConversationState) -> None:
            # Decided and published: whatever another replica wrote meanwhile, the state
            # now counts what the customer was told (the event cannot be taken back).
            for classified, decision in kept:
                if not state.handled(classified.message.mid):
                    apply_decision(state, classified, decision)
                    state.remember_handled(classified.message.mid)

        try:
            await self.states.change(ref, record, known=known)
        except Exception as error:  # redelivered: decided again, its event a duplicate
            for position, outcome in enumerate(outcomes):
                if isinstance(outcome, Routed) and outcome.routed is not None:
                    outcomes[position] = error
            return outcomes
        for _, decision in kept:
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
        return outcomes

    async def with_profiles(self, pull: Sequence[ClassifiedMessage]) -> list[ClassifiedMessage]:
        """The DMs with their contacts' names from the platform profiles, when there are.

        Read for the pull's contacts at once. A profile being fetched is waited for, a
        little (``DMDESK_PROFILE_WAIT_SECONDS`` after the DM was received, at most);
        without one a DM is decided as it is.
        """
        wait = timedelta(seconds=self.settings.profile_wait_seconds)
        wanted: dict[str, tuple[ConversationRef, datetime]] = {}
        for classified in pull:
            message = classified.message
            if has_profile_to_fetch(message):
                key = streams.contact_key(message.conversation)
                deadline = message.received_at + wait
                if key not in wanted or wanted[key][1] < deadline:
                    wanted[key] = (message.conversation, deadline)
        if not wanted:
            return list(pull)
        profiles = await self.profiles.profiles(wanted)
        named: list[ClassifiedMessage] = []
        for classified in pull:
            message = classified.message
            profile = (
                profiles.get(streams.contact_key(message.conversation))
                if has_profile_to_fetch(message)
                else None
            )
            if profile is None or profile.display_name is None:
                named.append(classified)
                continue
            contact = message.contact.model_copy(
                update={"name": profile.display_name, "first_name": profile.given_name}
            )
            named.append(
                classified.model_copy(
                    update={"message": message.model_copy(update={"contact": contact})}
                )
            )
        return named

    async def deliver(self, request: OutboundRequest) -> OutboundResult:
        """Send ``request`` unless a guard or the reply window refuses it; say how it ended.

        The state is read once; the claim and the outcome are written on the revision
        the previous step left (compare-and-set, re-read only on a conflict).
        """
        ref = request.conversation
        known = await self.states.entry(ref)
        state = known.state
        if (mid := state.sent.get(request.request_id)) is not None:
            return already_sent(request, mid)
        now = utcnow()
        if request.author == Author.AGENT:
            _, known = await self.states.change_entry(ref, _human_replied(now), known=known)
            state = known.state
        elif (reason := self._bot_refusal(request, state)) is not None:
            return refused(request, *reason)
        known_at = (state.last_customer_message_at, request.customer_last_message_at)
        last = max((at for at in known_at if at is not None), default=None)
        policy = (
            RESPONSE
            if ref.channel == Channel.GENERIC
            else messaging_policy(ref.channel, request.author, last, now)
        )
        if isinstance(policy, Refusal):
            return refused(request, policy.reason, policy.kind)
        # At most once: the Send API takes no idempotency key, so a redelivery must not
        # send again what an earlier delivery (maybe on a replica that died) began to send.
        # The claim looks at the take-over again: a human who wrote since the state was
        # read (another replica's write, retried on) still stops the bot's reply. (The
        # promotional check reads the text alone: checked once, above.)
        refusal = _no_refusal if request.author == Author.AGENT else _taken_over
        (sent_mid, earlier, reason), known = await self.states.change_entry(
            ref, _claim(request, now, refusal), known=known
        )
        if sent_mid is not None:
            return already_sent(request, sent_mid)
        if reason is not None:
            return refused(request, *reason)
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
            await self.states.change(ref, _sent(request.request_id, result.mid), known=known)
        else:
            await self.states.change(ref, _released(request.request_id), known=known)
        return result

    def _bot_refusal(
        self, request: OutboundRequest, state: ConversationState
    ) -> tuple[str, str] | None:
        if (reason := _taken_over(request, state)) is not None:
            return reason
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


SendGuard = Callable[[OutboundRequest, ConversationState], tuple[str, str] | None]
"""Why a request must not be sent on this state (reason, kind), or None."""


def _no_refusal(_request: OutboundRequest, _state: ConversationState) -> None:
    return None


def _taken_over(request: OutboundRequest, state: ConversationState) -> tuple[str, str] | None:
    """A person replied after the bot's reply was requested: the bot steps back."""
    agent_at = state.agent_replied_at
    if agent_at is not None and agent_at >= request.requested_at:
        return "a human has taken the conversation", "human_took_over"
    return None


def _claim(
    request: OutboundRequest, at: datetime, refusal: SendGuard
) -> Callable[
    [ConversationState], Awaitable[tuple[str | None, datetime | None, tuple[str, str] | None]]
]:
    """Claim sending ``request``: (its mid if already sent, when an earlier try began, why
    it must not be sent on the state it would be claimed on). A refused claim writes nothing."""

    async def apply(
        state: ConversationState,
    ) -> tuple[str | None, datetime | None, tuple[str, str] | None]:
        if (mid := state.sent.get(request.request_id)) is not None:
            return mid, None, None
        if (reason := refusal(request, state)) is not None:
            return None, None, reason
        return None, state.claim_send(request.request_id, at), None

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


@dataclass(frozen=True, slots=True)
class Wiring:
    """What the responder's consumers share."""

    runtime: ResponderRuntime
    settings: Settings
    registry: CollectorRegistry
    bus: EventBus
    settle: Callable[[Msg, Exception], Awaitable[None]]


T = TypeVar("T")


async def each_in_order(
    messages: list[Msg],
    parse: Callable[[Msg], T],
    key: Callable[[T], Hashable],
    handle: Callable[[T], Awaitable[None]],
    settle: Callable[[Msg, Exception], Awaitable[None]],
) -> None:
    """Handle a pull's messages one by one per ``key`` (a conversation, a contact), the
    keys concurrently; ack each after its handler, settle each failure alone."""
    groups: dict[Hashable, list[tuple[Msg, T]]] = {}
    for msg in messages:
        try:
            item = parse(msg)
        except Exception as error:
            await settle(msg, error)
            continue
        groups.setdefault(key(item), []).append((msg, item))

    async def run(group: list[tuple[Msg, T]]) -> None:
        for msg, item in group:
            try:
                await handle(item)
            except Exception as error:
                await settle(msg, error)
            else:
                await msg.ack()

    await asyncio.gather(*(run(group) for group in groups.values()))


def _profile_fetching(
    wiring: Wiring,
) -> tuple[Callable[[InboundMessage, Known], Awaitable[None]], BatchConsumer]:
    """The profile fetch for a DM (publish what it gave, or the fetch it queued) and
    the consumer of the queued fetches (``responder-profiles-due-v1``)."""
    runtime, settings, registry = wiring.runtime, wiring.settings, wiring.registry
    bus, settle = wiring.bus, wiring.settle
    profile_fetches = Counter(
        "dmdesk_profile_fetches_total",
        "Contact profile fetches by channel and result (fetched; deferred: queued until"
        " the page's rate limit allows; or why not: rate_limited, network, graph_error,"
        " no_token, no_name, bad_answer).",
        ["channel", "result"],
        registry=registry,
    )

    async def fetched(
        channel: str, fetching: Awaitable[ContactProfile | ProfileDue | None]
    ) -> None:
        """Publish what a fetch gave (then cache it), or the fetch it queued; count it."""
        try:
            profile = await fetching
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
        if isinstance(profile, ProfileDue):
            await bus.publish(streams.PROFILE_DUE_EVENT, profile)
            profile_fetches.labels(channel, "deferred").inc()
            return
        if profile is None:
            return
        await bus.publish(streams.CONTACT_PROFILE_EVENT, profile)
        await runtime.fetcher.remember(profile)
        profile_fetches.labels(channel, "fetched").inc()

    async def profile_of(message: InboundMessage, known: Known) -> None:
        """Fetch the profile of a DM's contact when one is due (or queue the fetch)."""
        await fetched(message.channel.value, runtime.fetcher.on_inbound(message, known))

    async def on_due(due: ProfileDue) -> None:
        await fetched(due.conversation.channel.value, runtime.fetcher.on_due(due))

    async def on_dues(messages: list[Msg]) -> None:
        """Queued fetches, each contact's in order, as fast as the rate limit allows."""
        await each_in_order(
            messages,
            lambda msg: ProfileDue.model_validate_json(msg.data),
            lambda due: streams.contact_key(due.conversation),
            on_due,
            settle,
        )

    return profile_of, BatchConsumer(
        streams.RESPONDER_PROFILES_DUE,
        settings,
        on_dues,
        schema=ProfileDue,
        title="fetch the profiles a full rate limit queued",
    )


def _contact_work(wiring: Wiring) -> tuple[BatchConsumer, BatchConsumer]:
    """Who wrote and what they sent: the profile fetcher and the attachment copier, on
    one durable (``responder-contacts-v2``), the pull's profile entries read at once;
    and the fetches a full rate limit queued (``responder-profiles-due-v1``)."""
    runtime, settings, registry = wiring.runtime, wiring.settings, wiring.registry
    bus, settle = wiring.bus, wiring.settle
    profile_of, dues = _profile_fetching(wiring)
    attachments_total = Counter(
        "dmdesk_attachments_total",
        "Inbound attachments by channel and outcome (stored, refused, failed).",
        ["channel", "state"],
        registry=registry,
    )

    async def attachments_of(message: InboundMessage) -> None:
        """Copy a DM's attachments into the object store; publish how each ended."""
        for copied in await runtime.copier.copy_all(message):
            await bus.publish(streams.ATTACHMENT_EVENT, copied)
            attachments_total.labels(message.channel.value, copied.state.value).inc()

    async def on_pull(messages: list[Msg]) -> None:
        """The pull's profile entries read at once; per contact, its DMs one by one."""
        parsed: list[Msg] = []
        inbound: dict[int, InboundMessage] = {}
        for msg in messages:
            try:
                inbound[id(msg)] = InboundMessage.model_validate_json(msg.data)
            except ValidationError as error:
                await settle(msg, error)
                continue
            parsed.append(msg)
        refs = {
            streams.contact_key(message.conversation): message.conversation
            for message in inbound.values()
            if profile_wanted(message)
        }
        try:
            known = await runtime.profiles.read_all(refs) if refs else {}
        except Exception as error:  # each DM reads its own below (and fails alone)
            logger.warning("profiles unreadable", extra={"error_type": type(error).__name__})
            known = {}

        async def handle(message: InboundMessage) -> None:
            key = streams.contact_key(message.conversation)
            if key in known:
                # Read once for the pull: later DMs of the contact read it afresh.
                await profile_of(message, known.pop(key))
            elif profile_wanted(message):
                await profile_of(message, await runtime.profiles.read(message.conversation))
            if message.attachments:
                await attachments_of(message)

        await each_in_order(
            parsed,
            lambda msg: inbound[id(msg)],
            lambda message: streams.contact_key(message.conversation),
            handle,
            settle,
        )

    return (
        BatchConsumer(
            streams.RESPONDER_CONTACTS,
            settings,
            on_pull,
            schema=InboundMessage,
            title="fetch contacts' profiles and copy attachments",
        ),
        dues,
    )


def _sender(wiring: Wiring) -> BatchConsumer:
    """The bot's replies (``dm.routed.reply``) and agents' (``dm.outbound.requested``) to
    the platforms, on one durable (``sender-v2``); a conversation's in order."""
    runtime, settings, registry = wiring.runtime, wiring.settings, wiring.registry
    bus, settle = wiring.bus, wiring.settle
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

    async def send(request: OutboundRequest) -> None:
        """Check the guards and the reply window, send, and publish how it ended."""
        result = (await runtime.deliver(request)).model_copy(update={"author": request.author})
        await bus.publish(streams.OUTBOUND_RESULT_EVENT, result)
        if (
            result.error is not None
            and result.error.type
            and result.error.type.startswith("dmdesk.")
        ):
            refused_total.labels(result.error.type.removeprefix("dmdesk.")).inc()
        sent_total.labels(
            request.conversation.channel.value, request.author.value, result.status.value
        ).inc()

    async def send_all(requests: list[OutboundRequest]) -> None:
        for request in requests:  # a decision's replies go out in order
            await send(request)

    def outbound(msg: Msg) -> list[OutboundRequest]:
        """The requests a message asks to send: a routed DM's bot replies, or an agent's."""
        if msg.subject == streams.ROUTED_REPLY:
            return RoutedMessage.model_validate_json(msg.data).requests
        return [OutboundRequest.model_validate_json(msg.data)]

    async def on_outbound(messages: list[Msg]) -> None:
        await each_in_order(
            messages,
            outbound,
            lambda requests: state_key(requests[0].conversation) if requests else "",
            send_all,
            settle,
        )

    return BatchConsumer(
        streams.SENDER,
        settings,
        on_outbound,
        schema={streams.ROUTED_REPLY: RoutedMessage, streams.OUTBOUND_REQUESTED: OutboundRequest},
        title="send outbound messages",
    )


def profile_wanted(message: InboundMessage) -> bool:
    """Whether the contacts' consumer looks the DM's contact up (WhatsApp's to publish the
    webhook's profile once per refresh period; never echoes or generic DMs)."""
    return not message.is_echo and message.channel != Channel.GENERIC


def build(settings: Settings, adapter: SendAdapter | None = None) -> ServiceSpec:
    """Wire the responder's broker, handlers and metrics."""
    registry = service_registry()
    decisions_total = Counter(
        "dmdesk_responder_decisions_total",
        "Decisions on classified DMs, by kind (bot_reply, handoff, close, silent) and team.",
        ["kind", "team"],
        registry=registry,
    )
    failures_total = Counter(
        "dmdesk_responder_failures_total",
        "Messages a responder handler failed on (redelivered later, or dead-lettered), by"
        " durable consumer.",
        ["consumer"],
        registry=registry,
    )
    runtime = ResponderRuntime(settings, adapter or make_adapter(settings))
    broker = make_broker(settings, STAGE)
    router = stage_router(STAGE)
    # Declared for the AsyncAPI document; published through the EventBus.
    event_publisher(
        router,
        streams.ROUTED_REPLY,
        RoutedMessage,
        "A customer DM, its classification and the bot's decision, with replies to send.",
    )
    event_publisher(
        router,
        streams.ROUTED_QUIET,
        RoutedMessage,
        "A customer DM, its classification and the bot's decision, nothing to send"
        " (hand-off without acknowledgement, closed, ignored).",
    )
    event_publisher(router, streams.OUTBOUND_RESULT, OutboundResult, "How sending a reply ended.")
    event_publisher(
        router, streams.ATTACHMENT, AttachmentCopied, "An inbound attachment copied, or why not."
    )
    event_publisher(
        router, streams.CONTACT_PROFILE, ContactProfile, "A contact's profile from the platform."
    )
    event_publisher(
        router,
        streams.PROFILE_DUE,
        ProfileDue,
        "A new contact's profile fetch, queued until the page's rate limit allows.",
    )
    bus = EventBus(broker, settings, PublishMetrics.register(registry, STAGE))

    async def settle(msg: Msg, error: Exception) -> None:
        failures_total.labels(msg.metadata.consumer).inc()
        await settle_failure(msg, error, stage=STAGE, bus=bus)

    async def publish_routed(routed: RoutedMessage) -> None:
        await bus.publish(streams.ROUTED_EVENT, routed)

    async def on_classified(messages: list[Msg]) -> None:
        """Apply guards, rules and the FAQ to a pull of classified DMs; publish each
        decision, record it, then ack (each failure settled alone)."""
        valid: list[tuple[Msg, ClassifiedMessage]] = []
        for msg in messages:
            try:
                valid.append((msg, ClassifiedMessage.model_validate_json(msg.data)))
            except ValidationError as error:
                await settle(msg, error)
        if not valid:
            return
        outcomes = await runtime.route([classified for _, classified in valid], publish_routed)
        for (msg, _), outcome in zip(valid, outcomes, strict=True):
            if isinstance(outcome, Exception):
                await settle(msg, outcome)
                continue
            await msg.ack()
            if outcome.decision is not None:
                decisions_total.labels(*decision_kind(outcome.decision)).inc()

    async def on_echo(message: InboundMessage) -> None:
        """The page's own messages (echoes): a human replying outside dmdesk took over."""
        if message.is_echo and await runtime.page_wrote(message):
            logger.info("a human took over", extra={"channel": message.channel.value})

    async def on_echoes(messages: list[Msg]) -> None:
        await each_in_order(
            messages,
            lambda msg: InboundMessage.model_validate_json(msg.data),
            lambda message: state_key(message.conversation),
            on_echo,
            settle,
        )

    wiring = Wiring(runtime, settings, registry, bus, settle)
    broker.include_router(router)
    return ServiceSpec(
        name=STAGE,
        settings=settings,
        broker=broker,
        registry=registry,
        batch_consumers=(
            BatchConsumer(
                streams.RESPONDER,
                settings,
                on_classified,
                schema=ClassifiedMessage,
                title="route classified DMs",
            ),
            BatchConsumer(
                streams.RESPONDER_ECHOES,
                settings,
                on_echoes,
                schema=InboundMessage,
                title="notice humans replying elsewhere",
            ),
            *_contact_work(wiring),
            _sender(wiring),
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
