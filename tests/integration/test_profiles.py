"""Contact profiles: fetched from the Graph API stand-in, cached in a real NATS KV bucket."""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import nats
import pytest

from services.responder.meta import GraphApi
from services.responder.profiles import FetchState, ProfileCache, ProfileFetcher, ProfileFetchError
from shared import streams
from shared.events import Channel, Contact, InboundMessage, utcnow
from shared.settings import Settings
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
    assert profile is not None
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
    await first.remember(fetched)
    assert await second.on_inbound(dm("star", "m-3")) is None
    assert len(graph.profile_requests("star")) == 1


async def test_rate_limit_errors_are_backed_off_and_retried(
    make_fetcher: Callable[..., ProfileFetcher], graph: SendApiStub
) -> None:
    graph.profiles["star"] = STAR
    graph.fail_profile("star", 400, RATE_LIMIT, times=2)
    profile = await make_fetcher().on_inbound(dm("star"))
    assert profile is not None
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
