"""Attachments copied from the stand-in's CDN into a real NATS object store, and projected."""

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime

import aiohttp
import nats
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dmdesk.natsserver import free_port
from services.api import projector
from services.responder.attachments import AttachmentCopier
from shared import streams
from shared.bus import RetryLater
from shared.db import transaction
from shared.events import (
    Attachment,
    AttachmentCopyState,
    Channel,
    Contact,
    InboundMessage,
)
from shared.models import MessageRow
from shared.settings import Settings
from tests.unit.responder.sendapi_stub import SendApiStub


@pytest.fixture
def cdn() -> Iterator[SendApiStub]:
    with SendApiStub({}) as stub:
        yield stub


@pytest.fixture
async def copier(
    settings_factory: Callable[..., Settings],
) -> AsyncIterator[AttachmentCopier]:
    settings = settings_factory(
        attachment_max_bytes=1000, attachment_max_attempts=2, send_backoff_seconds=0.01
    )
    client = await nats.connect(settings.nats_url)
    store = await streams.bind_object_store(
        client.jetstream(), streams.attachments_store_config(settings)
    )
    async with aiohttp.ClientSession() as http:
        yield AttachmentCopier(lambda: http, store, settings)
    await client.close()


def dm(*urls: str, mid: str = "m-1") -> InboundMessage:
    return InboundMessage(
        mid=mid,
        channel=Channel.MESSENGER,
        account_id="page-1",
        contact=Contact(platform_id="psid-1"),
        attachments=[Attachment(type="image", url=url) for url in urls],
        platform_ts=datetime(2026, 12, 4, tzinfo=UTC),
    )


async def test_images_are_stored_and_the_limits_refuse_the_rest(
    copier: AttachmentCopier, cdn: SendApiStub
) -> None:
    cdn.files["ok.png"] = (b"\x89PNG" + b"x" * 100, "image/png")
    cdn.files["big.jpg"] = (b"x" * 1001, "image/jpeg")
    cdn.files["script.js"] = (b"alert(1)", "application/javascript")
    outcomes = await copier.copy_all(
        dm(
            cdn.cdn_url("ok.png"),
            cdn.cdn_url("big.jpg"),
            cdn.cdn_url("script.js"),
            cdn.cdn_url("gone.jpg"),
        )
    )
    assert [o.state for o in outcomes] == [
        AttachmentCopyState.STORED,
        AttachmentCopyState.REFUSED,
        AttachmentCopyState.REFUSED,
        AttachmentCopyState.REFUSED,
    ]
    assert outcomes[0].object_name is not None
    stored = await copier.store.get(outcomes[0].object_name)
    assert stored.data == cdn.files["ok.png"][0]
    assert "larger than 1000" in (outcomes[1].reason or "")
    assert "application/javascript" in (outcomes[2].reason or "")
    assert "404" in (outcomes[3].reason or "")


async def test_a_copy_is_made_once(copier: AttachmentCopier, cdn: SendApiStub) -> None:
    cdn.files["ok.png"] = (b"\x89PNG", "image/png")
    [first] = await copier.copy_all(dm(cdn.cdn_url("ok.png")))
    del cdn.files["ok.png"]
    [again] = await copier.copy_all(dm(cdn.cdn_url("ok.png")))  # a redelivered DM
    assert again.state == AttachmentCopyState.STORED
    assert again.object_name == first.object_name


async def test_an_unreachable_url_is_retried_then_recorded_as_failed(
    copier: AttachmentCopier,
) -> None:
    [outcome] = await copier.copy_all(dm(f"http://127.0.0.1:{free_port()}/x.jpg"))
    assert outcome.state == AttachmentCopyState.FAILED
    assert outcome.reason == "download failed: ClientConnectorError"


async def test_the_copy_is_noted_on_its_message_keeping_the_original_url(
    sessions: async_sessionmaker[AsyncSession], copier: AttachmentCopier, cdn: SendApiStub
) -> None:
    cdn.files["ok.png"] = (b"\x89PNG", "image/png")
    message = dm(cdn.cdn_url("ok.png"))
    [copied] = await copier.copy_all(message)
    async with transaction(sessions) as session:
        with pytest.raises(RetryLater):
            await session.run_sync(projector.project_attachment, copied)
    async with transaction(sessions) as session:
        await session.run_sync(projector.project_inbound, message)
        await session.run_sync(projector.project_attachment, copied)
    async with sessions() as session:
        [attachment] = (await session.execute(select(MessageRow))).scalar_one().attachments
    assert attachment["url"] == cdn.cdn_url("ok.png")
    assert attachment["copy"]["url"] == f"/v1/attachments/{copied.object_name}"
    assert attachment["copy"]["content_type"] == "image/png"
