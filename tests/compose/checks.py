"""The compose test's checks against a running stack (deploy/ci/compose-test.sh calls them).

Every check talks only to ports published on 127.0.0.1: ingest's (signed Meta webhooks),
the api's (with an API key) and Prometheus's. Each exits non-zero with the reason.

    python -m tests.compose.checks post --count 20 --prefix single
    python -m tests.compose.checks queued --count 20 --prefix single
    python -m tests.compose.checks flow --seconds 30 --prefix flow   (a steady flow; prints N)
    python -m tests.compose.checks prometheus
"""

import argparse
import asyncio
import json
import os
import sys
import time
import zlib
from typing import Any

import httpx

from services.ingest.meta import sign
from shared.models import ConversationStatus

PAGE = "107380912345678"
WAIT_SECONDS = 120.0


class CheckFailedError(Exception):
    """A check of the running stack failed (the message says what was seen)."""


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise CheckFailedError(f"{name} is not set (run through deploy/ci/compose-test.sh)")
    return value


def psid(prefix: str, index: int) -> str:
    """A customer id of its own for each DM (one conversation each)."""
    return f"{zlib.crc32(prefix.encode()) % 10_000:04d}{index:08d}"


def mid(prefix: str, index: int) -> str:
    return f"m_ci_{prefix}_{index}"


