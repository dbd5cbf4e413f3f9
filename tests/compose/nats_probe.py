"""Run inside a container on the compose network (``python - auth < nats_probe.py``).

``auth``: a client without credentials is refused; ingest's user cannot publish an
outbound request but can publish what ingest publishes.
``streams``: each JetStream stream's replicas and leader, from the nodes' /jsz.
Only the standard library and nats-py (both in the dmdesk image).
"""

import asyncio
import json
import os
import sys
import urllib.request

import nats
import nats.errors


async def auth() -> list[str]:
    failures: list[str] = []
    url = os.environ["PROBE_NATS_URL"]

    async def quiet(exc: Exception) -> None:
        pass

    try:
        client = await nats.connect(url, allow_reconnect=False, connect_timeout=5, error_cb=quiet)
    except Exception as exc:
        print(f"no credentials: refused ({type(exc).__name__}: {exc})")
    else:
        failures.append("a client without credentials was let in")
        await client.close()

    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    client = await nats.connect(
        url,
        user="ingest",
        password=os.environ["PROBE_INGEST_PASSWORD"],
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=5,
    )
    await client.publish("dm.raw.ci", b"{}")
    await client.flush(timeout=5)
    await asyncio.sleep(0.5)
    if errors:
        failures.append(f"ingest may not publish dm.raw.*: {errors}")
    await client.publish("dm.outbound.requested", b"{}")
    await client.flush(timeout=5)
    await asyncio.sleep(0.5)
    if not any(
        "permissions violation" in e.lower() and "dm.outbound.requested" in e for e in errors
    ):
        failures.append(f"ingest published dm.outbound.requested unrefused ({errors})")
    else:
        print(f"ingest publishing dm.outbound.requested: refused ({errors[-1]})")
    await client.close()
    return failures


def streams() -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for host in os.environ["PROBE_NATS_HOSTS"].split(","):
        try:
            with urllib.request.urlopen(
                f"http://{host}:8222/jsz?accounts=true&streams=true&config=true", timeout=5
            ) as response:
                jsz = json.load(response)
        except OSError:
            continue
        for account in jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                cluster = stream.get("cluster") or {}
                found[stream["name"]] = {
                    "replicas": stream["config"].get("num_replicas", 1),
                    "leader": cluster.get("leader", ""),
                    "messages": stream["state"]["messages"],
                }
    return found


def main() -> int:
    if sys.argv[1] == "auth":
        failures = asyncio.run(asyncio.wait_for(auth(), 60))
        for failure in failures:
            print(f"FAILED: {failure}")
        return 1 if failures else 0
    print(json.dumps(streams()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
