"""Contact profiles: fetched from the Graph API stand-in, cached in a real NATS KV bucket."""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import nats
import pytest
from nats.js.client import JetStreamContext

from services.responder.adapters import LogAdapter
from services.responder.app import build
from services.responder.meta import GraphApi
from services.responder.profiles import (
    FetchState,
    ProfileCache,
    ProfileEntry,
    ProfileFetcher,
    ProfileFetchError,
)
from shared import streams
from shared.bus import publish_event
from shared.events import Channel, Contact, ContactProfile, InboundMessage, ProfileDue, utcnow
from shared.ratelimit import RateLimit
from shared.service import service_app
from shared.settings import Settings
from tests.stack import bucket_keys, eventually, stored
from tests.unit.responder.sendapi_stub import RATE_LIMIT, SendApiStub

IG = "ig-1"
TOKENS = {IG: "ig-token"}
STAR = {
    "name": "Star Creator",
    "username": "star",
    "profile_pic": "https://cdn.example/star.jpg",
    "follower_count": 400_000,
    "is_verified_user": True,
    "is_user_follow_business": False,
}


@pytest.fixture
def graph() -> Iterator[SendApiStub]:
    with SendApiStub(TOKENS) as stub:
        yield stub


@pytest.fixture
async def make_fetcher(
    settings_factory: Callable[..., Settings], graph: SendApiStub
) -> AsyncIterator[Callable[..., ProfileFetcher]]:
    client = await nats.connect(settings_factory().nats_url)
    apis: list[GraphApi] = []
    settings = settings_factory(
        graph_api_url=graph.base_url,
        page_access_tokens=TOKENS,
        send_backoff_seconds=0.01,
        profile_timeout_seconds=0.3,
        profile_max_attempts=3,
    )
    kv = await streams.open_key_value(client.jetstream(), streams.profiles_bucket_config(settings))

    def make() -> ProfileFetcher:
        api = GraphApi(settings)
        apis.append(api)
        return ProfileFetcher(api, ProfileCache(kv, settings), settings)

    yield make
    for api in apis:
        await api.aclose()
    await client.close()


def dm(contact: str, mid: str = "m-1", **fields: Any) -> InboundMessage:
    return InboundMessage(
        mid=mid,
        channel=Channel.INSTAGRAM,
        account_id=IG,
        contact=Contact(platform_id=contact, **fields),
        text="hi",
        platform_ts=utcnow(),
    )


async def test_instagram_profile_has_the_documented_fields(
    make_fetcher: Callable[..., ProfileFetcher], graph: SendApiStub
) -> None:
    graph.profiles["star"] = STAR
    profile = await make_fetcher().on_inbound(dm("star"))
    assert isinstance(profile, ContactProfile)
    assert (profile.name, profile.username, profile.followers) == ("Star Creator", "star", 400_000)
    assert (profile.verified, profile.follows_business) == (True, False)
    [call] = graph.profile_requests("star")
    assert call.query["access_token"] == "ig-token"
    assert set(call.query["fields"].split(",")) >= {"follower_count", "is_verified_user"}


async def test_replicas_fetch_a_contact_once_per_refresh_period(
    make_fetcher: Callable[..., ProfileFetcher], graph: SendApiStub
) -> None:
    graph.profiles["star"] = STAR
    first, second = make_fetcher(), make_fetcher()
    results = await asyncio.gather(
        first.on_inbound(dm("star", "m-1")), second.on_inbound(dm("star", "m-2"))
    )
    assert sum(result is not None for result in results) == 1
    fetched = next(result for result in results if result is not None)
    assert isinstance(fetched, ContactProfile)
    await first.remember(fetched)
    assert await second.on_inbound(dm("star", "m-3")) is None
    assert len(graph.profile_requests("star")) == 1


async def test_rate_limit_errors_are_backed_off_and_retried(
    make_fetcher: Callable[..., ProfileFetcher], graph: SendApiStub
) -> None:
    graph.profiles["star"] = STAR
    graph.fail_profile("star", 400, RATE_LIMIT, times=2)
    profile = await make_fetcher().on_inbound(dm("star"))
    assert isinstance(profile, ContactProfile)
    assert profile.followers == 400_000
    assert [call.status for call in graph.profile_requests("star")] == [400, 400, 200]


