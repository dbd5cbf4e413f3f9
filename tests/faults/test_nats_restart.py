"""Stop and restart NATS (file storage, same port and store) while DMs flow."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dmdesk.bench import SendApiStub
from dmdesk.natsserver import NatsServer
from tests.faults.conftest import running_stack
from tests.faults.flow import SteadyFlow, assert_exactly_once, settled_ledger, summary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_nats_restarted_under_load_loses_and_doubles_nothing(
    kill: bool,
    database_url: str,
    tmp_path: Path,
    send_stub: SendApiStub,
    record_property: Any,
) -> None:
    server = NatsServer(tmp_path / "nats-store", log_file=tmp_path / "nats-server.log")
    server.start()
    try:
        async with running_stack(
            nats_url=server.url,
            database_url=database_url,
            workdir=tmp_path,
            stub=send_stub,
        ) as stack:
            flow = SteadyFlow(stack.ingest_url, prefix="natsdown", rate=20)
            async with flow.running():
                await asyncio.sleep(2.0)
                await asyncio.to_thread(server.stop, kill=kill)
                await asyncio.sleep(3.0)
                await asyncio.to_thread(server.start)
                await asyncio.sleep(4.0)
            found = await settled_ledger(stack.database_url, flow)
            record_property("counts", summary(flow, found, send_stub))
            print(summary(flow, found, send_stub))
            assert_exactly_once(flow, found, send_stub)
    finally:
        server.stop()