def webhook(prefix: str, index: int, text: str = "What are your opening hours?") -> bytes:
    """A Messenger text webhook, as Meta sends it (tests/fixtures/meta/messenger_text.json)."""
    now = int(time.time() * 1000)
    body = {
        "object": "page",
        "entry": [
            {
                "id": PAGE,
                "time": now,
                "messaging": [
                    {
                        "sender": {"id": psid(prefix, index)},
                        "recipient": {"id": PAGE},
                        "timestamp": now,
                        "message": {
                            "mid": mid(prefix, index),
                            "text": text,
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(body).encode()


async def post(
    client: httpx.AsyncClient, prefix: str, index: int, text: str = "What are your opening hours?"
) -> None:
    raw = webhook(prefix, index, text)
    for _ in range(30):
        response = await client.post(
            f"{env('CI_INGEST_URL')}/webhooks/messenger",
            content=raw,
            headers={
                "X-Hub-Signature-256": sign(raw, env("DMDESK_META_APP_SECRET")),
                "Content-Type": "application/json",
            },
        )
        if response.status_code == 200:
            return
        if response.status_code != 503:  # 503: NATS unavailable, retry (deduplicated)
            raise CheckFailedError(f"webhook {index}: {response.status_code} {response.text}")
        await asyncio.sleep(1)
    raise CheckFailedError(f"webhook {index}: still 503 after 30 tries")


async def post_many(prefix: str, start: int, count: int) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for index in range(start, start + count):
            await post(client, prefix, index)


async def flow(prefix: str, seconds: float, rate: float) -> int:
    """Post DMs at ``rate`` per second for ``seconds``; the number posted."""
    posted = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=30) as client:
        while time.monotonic() < deadline:
            await post(client, prefix, posted)
            posted += 1
            await asyncio.sleep(1 / rate)
    return posted


def api_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=env("CI_API_URL"), headers={"X-API-Key": env("CI_API_KEY")}, timeout=30
    )


async def get(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """GET ``url``, waiting out the api's rate limit as its ``Retry-After`` asks."""
    while True:
        response = await client.get(url, **kwargs)
        if response.status_code != httpx.codes.TOO_MANY_REQUESTS:
            response.raise_for_status()
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


async def conversations(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every conversation in any status, following cursors."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200, "status": [s.value for s in ConversationStatus]}
    while True:
        page = (await get(client, "/v1/queue", params=params)).json()
        items += page["items"]
        if not page["next_cursor"]:
            return items
        params["cursor"] = page["next_cursor"]


async def detail(client: httpx.AsyncClient, conversation_id: int) -> dict[str, Any]:
    result: dict[str, Any] = (await get(client, f"/v1/conversations/{conversation_id}")).json()
    return result


async def queued(prefix: str, count: int, *, bot_replied: bool) -> None:
    """Each of the ``count`` DMs is in the api's queue exactly once (and was answered)."""
    wanted = {psid(prefix, index): mid(prefix, index) for index in range(count)}
    deadline = time.monotonic() + WAIT_SECONDS
    async with api_client() as client:
        while True:
            items = [
                i for i in await conversations(client) if i["contact"]["platform_id"] in wanted
            ]
            seen = {i["contact"]["platform_id"] for i in items}
            if len(seen) == count or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        if len(items) != count or len(seen) != count:
            raise CheckFailedError(
                f"{prefix}: {len(seen)} of {count} customers queued in {len(items)} conversations"
            )
        problems: list[str] = []
        for item in items:
            while True:
                conversation = await detail(client, item["id"])
                inbound = [m for m in conversation["messages"] if m["direction"] == "inbound"]
                bot = [m for m in conversation["messages"] if m.get("author") == "bot"]
                done = len(inbound) >= 1 and (bool(bot) or not bot_replied)
                if done or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            platform_id = item["contact"]["platform_id"]
            mids = [m["mid"] for m in inbound]
            if mids != [wanted[platform_id]]:
                problems.append(f"{platform_id}: inbound {mids}")
            if bot_replied and len(bot) != 1:
                problems.append(f"{platform_id}: {len(bot)} bot replies")
        if problems:
            raise CheckFailedError(f"{prefix}: " + "; ".join(problems[:10]))
    print(
        f"{prefix}: {count} DMs queued once each" + (", each answered once" if bot_replied else "")
    )


async def prometheus() -> None:
    """Prometheus scrapes every service (``up == 1``) and the SLA metrics have data."""
    url = env("CI_PROMETHEUS_URL")
    # The FAQ answers the flows' DMs and waiting on the customer pauses their clocks: one
    # DM handed to a person gives the SLA gauges a running deadline to report.
    async with httpx.AsyncClient(timeout=30) as ingest:
        await post(ingest, "sla", 0, "I want to talk to a human please")
    deadline = time.monotonic() + WAIT_SECONDS
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def query(expr: str) -> list[dict[str, Any]]:
            response = await client.get("/api/v1/query", params={"query": expr})
            response.raise_for_status()
            result: list[dict[str, Any]] = response.json()["data"]["result"]
            return result

        while True:
            up = {r["metric"]["service"]: r["value"][1] for r in await query('up{job="dmdesk"}')}
            sla = await query('{__name__=~"dmdesk_sla_.+|dmdesk_first_response_seconds_count"}')
            healthy = set(up) == {"api", "ingest", "classifier", "responder"} and all(
                value == "1" for value in up.values()
            )
            # A rule reads "unknown" until its group's first evaluation (evaluation_interval
            # after Prometheus starts): wait for a verdict on every rule, not just for one.
            response = await client.get("/api/v1/rules")
            response.raise_for_status()
            health = {
                f"{g['name']}/{r['name']}": r.get("health")
                for g in response.json()["data"]["groups"]
                for r in g["rules"]
            }
            evaluated = all(value != "unknown" for value in health.values())
            if (healthy and sla and evaluated) or time.monotonic() > deadline:
                break
            await asyncio.sleep(2)
        if not healthy:
            raise CheckFailedError(f"prometheus: up = {up}")
        if not sla:
            raise CheckFailedError("prometheus: no SLA series")
        if not health:
            raise CheckFailedError("prometheus: no alerting or recording rules loaded")
        unhealthy = sorted(name for name, value in health.items() if value != "ok")
        if unhealthy:
            raise CheckFailedError(f"prometheus: rules not healthy: {unhealthy}")
    print(f"prometheus: {len(up)} of 4 services up, {len(sla)} SLA series, {len(health)} rules ok")


async def drained() -> None:
    """Every consumer has delivered everything (the step before leaving a single node)."""
    expr = "max(dmdesk_consumer_pending_messages + dmdesk_consumer_ack_pending_messages)"
    deadline = time.monotonic() + WAIT_SECONDS
    async with httpx.AsyncClient(base_url=env("CI_PROMETHEUS_URL"), timeout=10) as client:
        while True:
            response = await client.get("/api/v1/query", params={"query": expr})
            response.raise_for_status()
            result = response.json()["data"]["result"]
            left = float(result[0]["value"][1]) if result else None
            if left == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(2)
    if left != 0:
        raise CheckFailedError(f"consumers still have {left} messages to deliver")
    print("drained: no consumer has anything pending")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.compose.checks")
    commands = parser.add_subparsers(dest="command", required=True)
    post_cmd = commands.add_parser("post", help="post signed webhooks")
    post_cmd.add_argument("--prefix", required=True)
    post_cmd.add_argument("--start", type=int, default=0)
    post_cmd.add_argument("--count", type=int, required=True)
    queued_cmd = commands.add_parser("queued", help="each DM queued once")
    queued_cmd.add_argument("--prefix", required=True)
    queued_cmd.add_argument("--count", type=int, required=True)
    queued_cmd.add_argument("--bot-replied", action="store_true")
    flow_cmd = commands.add_parser("flow", help="a steady flow of DMs; prints how many")
    flow_cmd.add_argument("--prefix", required=True)
    flow_cmd.add_argument("--seconds", type=float, required=True)
    flow_cmd.add_argument("--rate", type=float, default=5)
    commands.add_parser("prometheus", help="every service scraped, SLA series present")
    commands.add_parser("drained", help="no consumer has anything pending")
    args = parser.parse_args(argv)
    try:
        if args.command == "post":
            asyncio.run(post_many(args.prefix, args.start, args.count))
        elif args.command == "queued":
            asyncio.run(queued(args.prefix, args.count, bot_replied=args.bot_replied))
        elif args.command == "flow":
            print(asyncio.run(flow(args.prefix, args.seconds, args.rate)))
        elif args.command == "drained":
            asyncio.run(drained())
        else:
            asyncio.run(prometheus())
    except (CheckFailedError, httpx.HTTPError) as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
