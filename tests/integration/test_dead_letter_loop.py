"""A projection that always fails leaves one dead letter per message, and no dead letter of one.

Seen on a PostgreSQL database in SQL_ASCII: the writer raised a TypeError for every
event, dead letters went through the same writer, failed, and were dead-lettered again,
for ever. The api service runs in-process on a real NATS server and a real database.
"""

import asyncio
from collections.abc import Callable, Sequence

import nats
import pytest
from sqlalchemy import select

from services.api import projector
from services.api.app import build
from services.api.writer import Outcome, ProjectionWriter, Work
from shared.events import RouteOutcome
from shared.models import DeadLetterRow
from shared.service import service_app
from shared.settings import Settings
from shared.streams import MSG_ID_HEADER, ROUTED_QUIET
from tests.events import generic_inbound, routed
from tests.stack import eventually, stored

MIDS = ("m-1", "m-2")


async def broken_writer(
    self: ProjectionWriter, works: Sequence[Work], prefetch: Work | None = None, *, order: int = 0
) -> list[Outcome]:
    return [TypeError("cannot use a string pattern on a bytes-like object") for _ in works]


async def run_api_on_failing_projections(
    settings: Settings,
) -> tuple[list[DeadLetterRow], list[bytes], list[bytes], dict[str, float | None]]:
    """Publish two routed DMs to an api whose projections fail; what it recorded and stored."""
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    app = service_app(build(settings))
    try:
        async with app.router.lifespan_context(app):
            for mid in MIDS:
                decision = routed(generic_inbound(mid), RouteOutcome.IGNORED)
                await js.publish(
                    ROUTED_QUIET,
                    decision.model_dump_json().encode(),
                    headers={MSG_ID_HEADER: mid},
                )
            letters = await eventually(
                lambda: stored(js, "dm.dlq.>", settings.stream_name),
                lambda found: len(found) >= len(MIDS),
                timeout=30,
            )
            # Long enough for several more rounds of the old loop (back-off 0.5 s, 1 s...).
            await asyncio.sleep(4)
            later = await stored(js, "dm.dlq.>", settings.stream_name)
            async with app.state.sessions() as session:
                rows = list((await session.scalars(select(DeadLetterRow))).all())
            registry = app.state.metrics.registry
            counted = {
                name: registry.get_sample_value(f"dmdesk_{name}_total", {"event": "DeadLetter"})
                for name in ("projected_events", "projection_failures")
            }
    finally:
        await client.close()
    return rows, letters, later, counted


async def test_a_writer_that_always_fails_leaves_one_recorded_dead_letter_per_message(
    settings_factory: Callable[..., Settings],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ProjectionWriter, "apply_all", broken_writer)
    settings = settings_factory(database_url=database_url, max_deliveries=2)

    rows, letters, later, counted = await run_api_on_failing_projections(settings)

    assert len(letters) == len(later) == len(MIDS)
    assert sorted(row.subject for row in rows) == [ROUTED_QUIET] * len(MIDS)
    assert {(row.stage, row.error_type) for row in rows} == {("api", "TypeError")}
    assert counted["projected_events"] == len(MIDS)


async def test_a_dead_letter_that_cannot_be_recorded_stays_in_the_stream_and_is_counted(
    settings_factory: Callable[..., Settings],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unrecordable(*_args: object) -> None:
        raise TypeError("cannot use a string pattern on a bytes-like object")

    monkeypatch.setattr(ProjectionWriter, "apply_all", broken_writer)
    monkeypatch.setattr(projector, "project_dead_letter", unrecordable)
    settings = settings_factory(database_url=database_url, max_deliveries=2)

    rows, letters, later, counted = await run_api_on_failing_projections(settings)

    assert len(letters) == len(later) == len(MIDS)
    assert rows == []
    assert (counted["projection_failures"] or 0) >= len(MIDS)
