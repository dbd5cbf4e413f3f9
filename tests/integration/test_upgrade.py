"""A stack upgraded in place: the api deletes its retired durables once they hold nothing,
and those a durable of its succeeds once that one has started where they stopped.

The api service runs in-process on a real NATS server and a real database.
"""

from collections.abc import Callable

import nats
import pytest
from nats.js.errors import NotFoundError
from sqlalchemy import select
from sqlmodel import col

from services.api.app import build
from shared.events import Channel, RouteOutcome
from shared.models import MessageRow
from shared.service import service_app
from shared.settings import Settings
from shared.streams import (
    API_ROUTED,
    INBOUND_ALL,
    MSG_ID_HEADER,
    RETIRED_API_DURABLES,
    ROUTED_QUIET,
    Consumer,
    inbound_subject,
    provision,
)
from tests.events import generic_inbound, routed
from tests.stack import eventually


async def test_the_api_deletes_drained_retired_durables_and_keeps_one_still_holding_dms(
    settings_factory: Callable[..., Settings], database_url: str
) -> None:
    settings = settings_factory(database_url=database_url)
    drained = Consumer("api-handoff-v1", "dm.handoff", "v1: hand-offs")
    holding = Consumer("api-inbound-v1", INBOUND_ALL, "v1: inbound DMs")
    assert {drained.durable, holding.durable} <= set(RETIRED_API_DURABLES)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    try:
        await provision(js, settings, drained, holding)
        # A v1 DM the old api never projected: not drained, so not deleted.
        await js.publish(
            inbound_subject(Channel.GENERIC),
            generic_inbound("m-v1").model_dump_json().encode(),
            headers={MSG_ID_HEADER: "generic:m-v1"},
        )
        app = service_app(build(settings))
        async with app.router.lifespan_context(app):
            kept = await js.consumer_info(settings.stream_name, holding.durable)
            with pytest.raises(NotFoundError):
                await js.consumer_info(settings.stream_name, drained.durable)
    finally:
        await client.close()
    assert kept.num_pending == 1


async def test_api_routed_v2_starts_where_the_durables_it_succeeds_stopped_and_retires_them(
    settings_factory: Callable[..., Settings], database_url: str
) -> None:
    # A stack upgraded in place: the old api projected (acked) the first DM and not the
    # second. The new durable reads from the lowest ack floor of those it succeeds, so the
    # second DM is projected once and the first is not replayed; the old durables go.
    settings = settings_factory(database_url=database_url)
    old = [
        Consumer(durable, subject, "v1")
        for durable, subject in zip(API_ROUTED.succeeds, API_ROUTED.subjects, strict=True)
    ]
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    try:
        await provision(js, settings, *old)
        for mid in ("m-projected", "m-left"):
            event = routed(generic_inbound(mid, contact=mid), RouteOutcome.HANDOFF)
            await js.publish(
                ROUTED_QUIET, event.model_dump_json().encode(), headers={MSG_ID_HEADER: mid}
            )
        pulled = await js.pull_subscribe_bind(old[0].durable, stream=settings.stream_name)
        [first] = await pulled.fetch(1)
        await first.ack_sync()
        await pulled.unsubscribe()
        app = service_app(build(settings))
        async with app.router.lifespan_context(app):

            async def mids() -> list[str]:
                async with app.state.sessions() as session:
                    found = await session.execute(select(col(MessageRow.mid)))
                    return sorted(found.scalars())

            assert await eventually(mids, lambda found: found == ["m-left"]) == ["m-left"]
            info = await js.consumer_info(settings.stream_name, API_ROUTED.durable)
            for durable in API_ROUTED.succeeds:
                with pytest.raises(NotFoundError):
                    await js.consumer_info(settings.stream_name, durable)
    finally:
        await client.close()
    assert set(API_ROUTED.succeeds) <= set(RETIRED_API_DURABLES)
    assert info.config.opt_start_seq == 2