async def test_a_rate_limit_that_lasts_is_a_recorded_failure_and_pauses_the_page(
    make_fetcher: Callable[..., ProfileFetcher], graph: SendApiStub
) -> None:
    graph.profiles["other"] = STAR
    graph.fail_profile("star", 400, RATE_LIMIT, times=3)
    fetcher = make_fetcher()
    with pytest.raises(ProfileFetchError) as failure:
        await fetcher.on_inbound(dm("star"))
    assert failure.value.reason == "rate_limited"
    entry, _ = await fetcher.cache.read(dm("star").conversation)
    assert entry is not None
    assert entry.state == FetchState.FAILED
    with pytest.raises(ProfileFetchError):
        await fetcher.on_inbound(dm("other"))
    assert graph.profile_requests("other") == []


async def test_a_timeout_is_a_recorded_failure(
    make_fetcher: Callable[..., ProfileFetcher], graph: SendApiStub
) -> None:
    graph.profiles["slow"] = STAR
    graph.profile_delay = 1.0
    fetcher = make_fetcher()
    with pytest.raises(ProfileFetchError) as failure:
        await fetcher.on_inbound(dm("slow"))
    assert failure.value.reason == "network"
    entry, _ = await fetcher.cache.read(dm("slow").conversation)
    assert entry is not None
    assert entry.state == FetchState.FAILED
    assert await fetcher.on_inbound(dm("slow", "m-2")) is None  # not again before the retry time


async def test_a_full_rate_limit_queues_the_fetch_instead_of_waiting_for_room(
    make_fetcher: Callable[..., ProfileFetcher], graph: SendApiStub
) -> None:
    for contact in ("a", "b", "c"):
        graph.profiles[contact] = STAR
    fetcher = make_fetcher()
    fetcher.limit = RateLimit("2/second")
    assert isinstance(await fetcher.on_inbound(dm("a")), ContactProfile)
    assert isinstance(await fetcher.on_inbound(dm("b")), ContactProfile)

    queued = await fetcher.on_inbound(dm("c", "m-c"))
    assert isinstance(queued, ProfileDue)
    assert queued.mid == "m-c"
    assert graph.profile_requests("c") == []
    entry, _ = await fetcher.cache.read(dm("c").conversation)
    assert entry is None  # unclaimed until the queued fetch runs: no decision waits for it

    again = await fetcher.on_inbound(dm("c", "m-c2"))  # the contact's next DM
    assert isinstance(again, ProfileDue)
    profile = await fetcher.on_due(queued)  # waits for room
    assert profile is not None
    assert profile.followers == 400_000
    await fetcher.remember(profile)
    assert await fetcher.on_due(again) is None  # fetched already
    assert await fetcher.on_due(queued) is None  # redelivered
    assert len(graph.profile_requests("c")) == 1


async def test_a_claimed_fetch_never_waits_for_room_under_the_rate_limit(
    make_fetcher: Callable[..., ProfileFetcher], graph: SendApiStub
) -> None:
    # A pull's contacts are fetched at once: only those that got room claim (a claim is a
    # fetch in flight, which decisions wait for); the others are queued, unclaimed.
    contacts = [f"pull-{i}" for i in range(5)]
    for contact in contacts:
        graph.profiles[contact] = STAR
    fetcher = make_fetcher()
    fetcher.limit = RateLimit("2/minute")
    results = await asyncio.gather(*(fetcher.on_inbound(dm(contact)) for contact in contacts))
    fetched = [result for result in results if isinstance(result, ContactProfile)]
    queued = [result for result in results if isinstance(result, ProfileDue)]
    assert (len(fetched), len(queued)) == (2, 3)
    for due in queued:
        entry, _ = await fetcher.cache.read(due.conversation)
        assert entry is None
    assert sum(len(graph.profile_requests(contact)) for contact in contacts) == 2


def inbound(channel: Channel, contact: str, mid: str, account: str = IG) -> InboundMessage:
    return InboundMessage(
        mid=mid,
        channel=channel,
        account_id=account,
        contact=Contact(platform_id=contact, name="Wa Name"),
        text="hi",
        platform_ts=utcnow(),
    )


async def contacts_consumer_handles(
    js: JetStreamContext, settings: Settings, dms: list[InboundMessage]
) -> None:
    """Publish ``dms`` as ingest does and wait until ``responder-contacts-v2`` acked them all."""
    for message in dms:
        definition = streams.INBOUND_EVENT
        await publish_event(
            js,
            message,
            subject=definition.subject(message),
            msg_id=definition.msg_id(message),
            settings=settings,
        )
    await eventually(
        lambda: js.consumer_info(settings.stream_name, streams.RESPONDER_CONTACTS.durable),
        lambda info: info.num_pending == 0 and info.num_ack_pending == 0,
    )


