"""The responder on a real JetStream: live rules in KV, shared conversation state, the flow."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient

from services.api.auth import Principal, authenticated
from services.api.rules_routes import rules_router
from services.responder import app as responder_app
from services.responder.adapters import LogAdapter
from services.responder.app import ResponderRuntime, Routed, build
from services.responder.state import StateEntry
from services.responder.window import RESPONSE, MessagingPolicy
from shared.bus import RetryLater
from shared.events import (
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    ConversationRef,
    DeadLetter,
    InboundMessage,
    OutboundRequest,
    OutboundResult,
    OutboundStatus,
    PlatformError,
    Priority,
    RoutedMessage,
    RouteOutcome,
    utcnow,
)
from shared.live_rules import (
    default_releases,
    document_digest,
    encode_document,
    open_rules_bucket,
    seed_defaults,
)
from shared.models import Scope
from shared.rules import load_rule_set_document
from shared.service import service_app
from shared.settings import Settings
from shared.streams import CLASSIFIED, MSG_ID_HEADER, RULES_KEY, provision
from tests.stack import eventually, stored


def dm(
    mid: str,
    text: str,
    *,
    contact: str = "ana",
    category: Category = Category.INQUIRY,
    priority: Priority = Priority.NORMAL,
    spam: bool = False,
) -> ClassifiedMessage:
    return ClassifiedMessage(
        message=InboundMessage(
            mid=mid,
            channel=Channel.GENERIC,
            account_id="page-1",
            contact=Contact(platform_id=contact, name="Ana López"),
            text=text,
            platform_ts=utcnow(),
        ),
        classification=Classification(
            language="en",
            category=category,
            confidence=0.9,
            priority=priority,
            spam=spam,
            model_version="test",
        ),
    )


def greeting_rules(text: str) -> dict[str, Any]:
    """A rule set that answers everything with ``text``."""
    return {
        "templates": {"greeting": {"en": text}},
        "rules": [{"id": "greet", "then": [{"reply": "greeting"}]}],
    }


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[NatsClient]:
    connection = await nats.connect(settings.nats_url)
    yield connection
    await connection.close()


@pytest.fixture
async def replicas(settings: Settings) -> AsyncIterator[list[ResponderRuntime]]:
    runtimes = [ResponderRuntime(settings, LogAdapter()) for _ in range(2)]
    for runtime in runtimes:
        await runtime.start()
    yield runtimes
    for runtime in runtimes:
        await runtime.stop()


@pytest.fixture
async def api(settings: Settings, client: NatsClient) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(rules_router(lambda: client, settings))
    # API keys are the api's concern (tests/integration/test_agent_actions.py): here an admin.
    app.dependency_overrides[authenticated] = lambda: Principal(
        key_id=0, name="tests", scope=Scope.ADMIN
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


async def test_both_replicas_seed_the_defaults_once(
    replicas: list[ResponderRuntime], client: NatsClient, settings: Settings
) -> None:
    kv = await client.jetstream().key_value(settings.rules_bucket)
    history = await kv.history(RULES_KEY)
    assert len(history) == 1
    assert {runtime.rules.current.revision for runtime in replicas} == {history[0].revision}


def _as_stored(document: dict[str, Any]) -> Any:
    return json.loads(encode_document(document))


def _earlier_and_now() -> tuple[dict[str, Any], dict[str, Any]]:
    """The packaged defaults, and as an earlier release shipped them (a rule fewer)."""
    defaults = load_rule_set_document()
    return {**defaults, "rules": defaults["rules"][1:]}, defaults


@pytest.mark.parametrize(
    "stored", ["an earlier release's defaults", "a customised set", "with an operator's file"]
)
async def test_the_defaults_an_earlier_release_seeded_are_upgraded_at_start(
    settings_factory: Callable[..., Settings],
    client: NatsClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    stored: str,
) -> None:
    """Only the untouched defaults of an earlier release, and only to the packaged ones."""
    earlier, defaults = _earlier_and_now()
    monkeypatch.setattr(
        responder_app,
        "default_releases",
        lambda: [document_digest(earlier), document_digest(defaults)],
    )
    settings = settings_factory()
    document = earlier
    if stored == "a customised set":
        document = {**earlier, "rules": earlier["rules"][1:]}
    elif stored == "with an operator's file":  # DMDESK_RULES_PATH: the operator's defaults
        rules = tmp_path / "rules.json"
        rules.write_text(encode_document(defaults).decode())
        settings = settings_factory(rules_path=rules)
    kv = await open_rules_bucket(client.jetstream(), settings)
    await kv.create(RULES_KEY, encode_document(document))
    runtimes = [ResponderRuntime(settings, LogAdapter()) for _ in range(2)]
    try:
        for runtime in runtimes:
            await runtime.start()
        history = await kv.history(RULES_KEY)
        last = history[-1].revision
        await eventually(lambda: _revisions(runtimes), lambda found: found == {last})
    finally:
        for runtime in runtimes:
            await runtime.stop()
    upgraded = stored == "an earlier release's defaults"
    assert _as_stored(json.loads(history[-1].value)) == _as_stored(
        defaults if upgraded else document
    )
    assert len(history) == (2 if upgraded else 1), "one upgrade though two replicas started"


async def test_replicas_of_two_builds_during_a_rolling_upgrade_do_not_flip_flop(
    settings: Settings, client: NatsClient
) -> None:
    earlier, defaults = _earlier_and_now()
    previous_build = (earlier, [document_digest(earlier)])
    this_build = (defaults, [document_digest(earlier), document_digest(defaults)])
    kv = await open_rules_bucket(client.jetstream(), settings)
    await seed_defaults(kv, *previous_build)
    # Three replicas of this build start at once, one of the previous build restarts
    # meanwhile, then each restarts once more.
    await asyncio.gather(*(seed_defaults(kv, *this_build) for _ in range(3)))
    await seed_defaults(kv, *previous_build)
    await seed_defaults(kv, *this_build)
    history = await kv.history(RULES_KEY)
    assert [json.loads(entry.value) for entry in history] == [
        _as_stored(earlier),
        _as_stored(defaults),
    ]


async def test_put_rules_switches_both_replicas_without_restart(
    replicas: list[ResponderRuntime], api: httpx.AsyncClient
) -> None:
    response = await api.put(
        "/v1/rules", json=greeting_rules("Version two, {{ contact.first_name or 'friend' }}")
    )
    assert response.status_code == 200, response.text
    revision = response.json()["revision"]

    switched = await eventually(
        lambda: _revisions(replicas), lambda found: found == {revision}, timeout=5
    )
    assert switched == {revision}
    _handled, decision = await replicas[1].handle(dm("m-1", "hello"))
    assert decision is not None
    assert [reply.text for reply in decision.replies] == ["Version two, Ana"]


async def _revisions(replicas: list[ResponderRuntime]) -> set[int]:
    return {runtime.rules.current.revision for runtime in replicas}


async def test_bad_rule_set_is_refused_with_the_rule_and_the_old_one_stays(
    replicas: list[ResponderRuntime], api: httpx.AsyncClient
) -> None:
    before = (await api.get("/v1/rules")).json()
    bad = greeting_rules("Hi {{ contact.nickname }}")
    bad["rules"].append({"id": "oops", "then": [{"handoff": {"team": "nobody"}}]})
    response = await api.put("/v1/rules", json=bad)
    assert response.status_code == 422
    problems = response.json()["problems"]
    assert {
        "rule_id": "oops",
        "rule_index": 1,
        "location": "then.0.handoff.team",
        "reason": "unknown team 'nobody'",
    } in problems
    assert any(
        p["location"] == "templates.greeting.en" and "nickname" in p["reason"] for p in problems
    )
    assert (await api.get("/v1/rules")).json() == before


async def test_get_rules_says_which_release_of_the_defaults_the_live_set_is(
    replicas: list[ResponderRuntime], api: httpx.AsyncClient
) -> None:
    seeded = (await api.get("/v1/rules")).json()
    assert seeded["defaults_release"] == len(default_releases()), "the packaged defaults"
    customised = await api.put("/v1/rules", json=greeting_rules("Hi"))
    assert customised.json()["defaults_release"] is None
    assert (await api.get("/v1/rules")).json()["defaults_release"] is None


async def test_rules_accept_yaml_and_if_match(
    api: httpx.AsyncClient, replicas: list[ResponderRuntime]
) -> None:
    current = (await api.get("/v1/rules")).json()
    yaml_body = "templates:\n  t:\n    en: Hello\nrules:\n  - id: r\n    then: [{reply: t}]\n"
    stale = await api.put(
        "/v1/rules",
        content=yaml_body,
        headers={"Content-Type": "application/yaml", "If-Match": "999999"},
    )
    assert stale.status_code == 412
    ok = await api.put(
        "/v1/rules",
        content=yaml_body,
        headers={"Content-Type": "application/yaml", "If-Match": str(current["revision"])},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["rules"]["rules"][0]["id"] == "r"


async def test_dry_run_says_what_the_bot_would_do(
    api: httpx.AsyncClient, replicas: list[ResponderRuntime]
) -> None:
    response = await api.post(
        "/v1/rules/dry-run",
        json={
            "text": "This is unacceptable, worst service ever",
            "category": "complaint",
            "priority": "high",
            "language": "es",
            "contact": {"name": "Lucía Pérez"},
        },
    )
    assert response.status_code == 200, response.text
    decision = response.json()["decision"]
    assert decision["matched_rules"] == ["complaints"]
    assert decision["handoff"]["team"] == "complaints"
    assert decision["replies"][0]["text"].startswith("Lucía, sentimos")
    assert response.json()["revision"] > 0


async def test_dry_run_shows_which_signal_decided_before_any_category_rule(
    api: httpx.AsyncClient, replicas: list[ResponderRuntime]
) -> None:
    response = await api.post(
        "/v1/rules/dry-run",
        json={
            "text": "What are your opening hours? I will see you in court",
            "category": "inquiry",
            "critical": ["legal"],
            "language": "it",
        },
    )
    assert response.status_code == 200, response.text
    decision = response.json()["decision"]
    assert decision["matched_rules"] == ["critical"]
    assert decision["faq"] is None
    assert decision["handoff"]["signals"] == ["critical:legal"]
    assert decision["handoff"]["priority"] == "urgent"
    assert "rule critical (#2) matched on critical:legal" in decision["trace"]
    # A critical DM is a person's to answer: no acknowledgement from the bot.
    assert decision["replies"] == []
    assert decision["handoff"]["acknowledge"] is False


async def test_dry_run_tries_the_rules_given_and_refuses_bad_ones(
    api: httpx.AsyncClient, replicas: list[ResponderRuntime]
) -> None:
    given = await api.post(
        "/v1/rules/dry-run", json={"text": "hello", "rules": greeting_rules("Hi there")}
    )
    bad = await api.post(
        "/v1/rules/dry-run",
        json={"text": "hello", "rules": {"rules": [{"id": "x", "then": [{"reply": "nope"}]}]}},
    )
    assert given.status_code == 200, given.text
    assert given.json()["revision"] == 0
    assert [r["text"] for r in given.json()["decision"]["replies"]] == ["Hi there"]
    assert bad.status_code == 422
    assert bad.json()["problems"][0]["rule_id"] == "x"


async def test_dry_run_without_a_responder_is_a_503_with_the_reason(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/rules/dry-run", json={"text": "hello"})
    assert response.status_code == 503
    assert "no responder" in response.json()["detail"]


async def test_stored_rule_set_that_does_not_compile_is_ignored_by_replicas(
    replicas: list[ResponderRuntime], client: NatsClient, settings: Settings
) -> None:
    before = replicas[0].rules.current
    kv = await client.jetstream().key_value(settings.rules_bucket)
    await kv.put(
        RULES_KEY, encode_document({"rules": [{"id": "x", "then": [{"reply": "missing"}]}]})
    )
    await asyncio.sleep(0.5)
    assert replicas[0].rules.current.source == before.source
    good = await kv.put(RULES_KEY, encode_document(load_rule_set_document()))
    await eventually(lambda: _revisions(replicas), lambda found: found == {good})


async def test_a_pulls_dms_of_one_conversation_are_decided_in_turn(
    replicas: list[ResponderRuntime], api: httpx.AsyncClient
) -> None:
    response = await api.put("/v1/rules", json=greeting_rules("Hi"))
    revision = response.json()["revision"]
    await eventually(lambda: _revisions(replicas), lambda found: found == {revision})
    published: list[RoutedMessage] = []

    async def publish(routed: RoutedMessage) -> None:
        published.append(routed)

    # Six messages of one conversation in one pull: each is decided on the state the
    # previous one left, so the reply limit (3) holds, and the state is written once.
    messages = [dm(f"m-{i}", "hello") for i in range(6)]
    ref = messages[0].message.conversation
    outcomes = await replicas[0].route(messages, publish)
    state, written = await replicas[0].states.read(ref)
    assert sum(len(routed.requests) for routed in published) == 3
    assert [routed.message.mid for routed in published] == [m.message.mid for m in messages]
    assert (state.bot_turns, state.messages_seen) == (3, 6)
    assert written == 1
    # Redelivered (on the other replica): counted already, neither decided nor published.
    again = await replicas[1].route(messages[:2], publish)
    assert again == [Routed(None, None), Routed(None, None)]
    assert len(published) == 6
    assert (await replicas[0].states.read(ref))[1] == written
    assert all(isinstance(outcome, Routed) for outcome in outcomes)


async def test_replicas_deciding_one_conversation_at_once_lose_no_update(
    replicas: list[ResponderRuntime], api: httpx.AsyncClient
) -> None:
    response = await api.put("/v1/rules", json=greeting_rules("Hi"))
    revision = response.json()["revision"]
    await eventually(lambda: _revisions(replicas), lambda found: found == {revision})
    # Six messages of one conversation decided at once on two replicas: each decision is
    # published before its state is written, so the state counts every reply published
    # (the loser of a compare-and-set adds its decision to the winner's state).
    messages = [dm(f"m-{i}", "hello") for i in range(6)]
    results = await asyncio.gather(
        *(replicas[i % 2].handle(message) for i, message in enumerate(messages))
    )
    replies = sum(len(decision.replies) for _, decision in results if decision is not None)
    state, _ = await replicas[0].states.read(messages[0].message.conversation)
    assert replies >= 3
    assert state.bot_turns == replies
    assert state.messages_seen == 6
    assert sorted(state.handled_mids) == sorted(m.message.mid for m in messages)
    # A redelivered message is not decided again.
    assert await replicas[1].handle(messages[0]) == Routed(None, None)


async def test_agent_reply_marks_the_human_take_over_for_every_replica(
    replicas: list[ResponderRuntime],
) -> None:
    first = dm("m-1", "What are your opening hours?")
    await replicas[0].handle(first)
    agent = OutboundRequest(
        request_id="agent-1",
        conversation=first.message.conversation,
        text="Hi, I'm Sam from the team",
        author="agent",
        agent_id="sam",
    )
    await replicas[1].deliver(agent)
    _, decision = await replicas[0].handle(dm("m-2", "What are your opening hours?"))
    assert decision is not None
    assert decision.publishes_nothing
    late_bot = OutboundRequest(
        request_id="bot-late",
        conversation=first.message.conversation,
        text="Our hours are...",
        author="bot",
        requested_at=utcnow() - timedelta(seconds=5),
    )
    result = await replicas[0].deliver(late_bot)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.message == "a human has taken the conversation"


METAS_INBOX = "263902037430900"
OUR_APP = "1517776481860111"


def echo(mid: str, contact: str = "ana", app_id: str | None = None) -> InboundMessage:
    """A message the page itself sent to ``contact`` (Meta echoes every one)."""
    return InboundMessage(
        mid=mid,
        channel=Channel.GENERIC,
        account_id="page-1",
        contact=Contact(platform_id=contact),
        text="Hi, Sam here from the shop, let me check that for you",
        is_echo=True,
        app_id=app_id,
        platform_ts=utcnow(),
    )


@contextlib.asynccontextmanager
async def chatty_responder(
    settings_factory: Callable[..., Settings], tmp_path: Path, **overrides: Any
) -> AsyncIterator[ResponderRuntime]:
    """A running responder whose rules answer every DM (and never hand off)."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(greeting_rules("Hello from the bot")))
    runtime = ResponderRuntime(settings_factory(rules_path=rules, **overrides), LogAdapter())
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture
async def chatty(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[ResponderRuntime]:
    """A responder whose rules answer every DM (and never hand off)."""
    async with chatty_responder(settings_factory, tmp_path) as runtime:
        yield runtime


async def test_a_reply_from_metas_inbox_makes_the_bot_step_back(
    chatty: ResponderRuntime,
) -> None:
    _, answered = await chatty.handle(dm("m-1", "hello?"))
    assert answered is not None
    assert answered.replies, "the bot answers while no human has written"

    assert await chatty.page_wrote(echo("m-human"))

    _, decision = await chatty.handle(dm("m-2", "hello again?"))
    assert decision is not None
    assert decision.publishes_nothing


async def test_the_bots_own_reply_echoed_back_is_not_a_human(chatty: ResponderRuntime) -> None:
    first = dm("m-1", "hello?", contact="bo")
    await chatty.handle(first)
    request = OutboundRequest(
        request_id="bot-hello",
        conversation=first.message.conversation,
        text="Hello from the bot",
        author="bot",
    )
    sent = await chatty.deliver(request)
    assert sent.mid is not None

    assert not await chatty.page_wrote(echo(sent.mid, contact="bo"))
    _, decision = await chatty.handle(dm("m-2", "hello again?", contact="bo"))
    assert decision is not None
    assert decision.replies, "the bot still answers"


async def claimed(
    runtime: ResponderRuntime, conversation: ConversationRef, request_id: str, at: datetime
) -> None:
    """Leave the claim a replica takes before it sends (and keeps if it dies mid-send)."""
    state, revision = await runtime.states.read(conversation)
    state.claim_send(request_id, at)
    await runtime.states.write(conversation, state, revision)


def long_ago(runtime: ResponderRuntime) -> datetime:
    """Older than any send with its retries: the claim of a replica that died."""
    return utcnow() - runtime.send_claim_ttl - timedelta(seconds=1)


async def test_a_claim_left_by_a_dead_replica_does_not_hide_a_human(
    chatty: ResponderRuntime,
) -> None:
    first = dm("m-1", "hello?", contact="cy")
    await chatty.handle(first)
    # A replica died mid-send long ago: its claim stays, so that reply is never resent.
    await claimed(chatty, first.message.conversation, "bot-lost", long_ago(chatty))

    assert await chatty.page_wrote(echo("m-human", contact="cy"))
    _, decision = await chatty.handle(dm("m-2", "hello again?", contact="cy"))
    assert decision is not None
    assert decision.publishes_nothing


async def test_a_human_who_writes_between_the_senders_read_and_its_claim_stops_the_bot(
    chatty: ResponderRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = dm("m-1", "hello?", contact="hal")
    ref = first.message.conversation
    await chatty.handle(first)
    request = OutboundRequest(
        request_id="bot-late", conversation=ref, text="Hello from the bot", author="bot"
    )
    read = chatty.states.entry

    async def read_then_a_human_writes(conversation: ConversationRef) -> StateEntry:
        entry = await read(conversation)
        # Another replica records the page's human reply after the sender read the state.
        monkeypatch.setattr(chatty.states, "entry", read)
        assert await chatty.page_wrote(echo("m-human", contact="hal"))
        return entry

    monkeypatch.setattr(chatty.states, "entry", read_then_a_human_writes)
    result = await chatty.deliver(request)

    assert result.status == OutboundStatus.FAILED
    assert result.error is not None
    assert result.error.type == "dmdesk.human_took_over"
    state, _ = await chatty.states.read(ref)
    assert "bot-late" not in state.sent
    assert "bot-late" not in state.sending


async def test_an_echo_during_a_send_in_flight_is_taken_for_the_bots(
    chatty: ResponderRuntime,
) -> None:
    first = dm("m-1", "hello?", contact="dee")
    await chatty.handle(first)
    await claimed(chatty, first.message.conversation, "bot-now", utcnow())

    assert not await chatty.page_wrote(echo("m-unknown", contact="dee"))


@pytest.fixture
async def knows_its_app(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[ResponderRuntime]:
    """The chatty responder, told which Meta app it sends with."""
    async with chatty_responder(settings_factory, tmp_path, meta_app_ids=[OUR_APP]) as runtime:
        yield runtime


async def test_an_echo_from_metas_inbox_is_a_human_even_during_a_send_in_flight(
    knows_its_app: ResponderRuntime,
) -> None:
    first = dm("m-1", "hello?", contact="fay")
    await knows_its_app.handle(first)
    await claimed(knows_its_app, first.message.conversation, "bot-now", utcnow())

    assert await knows_its_app.page_wrote(echo("m-inbox", contact="fay", app_id=METAS_INBOX))
    _, decision = await knows_its_app.handle(dm("m-2", "hello again?", contact="fay"))
    assert decision is not None
    assert decision.publishes_nothing


async def test_an_echo_from_our_own_app_is_never_a_human(
    knows_its_app: ResponderRuntime,
) -> None:
    first = dm("m-1", "hello?", contact="gus")
    await knows_its_app.handle(first)

    # No send in flight and a mid it has not recorded (an echo can beat the Send API's
    # answer): dmdesk's app sent it, so nobody took over.
    assert not await knows_its_app.page_wrote(echo("m-ours", contact="gus", app_id=OUR_APP))
    _, decision = await knows_its_app.handle(dm("m-2", "hello again?", contact="gus"))
    assert decision is not None
    assert decision.replies, "the bot still answers"


async def test_a_redelivered_dm_or_the_bots_own_echo_writes_no_state(
    chatty: ResponderRuntime,
) -> None:
    first = dm("m-1", "hello?", contact="eve")
    ref = first.message.conversation
    await chatty.handle(first)
    _, decided = await chatty.states.read(ref)

    await chatty.handle(first)  # redelivered: decided before, the same events come back
    assert (await chatty.states.read(ref))[1] == decided

    request = OutboundRequest(
        request_id="bot-eve", conversation=ref, text="Hello from the bot", author="bot"
    )
    sent = await chatty.deliver(request)
    assert sent.mid is not None
    _, after_send = await chatty.states.read(ref)
    assert after_send > decided

    assert not await chatty.page_wrote(echo(sent.mid, contact="eve"))
    assert (await chatty.states.read(ref))[1] == after_send


class RecordingAdapter:
    def __init__(self) -> None:
        self.sent: list[tuple[OutboundRequest, MessagingPolicy]] = []

    async def send(
        self, request: OutboundRequest, policy: MessagingPolicy = RESPONSE
    ) -> OutboundResult:
        self.sent.append((request, policy))
        return await LogAdapter().send(request, policy)

    async def aclose(self) -> None:
        return None


class SlowAdapter(RecordingAdapter):
    """Sends after ``release`` is set, failing with ``error`` if one is given."""

    def __init__(self, error: PlatformError | None = None) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.error = error

    async def send(
        self, request: OutboundRequest, policy: MessagingPolicy = RESPONSE
    ) -> OutboundResult:
        self.sent.append((request, policy))
        await self.release.wait()
        if self.error is not None:
            return OutboundResult(
                request_id=request.request_id,
                conversation=request.conversation,
                status=OutboundStatus.FAILED,
                error=self.error,
            )
        return await LogAdapter().send(request, policy)


def bot_reply(request_id: str, contact: str) -> OutboundRequest:
    return OutboundRequest(
        request_id=request_id,
        conversation=dm("m-x", "hi", contact=contact).message.conversation,
        text="Our hours are 9 to 6",
        author="bot",
    )


async def test_a_reply_being_sent_is_not_sent_again_by_a_redelivery(settings: Settings) -> None:
    adapter = SlowAdapter()
    replicas = [ResponderRuntime(settings, adapter) for _ in range(2)]
    for runtime in replicas:
        await runtime.start()
    try:
        request = bot_reply("bot-once", "once")
        first = asyncio.create_task(replicas[0].deliver(request))
        await eventually(lambda: asyncio.sleep(0, adapter.sent), bool)
        # Its ack wait ran out while the first replica still waits for the Send API.
        with pytest.raises(RetryLater):
            await replicas[1].deliver(request)
        adapter.release.set()
        sent = await first
        assert sent.status == OutboundStatus.SENT
        again = await replicas[1].deliver(request)
        assert again.status == OutboundStatus.SENT
        assert again.mid == sent.mid
        assert len(adapter.sent) == 1
    finally:
        for runtime in replicas:
            await runtime.stop()


async def test_a_send_cut_short_by_a_dead_replica_is_reported_not_repeated(
    settings: Settings,
) -> None:
    adapter = RecordingAdapter()
    runtime = ResponderRuntime(settings, adapter)
    await runtime.start()
    try:
        request = bot_reply("bot-cut", "cut")
        # A replica claimed the send, then died before it could record the outcome.
        await claimed(runtime, request.conversation, request.request_id, long_ago(runtime))

        result = await runtime.deliver(request)
        assert result.status == OutboundStatus.FAILED
        assert result.error is not None
        assert result.error.type == "dmdesk.send_interrupted"
        assert adapter.sent == []
    finally:
        await runtime.stop()


async def test_a_failed_send_may_be_tried_again(settings: Settings) -> None:
    adapter = SlowAdapter(PlatformError(type="OAuthException", message="down", retryable=True))
    adapter.release.set()
    runtime = ResponderRuntime(settings, adapter)
    await runtime.start()
    try:
        request = bot_reply("bot-again", "again")
        assert (await runtime.deliver(request)).status == OutboundStatus.FAILED
        adapter.error = None
        assert (await runtime.deliver(request)).status == OutboundStatus.SENT
        assert len(adapter.sent) == 2
    finally:
        await runtime.stop()


async def test_service_answers_hands_off_and_closes_through_the_stream(
    settings: Settings, client: NatsClient
) -> None:
    adapter = RecordingAdapter()
    app = service_app(build(settings, adapter))
    js = client.jetstream()
    async with app.router.lifespan_context(app):
        await provision(js, settings)
        for message in (
            dm("m-order", "Where is my order #123? It hasn't arrived", contact="c1"),
            dm("m-spam", "buy followers", contact="c2", category=Category.SPAM, spam=True),
        ):
            await js.publish(
                CLASSIFIED,
                message.model_dump_json().encode(),
                headers={MSG_ID_HEADER: f"classified:generic:{message.message.mid}"},
            )
        # The two DMs may be decided in different pulls: wait for both before stopping.
        results = await eventually(
            lambda: stored(client.jetstream(), "dm.outbound.result", settings.stream_name, 10),
            lambda found: len(found) >= 1,
        )
        quiet = await eventually(
            lambda: stored(client.jetstream(), "dm.routed.quiet", settings.stream_name, 10),
            lambda found: len(found) >= 1,
        )
    [result] = [OutboundResult.model_validate_json(data) for data in results]
    assert result.status == "sent"
    [(request, policy)] = adapter.sent
    assert request.text.startswith("Hi Ana, thanks for asking about your order")
    assert policy == RESPONSE
    # One event per DM: the DM, its classification and the decision.
    [order] = [
        RoutedMessage.model_validate_json(d)
        for d in await stored(client.jetstream(), "dm.routed.reply", settings.stream_name, 10)
    ]
    assert order.message.mid == "m-order"
    assert order.outcome == RouteOutcome.HANDOFF
    [reply] = order.replies
    assert reply.rule_id == "order-status"
    assert reply.request_id == request.request_id
    assert order.requests == [request]
    assert order.handoff is not None
    assert (order.handoff.team, order.handoff.reason, order.handoff.tags) == (
        "support",
        "order status question",
        ["order-status"],
    )
    [spam] = [RoutedMessage.model_validate_json(d) for d in quiet]
    assert spam.outcome == RouteOutcome.CLOSED
    assert spam.closed is not None
    assert spam.closed.conversation.contact_id == "c2"
    assert spam.closed.reason == "spam"
    for retired in ("dm.reply.bot", "dm.handoff", "dm.closed", "dm.outbound.requested"):
        assert await stored(client.jetstream(), retired, settings.stream_name, 10) == []


async def test_a_redelivered_pull_publishes_each_decision_once(
    settings: Settings, client: NatsClient
) -> None:
    app = service_app(build(settings, RecordingAdapter()))
    js = client.jetstream()
    message = dm("m-twice", "Where is my order #123? It hasn't arrived", contact="c3")
    async with app.router.lifespan_context(app):
        await provision(js, settings)
        # The classifier published it twice (past its own dedupe id, e.g. a replay).
        for suffix in ("", ":replayed"):
            await js.publish(
                CLASSIFIED,
                message.model_dump_json().encode(),
                headers={MSG_ID_HEADER: f"classified:generic:m-twice{suffix}"},
            )
        await eventually(
            lambda: stored(client.jetstream(), "dm.outbound.result", settings.stream_name, 10),
            lambda found: len(found) >= 1,
        )
        await eventually(
            lambda: js.consumer_info(settings.stream_name, "responder-v1"),
            lambda found: found.num_ack_pending == 0 and found.num_pending == 0,
        )
    routed = await stored(client.jetstream(), "dm.routed.*", settings.stream_name, 10)
    assert len(routed) == 1


async def test_a_classified_dm_it_cannot_read_is_dead_lettered_and_counted(
    settings: Settings, client: NatsClient
) -> None:
    spec = build(settings, RecordingAdapter())
    app = service_app(spec)
    js = client.jetstream()
    async with app.router.lifespan_context(app):
        await provision(js, settings)
        await js.publish(
            CLASSIFIED, b'{"message": "not a DM"}', headers={MSG_ID_HEADER: "poison-r1"}
        )
        [letter] = await eventually(
            lambda: stored(client.jetstream(), "dm.dlq.responder", settings.stream_name, 10),
            bool,
        )
    dead = DeadLetter.model_validate_json(letter)
    assert (dead.stage, dead.subject, dead.error_type) == (
        "responder",
        CLASSIFIED,
        "ValidationError",
    )
    # Counted as the responder's failure, and as one of its publishes (the dead letter).
    value = spec.registry.get_sample_value
    assert value("dmdesk_responder_failures_total", {"consumer": "responder-v1"}) == 1
    published = {"service": "responder", "subject": "dm.dlq.responder", "outcome": "stored"}
    assert value("dmdesk_published_messages_total", published) == 1


async def test_stopping_does_not_wait_forever_on_a_connection_that_will_not_drain(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.responder.app.STOP_SECONDS", 0.5)
    runtime = ResponderRuntime(settings, LogAdapter())
    await runtime.start()
    client = runtime._client
    assert client is not None

    async def never_drains() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(client, "drain", never_drains)
    await asyncio.wait_for(runtime.stop(), timeout=10)
    assert client.is_closed


async def test_a_profile_bucket_that_fails_never_holds_a_decision_up(
    chatty: ResponderRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreadable(*_: object) -> None:
        raise nats.errors.TimeoutError

    monkeypatch.setattr(chatty.profiles, "profiles", unreadable)
    message = dm("m-1", "hello?", contact="hal")
    on_messenger = message.model_copy(
        update={"message": message.message.model_copy(update={"channel": Channel.MESSENGER})}
    )
    routed, decision = await chatty.handle(on_messenger)
    assert decision is not None
    assert routed is not None
    assert routed.requests, "decided without the profile"
