"""Stop and restart PostgreSQL while DMs flow: ingest keeps accepting, the api catches up."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dmdesk.bench import SendApiStub
from tests.faults.conftest import PrivatePostgres, running_stack
from tests.faults.flow import SteadyFlow, assert_exactly_once, settled_ledger, summary

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]


# With DMDESK_MAX_DELIVERIES=5 a failing projection would be dead-lettered after about
# 7.5 s of back-off; a database outage must not count: the 12 s case outlasts that budget.
@pytest.mark.parametrize("outage", [pytest.param(5.0, id="5s"), pytest.param(12.0, id="12s")])
async def test_postgres_restarted_under_load_loses_and_doubles_nothing(
    outage: float,
    clean_nats: str,
    private_postgres: PrivatePostgres,
    tmp_path: Path,
    send_stub: SendApiStub,
    record_property: Any,
) -> None:
    async with running_stack(
        nats_url=clean_nats,
        database_url=private_postgres.url,
        workdir=tmp_path,
        stub=send_stub,
        # The production default: a projection is tried this often before it is dead-lettered.
        extra_env={"DMDESK_MAX_DELIVERIES": "5"},
    ) as stack:
        flow = SteadyFlow(stack.ingest_url, prefix="pgdown", rate=20)
        async with flow.running():
            await asyncio.sleep(2.0)
            await asyncio.to_thread(private_postgres.stop)
            await asyncio.sleep(outage)
            await asyncio.to_thread(private_postgres.start)
            await asyncio.sleep(3.0)
        found = await settled_ledger(stack.database_url, flow, within=45)
        record_property("counts", summary(flow, found, send_stub))
        print(summary(flow, found, send_stub))
        assert flow.failed_attempts == 0, "ingest refused DMs while only the database was down"
        assert_exactly_once(flow, found, send_stub)