async def test_contacts_consumer_writes_a_profile_only_when_one_is_due(
    settings_factory: Callable[..., Settings], graph: SendApiStub
) -> None:
    graph.profiles["star"] = STAR
    settings = settings_factory(graph_api_url=graph.base_url, page_access_tokens=TOKENS)
    app = service_app(build(settings, LogAdapter()))
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    dms = [
        inbound(Channel.GENERIC, "gen", "g-1"),
        inbound(Channel.WHATSAPP, "wa", "w-1"),
        inbound(Channel.WHATSAPP, "wa", "w-2"),
        inbound(Channel.INSTAGRAM, "star", "i-1"),
        inbound(Channel.INSTAGRAM, "star", "i-2"),
    ]
    try:
        async with app.router.lifespan_context(app):
            await contacts_consumer_handles(js, settings, dms)
        keys = await bucket_keys(js, settings.profiles_bucket)
        writes = (await js.stream_info(f"KV_{settings.profiles_bucket}")).state.last_seq
        profiles = await stored(js, streams.CONTACT_PROFILE, settings.stream_name)
    finally:
        await client.close()
    wa = streams.contact_key(dms[1].conversation)
    star = streams.contact_key(dms[3].conversation)
    # WhatsApp's profile is the webhook's: stored once, no claim; Instagram's claimed,
    # then stored; the second DM of each finds it fresh and writes nothing; generic none.
    assert keys == {wa, star}
    assert writes == 3
    assert len(profiles) == 2
    assert len(graph.profile_requests("star")) == 1


async def test_a_spike_of_new_contacts_queues_profiles_without_holding_up_the_dms(
    settings_factory: Callable[..., Settings], graph: SendApiStub
) -> None:
    contacts = [f"new-{i}" for i in range(6)]
    for contact in contacts:
        graph.profiles[contact] = STAR
    settings = settings_factory(
        graph_api_url=graph.base_url, page_access_tokens=TOKENS, profile_rate_limit="1/second"
    )
    app = service_app(build(settings, LogAdapter()))
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    dms = [inbound(Channel.INSTAGRAM, contact, f"m-{contact}") for contact in contacts]
    try:
        async with app.router.lifespan_context(app):
            await contacts_consumer_handles(js, settings, dms)
            # One a second: the DMs' consumer is done long before the last profile.
            fetched_then = len(await stored(js, streams.CONTACT_PROFILE, settings.stream_name))
            queued = await stored(js, streams.PROFILE_DUE, settings.stream_name)
            profiles = await eventually(
                lambda: stored(js, streams.CONTACT_PROFILE, settings.stream_name),
                lambda profiles: len(profiles) == len(contacts),
            )
    finally:
        await client.close()
    assert len(profiles) == len(contacts)
    assert fetched_then < len(contacts)
    assert len(queued) >= len(contacts) - 1
    for contact in contacts:
        assert len(graph.profile_requests(contact)) == 1


async def test_a_profile_is_waited_for_only_while_its_fetch_is_in_flight(
    make_fetcher: Callable[..., ProfileFetcher],
) -> None:
    cache = make_fetcher().cache
    soon = utcnow() + timedelta(seconds=30)
    unknown, fetching, late = dm("nobody"), dm("star"), dm("late")
    # Nobody fetches "nobody": not waited for. "late"'s DM is past its wait already.
    assert await cache.claim(fetching.conversation, "m-1", utcnow())
    assert await cache.claim(late.conversation, "m-1", utcnow())
    wanted = {
        streams.contact_key(unknown.conversation): (unknown.conversation, soon),
        streams.contact_key(late.conversation): (late.conversation, utcnow()),
    }
    assert await cache.profiles(wanted) == dict.fromkeys(wanted)

    fetched = ContactProfile(conversation=fetching.conversation, source="graph", name="Star")

    async def fetch_ends() -> None:
        await asyncio.sleep(0.1)
        await cache.store(
            fetching.conversation,
            ProfileEntry(state=FetchState.FETCHED, at=utcnow(), profile=fetched),
        )

    key = streams.contact_key(fetching.conversation)
    ending = asyncio.create_task(fetch_ends())
    found = await cache.profiles({key: (fetching.conversation, soon)})
    await ending
    assert found == {key: fetched}
