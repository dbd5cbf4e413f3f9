"""``dmdesk bench-api``: the queue and /metrics with many open conversations.

Seeds N conversations (default 100,000) straight into the database, starts the
api as a real process against an embedded nats-server, and times, over HTTP on
loopback: ``GET /v1/queue`` (first page, a filtered page, deep cursor pages),
``GET /metrics``, and ``GET /healthz`` as the baseline of the same server in the
same run. It also times the queue-gauge refresh (the SQL behind /metrics).
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from sqlalchemy import insert

from dmdesk.arguments import positive_int
from dmdesk.natsserver import NatsServer, free_port
from services.api.auth import create_key
from services.api.metrics import ApiMetrics
from shared.db import create_engine, migrate, session_factory, transaction
from shared.events import Priority, utcnow
from shared.models import NO_DEADLINE, ContactRow, ConversationRow, Scope

TEAMS = ("support", "billing", "complaints", "vip", "shipping")
STATUSES = ("open", "open", "open", "pending", "waiting", "snoozed")
SEED_BATCH = 5_000


async def seed(database_url: str, conversations: int) -> str:
    """Insert ``conversations`` open conversations; return an admin API key."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        sessions = session_factory(engine)
        now = utcnow()
        rng = random.Random(7)  # noqa: S311 - reproducible test data, not secrets
        for start in range(0, conversations, SEED_BATCH):
            count = min(SEED_BATCH, conversations - start)
            async with transaction(sessions) as session:
                await session.execute(
                    insert(ContactRow),
                    [
                        {
                            "channel": "messenger",
                            "platform_id": f"bench-{start + i}",
                            "name": f"Customer {start + i}",
                            "tags": [],
                            "vip": False,
                            "created_at": now,
                        }
                        for i in range(count)
                    ],
                )
            async with transaction(sessions) as session:
                rows = []
                for i in range(count):
                    priority = rng.choice(list(Priority))
                    waited = timedelta(minutes=rng.randint(0, 600))
                    due = now - waited + timedelta(hours=4) if rng.random() < 0.9 else None
                    rows.append(
                        {
                            "channel": "messenger",
                            "account_id": "page",
                            "contact_id": start + i + 1,
                            "status": rng.choice(STATUSES),
                            "team": rng.choice(TEAMS),
                            "priority": priority.value,
                            "priority_rank": priority.rank,
                            "category": "inquiry",
                            "is_request": False,
                            "tags": [],
                            "created_at": now - waited,
                            "updated_at": now,
                            "last_message_at": now - waited,
                            "last_customer_message_at": now - waited,
                            "sla_due_at": due,
                            "queue_due_at": due or NO_DEADLINE,
                        }
                    )
                await session.execute(insert(ConversationRow), rows)
        metrics = ApiMetrics(CollectorRegistry())
        async with transaction(sessions) as session:
            key = (await create_key(session, "bench", Scope.ADMIN)).secret
        started = time.perf_counter()
        for _ in range(5):
            async with sessions() as session:
                await metrics.refresh_queue_gauges(session, utcnow())
        gauge_ms = (time.perf_counter() - started) / 5 * 1000
        print(f"queue gauge refresh (SQL behind /metrics): {gauge_ms:.1f} ms")
        return key
    finally:
        await engine.dispose()


def percentile(samples: list[float], share: float) -> float:
    """The ``share`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(client: httpx.Client, path: str, requests: int, **params: Any) -> dict[str, float]:
    """p50/p99/mean in ms of ``requests`` sequential GETs of ``path``."""
    client.get(path, params=params).raise_for_status()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(percentile(samples, 0.99), 2),
        "mean_ms": round(statistics.fmean(samples), 2),
    }


def deep_pages(client: httpx.Client, pages: int) -> dict[str, float]:
    """Follow the cursor ``pages`` pages deep, timing each page."""
    samples, cursor = [], None
    for _ in range(pages):
        params: dict[str, Any] = {"limit": 50} | ({"cursor": cursor} if cursor else {})
        started = time.perf_counter()
        page = client.get("/v1/queue", params=params).raise_for_status().json()
        samples.append((time.perf_counter() - started) * 1000)
        cursor = page["next_cursor"]
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(percentile(samples, 0.99), 2),
    }


def run(conversations: int, database_url: str | None, requests: int) -> dict[str, Any]:
    """Seed, start the api, measure; return the figures."""
    with tempfile.TemporaryDirectory(prefix="dmdesk-bench-") as tmp:
        workdir = Path(tmp)
        url = database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        started = time.perf_counter()
        key = asyncio.run(seed(url, conversations))
        print(f"seeded {conversations} conversations in {time.perf_counter() - started:.1f} s")
        port = free_port()
        with NatsServer(workdir / "nats") as nats_server:
            env = os.environ | {
                "DMDESK_NATS_URL": nats_server.url,
                "DMDESK_DATABASE_URL": url,
                "DMDESK_API_PORT": str(port),
                "DMDESK_LOG_LEVEL": "WARNING",
            }
            api = subprocess.Popen([sys.executable, "-m", "services.api"], env=env)
            try:
                base = f"http://127.0.0.1:{port}"
                with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        try:
                            if client.get("/readyz").status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        time.sleep(0.2)
                    time.sleep(6)  # the gauges' first background refresh
                    figures = {
                        "conversations": conversations,
                        "database": url.split("+")[0].split(":")[0],
                        "healthz_baseline": timed(client, "/healthz", requests),
                        "queue_first_page": timed(client, "/v1/queue", requests, limit=50),
                        "queue_team_filtered": timed(
                            client, "/v1/queue", requests, team="billing", priority="high"
                        ),
                        "queue_deep_cursor_pages": deep_pages(client, min(requests, 100)),
                        "metrics_scrape": timed(client, "/metrics", requests),
                    }
            finally:
                api.terminate()
                api.wait(timeout=30)
    return figures


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``dmdesk bench-api``."""
    bench = commands.add_parser("bench-api", help="time the queue and /metrics at scale")
    bench.add_argument("--conversations", type=positive_int, default=100_000)
    bench.add_argument("--database-url", help="default: a temporary SQLite file")
    bench.add_argument(
        "--requests", type=positive_int, default=300, help="requests per measurement"
    )
    bench.set_defaults(
        handler=lambda args: (
            print(json.dumps(run(args.conversations, args.database_url, args.requests), indent=2))
            or 0
        )
    )
