"""SIGKILL each service in turn while DMs flow: nothing lost, nothing doubled."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dmdesk.bench import SendApiStub
from tests.faults.conftest import running_stack
from tests.faults.flow import SteadyFlow, assert_exactly_once, settled_ledger, summary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KILL_ORDER = ("ingest", "classifier", "responder", "api")


async def test_each_service_killed_in_turn_under_load_loses_and_doubles_nothing(
    clean_nats: str,
    database_url: str,
    tmp_path: Path,
    send_stub: SendApiStub,
    record_property: Any,
) -> None:
    async with running_stack(
        nats_url=clean_nats, database_url=database_url, workdir=tmp_path, stub=send_stub
    ) as stack:
        flow = SteadyFlow(stack.ingest_url, prefix="kill", rate=20)
        async with flow.running():
            await asyncio.sleep(1.5)
            for name in KILL_ORDER:
                await stack.services[name].kill()
                await asyncio.sleep(2.0)  # DMs keep coming; ingest's are retried
                await stack.restart(name)
                await asyncio.sleep(1.0)
        found = await settled_ledger(stack.database_url, flow)
        record_property("counts", summary(flow, found, send_stub))
        print(summary(flow, found, send_stub))
        assert flow.failed_attempts > 0, "no webhook failed while ingest was down: not a fault"
        assert_exactly_once(flow, found, send_stub)
