"""A three-node NATS cluster on loopback loses the stream leader under load."""

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest

from dmdesk.bench import SendApiStub
from shared.settings import Settings
from tests.cluster import NODES, jetstream_ready, loopback_cluster
from tests.faults.conftest import running_stack
from tests.faults.flow import SteadyFlow, assert_exactly_once, settled_ledger, summary
from tests.stack import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def stream_leader(urls: list[str]) -> str | None:
    """The server name leading the dmdesk stream, once it has a leader and all replicas."""
    try:
        client = await nats.connect(urls, connect_timeout=1, max_reconnect_attempts=1)
    except Exception:
        return None
    try:
        info = await client.jetstream(timeout=2).stream_info(Settings().stream_name)
    except Exception:
        return None
    finally:
        await client.close()
    cluster = info.cluster
    if cluster is None or len(cluster.replicas or []) != NODES - 1:
        return None
    return cluster.leader


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_stream_leader_killed_under_load_loses_and_doubles_nothing(
    database_url: str,
    tmp_path: Path,
    send_stub: SendApiStub,
    record_property: Any,
) -> None:
    with loopback_cluster(tmp_path, "dmdesk-faults") as servers:
        urls = [server.url for server in servers.values()]
        assert await eventually(lambda: jetstream_ready(urls[0]), bool, timeout=30)
        async with running_stack(
            nats_url=",".join(urls),
            database_url=database_url,
            workdir=tmp_path,
            stub=send_stub,
            extra_env={"DMDESK_STREAM_REPLICAS": str(NODES)},
        ) as stack:
            leader = await eventually(lambda: stream_leader(urls), bool, timeout=30)
            assert leader in servers, f"no replicated stream leader: {leader}"
            flow = SteadyFlow(stack.ingest_url, prefix="leader", rate=20)
            async with flow.running():
                await asyncio.sleep(2.0)
                await asyncio.to_thread(servers[leader].stop, kill=True)
                await asyncio.sleep(6.0)  # a new leader is elected; clients reconnect
                await asyncio.to_thread(servers[leader].start)
                await asyncio.sleep(3.0)
            found = await settled_ledger(stack.database_url, flow)
            record_property("killed_leader", leader)
            record_property("counts", summary(flow, found, send_stub))
            print(leader, summary(flow, found, send_stub))
            assert_exactly_once(flow, found, send_stub)
