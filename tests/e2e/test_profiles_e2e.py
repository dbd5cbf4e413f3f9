"""Contacts' profiles and attachments end to end: the four services, real NATS, a Graph
API stand-in (with a CDN for attachments).

DMs enter at ``dm.inbound.<channel>`` as ingest publishes them (Messenger webhooks
carry no name); the responder asks the stand-in who wrote, and the api and the
templates use the answer.
"""

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient

from dmdesk.natsserver import free_port
from shared.events import Attachment, Channel, Contact, InboundMessage, utcnow
from shared.streams import MSG_ID_HEADER, inbound_subject
from tests.stack import Stack, eventually, started
from tests.unit.responder.sendapi_stub import SendApiStub

pytestmark = pytest.mark.e2e

PAGE = "page-1"
IG = "ig-1"
TOKENS = {PAGE: "page-token", IG: "ig-token"}
TOKENS_ENV = '{"page-1": "page-token", "ig-1": "ig-token"}'
StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def graph() -> Iterator[SendApiStub]:
    with SendApiStub(TOKENS) as stub:
        yield stub


@pytest.fixture
def profile_stack(
    request: pytest.FixtureRequest, clean_nats: str, database_url: str, tmp_path: Path
) -> StackFactory:
    """A stack whose Graph API is ``graph_url`` (the stand-in, or nothing listening)."""

    def make(graph_url: str, **env: str) -> AbstractAsyncContextManager[Stack]:
        running = Stack(
            nats_url=clean_nats,
            database_url=database_url,
            workdir=tmp_path,
            extra_env={
                "DMDESK_SEND_ADAPTER": "meta",
                "DMDESK_GRAPH_API_URL": graph_url,
                "DMDESK_PAGE_ACCESS_TOKENS": TOKENS_ENV,
                "DMDESK_SEND_BACKOFF_SECONDS": "0.05",
                **env,
            },
        )
        return started(running, request)

    return make


