"""A stack upgraded in place: the api deletes its retired durables once they hold nothing.

The api service runs in-process on a real NATS server and a real database.
"""

from collections.abc import Callable

import nats
import pytest
from nats.js.errors import NotFoundError

from services.api.app import build
from shared.events import Channel
from shared.service import service_app
from shared.settings import Settings
from shared.streams import (
    INBOUND_ALL,
    MSG_ID_HEADER,
    RETIRED_API_DURABLES,
    Consumer,
    inbound_subject,
    provision,
)
from tests.events import generic_inbound


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
