"""A three-node NATS cluster on loopback, for the cluster e2e and fault tests."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import nats
from nats.js.errors import Error as JetStreamError

from dmdesk.natsserver import NatsServer, free_port

NODES = 3


@contextlib.contextmanager
def loopback_cluster(workdir: Path, name: str) -> Iterator[dict[str, NatsServer]]:
    """Three routed JetStream nodes (cluster ``name``, each its own store), by server name."""
    route_ports = [free_port() for _ in range(NODES)]
    routes = ",".join(f"nats-route://127.0.0.1:{port}" for port in route_ports)
    servers = {
        f"node-{i}": NatsServer(
            workdir / f"node-{i}",
            log_file=workdir / f"node-{i}.log",
            extra_args=(
                *("--server_name", f"node-{i}", "--cluster_name", name),
                *("--cluster", f"nats://127.0.0.1:{port}", "--routes", routes),
            ),
        )
        for i, port in enumerate(route_ports)
    }
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


async def jetstream_ready(url: str) -> bool:
    """Whether the cluster elected a JetStream meta leader (account info answers)."""
    try:
        client = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
    except Exception:
        return False
    try:
        await client.jetstream(timeout=1).account_info()
    except (JetStreamError, nats.errors.Error, TimeoutError):
        return False
    finally:
        await client.close()
    return True
