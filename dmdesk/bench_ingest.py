"""``dmdesk bench-ingest``: signed Meta webhooks per second, beside a bare FastAPI endpoint.

Starts an embedded nats-server, the ingest service (``python -m services.ingest``)
and a bare FastAPI app (one POST route that reads the body and answers 200) under
uvicorn on loopback, then posts a bounded number of signed Messenger webhooks of 1
and of 10 events to each, with the same client and concurrency, and reports
requests/s and p50/p99 latency. Every ingest request is stored in JetStream
(PubAck) before its 200, so the difference to the bare endpoint is the price of
verifying, normalising and storing.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request

from dmdesk.arguments import positive_int
from dmdesk.bench_api import percentile
from dmdesk.natsserver import NatsServer, free_port
from services.ingest.meta import sign

BENCH_SECRET = "bench-app-secret"  # noqa: S105 - signs loopback benchmark traffic only
PAGE_ID = "107380912345678"
CONTACTS = 200
READY_TIMEOUT_SECONDS = 60.0

bare_app = FastAPI(title="bare endpoint")


@bare_app.post("/bare")
async def bare(request: Request) -> dict[str, bool]:
    """Read the body and answer: the floor any endpoint pays."""
    await request.body()
    return {"ok": True}


def webhook_body(request_number: int, events: int) -> bytes:
    """A Messenger body of ``events`` text DMs, unique per request (nothing deduplicated)."""
    base_ms = 1_732_790_400_000 + request_number * 1_000
    messaging = [
        {
            "sender": {"id": str(6_000_000_000_000_000 + (request_number * events + i) % CONTACTS)},
            "recipient": {"id": PAGE_ID},
            "timestamp": base_ms + i,
            "message": {
                "mid": f"m_bench_{request_number}_{i}_{os.getpid()}_{time.time_ns()}",
                "text": "Hello, where is my order? It was due yesterday.",
            },
        }
        for i in range(events)
    ]
    body = {"object": "page", "entry": [{"id": PAGE_ID, "time": base_ms, "messaging": messaging}]}
    return json.dumps(body, separators=(",", ":")).encode()


async def measure(
    url: str, bodies: list[bytes], concurrency: int, *, signed: bool
) -> dict[str, float]:
    """POST every body (``concurrency`` in flight); requests/s and latency percentiles."""
    prepared = [
        (
            body,
            {"Content-Type": "application/json"}
            | ({"X-Hub-Signature-256": sign(body, BENCH_SECRET)} if signed else {}),
        )
        for body in bodies
    ]
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for item in prepared:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                body, headers = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{url} answered {response.status_code}: {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(bodies),
        "requests_per_s": round(len(bodies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
    }


def wait_ready(url: str) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {READY_TIMEOUT_SECONDS}s")


def run(requests: int, concurrency: int) -> dict[str, Any]:
    """Start NATS, ingest and the bare app on loopback; measure both; return the figures."""
    with tempfile.TemporaryDirectory(prefix="dmdesk-bench-ingest-") as tmp:
        workdir = Path(tmp)
        ingest_port, bare_port = free_port(), free_port()
        with NatsServer(workdir / "nats") as nats_server:
            env = os.environ | {
                "DMDESK_NATS_URL": nats_server.url,
                "DMDESK_INGEST_PORT": str(ingest_port),
                "DMDESK_HOST": "127.0.0.1",
                "DMDESK_META_APP_SECRET": BENCH_SECRET,
                "DMDESK_DATA_DIR": str(workdir / "data"),
                "DMDESK_LOG_LEVEL": "WARNING",
            }
            ingest = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env)
            bare_server = subprocess.Popen(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "dmdesk.bench_ingest:bare_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(bare_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                env=env,
            )
            try:
                wait_ready(f"http://127.0.0.1:{ingest_port}/readyz")
                wait_ready(f"http://127.0.0.1:{bare_port}/openapi.json")
                return asyncio.run(_measure_all(ingest_port, bare_port, requests, concurrency))
            finally:
                for process in (ingest, bare_server):
                    process.terminate()
                    process.wait(timeout=30)


async def _measure_all(
    ingest_port: int, bare_port: int, requests: int, concurrency: int
) -> dict[str, Any]:
    ingest_url = f"http://127.0.0.1:{ingest_port}/webhooks/messenger"
    bare_url = f"http://127.0.0.1:{bare_port}/bare"
    figures: dict[str, Any] = {"requests": requests, "concurrency": concurrency}
    serial = 0
    for events in (1, 10):
        warmup = [webhook_body(serial + i, events) for i in range(min(50, requests))]
        serial += len(warmup)
        await measure(ingest_url, warmup, concurrency, signed=True)
        await measure(bare_url, warmup, concurrency, signed=False)
        bodies = [webhook_body(serial + i, events) for i in range(requests)]
        serial += requests
        figures[f"bare_fastapi_{events}_event"] = await measure(
            bare_url, bodies, concurrency, signed=False
        )
        figures[f"ingest_webhook_{events}_event"] = await measure(
            ingest_url, bodies, concurrency, signed=True
        )
    return figures


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``dmdesk bench-ingest``."""
    bench = commands.add_parser(
        "bench-ingest", help="signed Meta webhooks/s and latency beside a bare FastAPI endpoint"
    )
    bench.add_argument(
        "--requests", type=positive_int, default=1000, help="requests per measurement"
    )
    bench.add_argument("--concurrency", type=positive_int, default=16, help="requests in flight")
    bench.set_defaults(
        handler=lambda args: print(json.dumps(run(args.requests, args.concurrency), indent=2)) or 0
    )
