"""``dmdesk bench-projections``: what the api's writer costs per DM, without NATS.

Each DM of the run is projected as the api projects a routed DM: from its one
``dm.routed.*`` event (message, classification and hand-off to a team), a pull at a
time with the pull's prefetch, through the api's own
:class:`~services.api.writer.ProjectionWriter` (group commit on its own thread, a
blocking driver). Nothing else runs: no NATS, no HTTP, no change feed. The process's
CPU time per DM is therefore a floor under the api's cost per DM in ``dmdesk bench``:
the api's writer and its event loop share one GIL, so the api cannot pass
1 / (CPU per DM) DMs/s, whatever the rest of the stack does.
"""

import argparse
import asyncio
import functools
import json
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from dmdesk.arguments import positive_int
from services.api import projector
from services.api.writer import Group, Load, ProjectionWriter, Work, writer_sessions
from shared.db import create_engine, create_sync_engine, migrate
from shared.events import (
    Category,
    Channel,
    Classification,
    Contact,
    Handoff,
    InboundMessage,
    Priority,
    RoutedMessage,
    RouteOutcome,
    utcnow,
)
from shared.settings import Settings


def routed_dm(n: int, run: str) -> RoutedMessage:
    """The decision event of a DM from a new contact that the rules hand to a team."""
    message = InboundMessage(
        mid=f"m-{run}-{n}",
        channel=Channel.MESSENGER,
        account_id="page-1",
        contact=Contact(platform_id=f"{run}-{n}", name=f"Customer {n}"),
        text=f"Hi, where is my order {n}? It was due on Monday.",
        platform_ts=utcnow(),
    )
    classification = Classification(
        language="en",
        category=Category.ORDER_SHIPPING,
        confidence=0.9,
        priority=Priority.NORMAL,
        model_version="bench",
    )
    handoff = Handoff(
        conversation=message.conversation,
        trigger_mid=message.mid,
        team="shipping",
        priority=Priority.NORMAL,
        category=Category.ORDER_SHIPPING,
        reason="bench",
    )
    return RoutedMessage(
        message=message,
        classification=classification,
        classified_at=utcnow(),
        outcome=RouteOutcome.HANDOFF,
        handoff=handoff,
    )


async def _no_feed(_group: Group) -> None:
    """The change feed is not measured here."""


async def _project(writer: ProjectionWriter, events: Sequence[RoutedMessage], pull: int) -> None:
    """Hand the events to the writer a pull at a time (with the pull's prefetch), every
    pull at once, as a saturated consumer does; a failed projection fails the run."""

    def pulled(start: int) -> Awaitable[list[Exception | None]]:
        batch = list(events[start : start + pull])
        works: list[Work] = [
            functools.partial(projector.project_routed, routed=event) for event in batch
        ]
        return writer.apply_all(works, [Load(projector.prefetch_routed, batch)])

    outcomes = await asyncio.gather(*(pulled(start) for start in range(0, len(events), pull)))
    failures = [outcome for pulled in outcomes for outcome in pulled if outcome is not None]
    if failures:
        raise failures[0]


async def measure(database_url: str, dms: int, group: int) -> dict[str, Any]:
    """Project ``dms`` routed DMs in groups of ``group`` events; CPU and wall time per DM."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    sync_engine = create_sync_engine(database_url)
    writer = ProjectionWriter(writer_sessions(sync_engine), _no_feed, max_group=group)
    run = f"{time.time_ns():x}"
    events = [routed_dm(n, run) for n in range(dms)]
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        await _project(writer, events, Settings().pull_batch_size)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await writer.stop()
        sync_engine.dispose()
    return {
        "database": database_url.split(":", maxsplit=1)[0].split("+", maxsplit=1)[0],
        "dms": dms,
        "events_per_transaction": group,
        "cpu_ms_per_dm": round(cpu * 1000 / dms, 3),
        "wall_ms_per_dm": round(wall * 1000 / dms, 3),
        "dms_per_cpu_second": round(dms / cpu, 1),
    }


def run(database_url: str | None, dms: int, group: int) -> dict[str, Any]:
    """Measure on ``database_url``, or on a temporary SQLite file."""
    if database_url is not None:
        return asyncio.run(measure(database_url, dms, group))
    with tempfile.TemporaryDirectory(prefix="dmdesk-bench-projections-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        return asyncio.run(measure(url, dms, group))


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``dmdesk bench-projections``."""
    bench = commands.add_parser(
        "bench-projections", help="the api's projections of routed DMs, in process"
    )
    bench.add_argument("--dms", type=positive_int, default=2_000)
    bench.add_argument(
        "--group", type=positive_int, default=150, help="DMs per transaction at most"
    )
    bench.add_argument("--database-url", help="default: a temporary SQLite file")
    bench.set_defaults(
        handler=lambda args: (
            print(json.dumps(run(args.database_url, args.dms, args.group), indent=2)) or 0
        )
    )
