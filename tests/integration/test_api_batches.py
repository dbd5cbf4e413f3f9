"""The api projects each pull as one batch, yet settles every message of it on its own,
and a reply's result after the DM that asked for it.

The api service runs in-process on a real NATS server and a real database.
"""

import threading
from collections import Counter
from collections.abc import Callable

import nats
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy import event as sqlalchemy_event
from sqlmodel import col

from services.api import projector
from services.api.app import build
from services.api.metrics import ApiMetrics
from shared.events import (
    DeadLetter,
    RoutedMessage,
    RouteOutcome,
)
from shared.models import MessageRow
from shared.service import service_app
from shared.settings import Settings
from shared.streams import (
    API_ROUTED,
    MSG_ID_HEADER,
    OUTBOUND_RESULT,
    ROUTED_QUIET,
    ROUTED_REPLY,
    provision,
)
from tests.events import generic_inbound, routed, sent_result
from tests.stack import eventually, stored

GOOD = 30


def decision(mid: str) -> bytes:
    message = generic_inbound(mid, contact=f"contact-{mid}")
    return routed(message, RouteOutcome.HANDOFF).model_dump_json().encode()


async def test_one_pull_commits_its_good_messages_and_settles_each_bad_one_alone(
    settings_factory: Callable[..., Settings],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures: Counter[str] = Counter()
    project_routed = projector.project_routed

    def projection(session: object, event: RoutedMessage, metrics: ApiMetrics) -> None:
        if event.message.mid == "broken":
            raise RuntimeError("projection exploded")
        if event.message.mid == "flaky" and not failures["flaky"]:
            failures["flaky"] += 1
            raise RuntimeError("fails the first time")
        project_routed(session, event, metrics)  # type: ignore[arg-type]

    monkeypatch.setattr(projector, "project_routed", projection)
    settings = settings_factory(database_url=database_url, max_deliveries=3)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    try:
        # Everything is stored before the api starts, so its first pull holds all of it.
        await provision(js, settings, API_ROUTED)
        subject = ROUTED_QUIET
        mids = [f"good-{index}" for index in range(GOOD)]
        for mid in [*mids[:10], "broken", *mids[10:20], "flaky", *mids[20:]]:
            await js.publish(subject, decision(mid), headers={MSG_ID_HEADER: mid})
        await js.publish(subject, b"not json at all")

        app = service_app(build(settings))
        async with app.router.lifespan_context(app):

            async def stored_messages() -> int:
                async with app.state.sessions() as session:
                    count = await session.scalar(select(func.count(col(MessageRow.id))))
                    return int(count or 0)

            await eventually(stored_messages, lambda count: count == GOOD + 1)
            letters = await eventually(
                lambda: stored(js, "dm.dlq.api", settings.stream_name),
                lambda found: len(found) == 2,
            )
            # A dead letter is stored before its message is acked: wait for the acks.
            info = await eventually(
                lambda: js.consumer_info(settings.stream_name, API_ROUTED.durable),
                lambda found: (found.num_ack_pending, found.num_pending) == (0, 0),
            )
            registry = app.state.metrics.registry
            counted = [
                registry.get_sample_value(f"dmdesk_{name}_total", {"event": "RoutedMessage"})
                for name in ("projected_events", "projection_failures")
            ]
    finally:
        await client.close()

    # Each of the 33 messages was delivered once, then "flaky" once more and "broken"
    # twice more: the good messages were acked with the batch, not redelivered with it.
    assert info.delivered.consumer_seq == GOOD + 3 + 1 + 2
    assert (info.num_ack_pending, info.num_pending) == (0, 0)
    # Projected: the good ones and "flaky"; failed: "flaky" once, "broken" three times and
    # the body that does not validate once.
    assert counted == [GOOD + 1, 5]
    bad_body, broken = sorted(
        (DeadLetter.model_validate_json(letter) for letter in letters),
        key=lambda letter: letter.deliveries,
    )
    assert (bad_body.error_type, bad_body.deliveries) == ("ValidationError", 1)
    assert bad_body.original == "not json at all"
    assert (broken.error_type, broken.error, broken.deliveries) == (
        "RuntimeError",
        "projection exploded",
        3,
    )
    assert RoutedMessage.model_validate_json(broken.original).message.mid == "broken"


async def test_a_pull_of_dms_and_their_results_projects_each_result_after_its_dm(
    settings_factory: Callable[..., Settings], database_url: str
) -> None:
    # One durable reads the decisions and the Send API's results in stream order, so a
    # result never comes before its DM: the pull's replies are stored by its decisions'
    # prefetch and its results written set-based (one UPDATE), none stored from a result.
    settings = settings_factory(database_url=database_url)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    mids = [f"bot-{index}" for index in range(10)]
    try:
        await provision(js, settings, API_ROUTED)
        for mid in mids:
            event = routed(generic_inbound(mid, contact=f"contact-{mid}"), RouteOutcome.BOT)
            result = sent_result(event, f"sent-{mid}")
            await js.publish(
                ROUTED_REPLY, event.model_dump_json().encode(), headers={MSG_ID_HEADER: mid}
            )
            await js.publish(
                OUTBOUND_RESULT,
                result.model_dump_json().encode(),
                headers={MSG_ID_HEADER: f"result:{result.request_id}"},
            )
        seen: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            # The writer's statements (its own thread), not the migrations'.
            on_writer = threading.current_thread().name.startswith("projection-writer")
            if on_writer and statement.startswith(("INSERT INTO messages", "UPDATE messages")):
                seen.append(" ".join(statement.split()[:3]))

        sqlalchemy_event.listen(Engine, "before_cursor_execute", count)
        app = service_app(build(settings))
        try:
            async with app.router.lifespan_context(app):

                async def replies() -> list[str]:
                    async with app.state.sessions() as session:
                        found = await session.execute(
                            select(col(MessageRow.mid)).where(
                                col(MessageRow.author) == "bot", col(MessageRow.status) == "sent"
                            )
                        )
                        return sorted(found.scalars())

                await eventually(replies, lambda found: len(found) == len(mids))
                info = await js.consumer_info(settings.stream_name, API_ROUTED.durable)
        finally:
            sqlalchemy_event.remove(Engine, "before_cursor_execute", count)
    finally:
        await client.close()
    assert info.delivered.consumer_seq == 2 * len(mids), "one pull, nothing redelivered"
    # The customers' DMs and the replies: one multi-row INSERT each; the results: one UPDATE.
    assert Counter(seen) == {"INSERT INTO messages": 2, "UPDATE messages SET": 1}