@pytest.fixture
async def bus(clean_nats: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(clean_nats)
    yield client
    await client.close()


async def publish_dm(
    bus: NatsClient,
    channel: Channel,
    account: str,
    contact: str,
    mid: str,
    text: str | None,
    attachments: list[Attachment] | None = None,
) -> None:
    message = InboundMessage(
        mid=mid,
        channel=channel,
        account_id=account,
        contact=Contact(platform_id=contact),
        text=text,
        attachments=attachments or [],
        platform_ts=utcnow(),
    )
    ack = await bus.jetstream().publish(
        inbound_subject(channel),
        message.model_dump_json().encode(),
        headers={MSG_ID_HEADER: f"{channel.value}:{mid}"},
    )
    assert not ack.duplicate


async def queued(stack: Stack, contact: str, done: Callable[[dict[str, Any]], bool]) -> Any:
    async def probe() -> dict[str, Any] | None:
        found = [i for i in await stack.queue() if i["contact"]["platform_id"] == contact]
        return found[0] if found else None

    return await eventually(probe, lambda item: item is not None and done(item))


async def test_instagram_influencer_is_queued_then_moves_up_with_a_reason(
    profile_stack: StackFactory, bus: NatsClient, graph: SendApiStub
) -> None:
    graph.profiles["igsid-star"] = {
        "name": "Star Creator",
        "username": "star.creator",
        "profile_pic": "https://cdn.example/star.jpg",
        "follower_count": 400_000,
        "is_verified_user": False,
        "is_user_follow_business": True,
    }
    gate = graph.hold_profile("igsid-star")
    async with profile_stack(graph.base_url, DMDESK_PROFILE_WAIT_SECONDS="0.2") as stack:
        await publish_dm(
            bus, Channel.INSTAGRAM, IG, "igsid-star", "ig-m-1", "Do you ship to Canada?"
        )
        item = await queued(stack, "igsid-star", lambda i: i["category"] is not None)
        assert item["priority"] == "normal"
        assert item["priority_reason"] is None
        gate.set()
        item = await queued(stack, "igsid-star", lambda i: i["priority"] == "high")
        assert item["priority"] == "high"
        assert item["priority_reason"] == "contact with 400000 followers -> high"
        assert item["contact"]["followers"] == 400_000
        assert item["contact"]["name"] == "Star Creator"


async def test_messenger_dm_gets_a_reply_with_the_customers_first_name(
    profile_stack: StackFactory, bus: NatsClient, graph: SendApiStub
) -> None:
    graph.profiles["psid-marta"] = {
        "first_name": "Marta",
        "last_name": "Ruiz",
        "profile_pic": "https://cdn.example/marta.jpg",
    }
    async with profile_stack(graph.base_url, DMDESK_PROFILE_WAIT_SECONDS="20") as stack:
        await publish_dm(
            bus,
            Channel.MESSENGER,
            PAGE,
            "psid-marta",
            "m-marta-1",
            "Where is my order #123?",  # no complaint: the order-status template answers
        )

        async def replies() -> list[Any]:
            return graph.sent("psid-marta")

        [call] = await eventually(replies, bool)
        assert call.body["message"]["text"].startswith("Hi Marta,")
        item = await queued(stack, "psid-marta", lambda i: i["contact"]["name"] is not None)
        assert item["contact"]["name"] == "Marta Ruiz"
        await publish_dm(bus, Channel.MESSENGER, PAGE, "psid-marta", "m-marta-2", "Thanks!")
        await queued(stack, "psid-marta", lambda i: i["last_customer_message_at"] is not None)
        assert len(graph.profile_requests("psid-marta")) == 1


async def test_graph_api_down_delays_nothing_and_loses_nothing(
    profile_stack: StackFactory, bus: NatsClient
) -> None:
    nothing_there = f"http://127.0.0.1:{free_port()}/v21.0"
    async with profile_stack(nothing_there, DMDESK_PROFILE_WAIT_SECONDS="600") as stack:
        for n in range(3):
            await publish_dm(
                bus,
                Channel.INSTAGRAM,
                IG,
                f"igsid-{n}",
                f"ig-down-{n}",
                "My parcel arrived damaged, I want a refund",
            )
        for n in range(3):
            item = await queued(stack, f"igsid-{n}", lambda i: i["team"] is not None)
            assert item["team"] is not None
            assert item["category"] is not None

        async def metrics() -> str:
            async with httpx.AsyncClient() as client:
                url = f"{stack.services['responder'].url}/metrics"
                return (await client.get(url)).text

        text = await eventually(
            metrics, lambda t: 'dmdesk_profile_fetches_total{channel="instagram"' in t
        )
        assert 'result="network"} 3.0' in text


JPEG = b"\xff\xd8\xff\xe0" + b"damaged parcel" * 100


async def test_an_image_is_readable_from_the_api_after_the_platform_url_has_gone(
    profile_stack: StackFactory, bus: NatsClient, graph: SendApiStub
) -> None:
    graph.files["parcel.jpg"] = (JPEG, "image/jpeg")
    graph.files["page.html"] = (b"<html></html>", "text/html")
    async with profile_stack(graph.base_url) as stack:
        await publish_dm(
            bus,
            Channel.INSTAGRAM,
            IG,
            "igsid-parcel",
            "ig-att-1",
            None,
            [
                Attachment(type="image", url=graph.cdn_url("parcel.jpg")),
                Attachment(type="file", url=graph.cdn_url("page.html")),
            ],
        )

        async def attachments() -> list[Any]:
            found = [
                i for i in await stack.queue() if i["contact"]["platform_id"] == "igsid-parcel"
            ]
            if not found:
                return []
            detail = await stack.conversation(found[0]["id"])
            return list(detail["messages"][0]["attachments"])

        image, page = await eventually(
            attachments, lambda items: len(items) == 2 and all("copy" in a for a in items)
        )
        del graph.files["parcel.jpg"]  # the platform's URL expires
        assert image["url"] == graph.cdn_url("parcel.jpg")
        assert image["copy"]["state"] == "stored"
        assert image["copy"]["size"] == len(JPEG)
        response = await stack.client.get(f"{stack.api_url}{image['copy']['url']}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content == JPEG
        assert page["copy"]["state"] == "refused"
        assert "text/html" in page["copy"]["reason"]
        anonymous = await httpx.AsyncClient().get(f"{stack.api_url}{image['copy']['url']}")
        assert anonymous.status_code == 401
