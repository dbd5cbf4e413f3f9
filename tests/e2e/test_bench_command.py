"""`dmdesk bench --json`: the figures issue #8 asks for, from a short run of the whole stack."""

import asyncio
import json
import os
import subprocess
import sys

import pytest

from tests.stack import META_APP_SECRET, Stack

pytestmark = pytest.mark.e2e

SERVICES = {"api", "ingest", "classifier", "responder"}


def test_a_short_benchmark_prints_one_json_object_with_every_figure() -> None:
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "dmdesk",
            "bench",
            "--rate=20",
            "--duration=1",
            "--burst=50",
            "--raw-messages=200",
            "--raw-paced-seconds=1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-4000:]
    figures = json.loads(finished.stdout)  # one object, nothing else on stdout

    assert figures["offered_rate"] == 20
    assert figures["offered"]["accepted"] == figures["offered"]["dms"] == 20
    assert figures["saturation"]["routed"] == 50, "every DM of the saturation phase is routed"
    assert figures["e2e_dms_per_s"] > 0
    assert figures["raw_jetstream_msgs_per_s"] > 0
    assert figures["ratio"] == pytest.approx(
        figures["e2e_dms_per_s"] / figures["raw_jetstream_msgs_per_s"], abs=0.001
    )
    # The raw baselines' CPU per message, in bulk and at the offered pace (one hop each).
    raw, paced = figures["raw_jetstream"], figures["raw_paced"]
    for baseline in (raw, paced):
        assert baseline["client_cpu_us_per_msg"] > 0
        assert baseline["server_cpu_us_per_msg"] >= 0
        assert baseline["cpu_us_per_msg"] == pytest.approx(
            baseline["client_cpu_us_per_msg"] + baseline["server_cpu_us_per_msg"], abs=1
        )
    assert (paced["rate"], paced["messages"]) == (20, 20)
    assert paced["latency_ms"]["samples"] == 20, "every paced message consumed once"
    assert 0 < paced["latency_ms"]["p50_ms"] <= paced["latency_ms"]["p99_ms"]
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    # The queued latency in its two halves: to the responder's decision, then the api's.
    offered = figures["offered"]
    decided, api = offered["webhook_to_decided"], offered["decided_to_queued"]
    assert decided["samples"] == api["samples"] == offered["webhook_to_queued"]["samples"]
    assert 0 < decided["p50_ms"] <= figures["p50_ms"], "decided before it is queued"
    assert api["p50_ms"] >= 0
    assert figures["bot_replies_measured"]
    assert figures["bot_reply_p99_ms"] > 0
    assert figures["bot_replies_per_recipient_max"] == 1, "a bot reply was sent twice"
    assert set(figures["max_rss_mb"]) == SERVICES
    cpu = figures["cpu_ms_per_dm"]
    assert set(cpu) == {*SERVICES, "nats-server", "total"}
    assert all(ms is not None and ms >= 0 for ms in cpu.values())
    assert cpu["total"] == pytest.approx(sum(ms for n, ms in cpu.items() if n != "total"), abs=0.01)
    assert cpu["total"] > 0
    assert all(10 < mb < 1000 for mb in figures["max_rss_mb"].values())
    # Each service's full collections per phase, read from its /metrics.
    for phase in ("offered", "saturation"):
        collections = figures[phase]["gc_full_collections"]
        assert set(collections) == SERVICES
        assert all(isinstance(count, int) and count >= 0 for count in collections.values())

    # Every saturation DM is handed to a team: one inbound, one classified and one routed
    # event each (dm.routed.reply when the hand-off is acknowledged, else dm.routed.quiet),
    # stored once, and each delivered to its consumers.
    bus = figures["bus"]
    by_subject = bus["stored_per_dm_by_subject"]
    for subject in ("dm.inbound.messenger", "dm.classified"):
        assert by_subject[subject] == 1.0, subject
    routed = by_subject.get("dm.routed.reply", 0.0) + by_subject.get("dm.routed.quiet", 0.0)
    assert routed == pytest.approx(1.0, abs=0.05)
    assert bus["stored_per_dm"] == pytest.approx(
        sum(bus["stored_per_dm_by_subject"].values()), abs=0.05
    )
    assert bus["delivered_per_dm"] >= 4, "inbound x2, classified x1, routed x1 at least"
    raw = figures["raw_jetstream"]
    seconds_per_dm = (
        bus["stored_per_dm"] / raw["publish_msgs_per_s"]
        + bus["delivered_per_dm"] / raw["consume_msgs_per_s"]
    )
    assert bus["ceiling_dms_per_s"] == pytest.approx(1 / seconds_per_dm, rel=0.01)
    assert bus["ceiling_ratio"] == pytest.approx(
        bus["ceiling_dms_per_s"] / figures["raw_jetstream_msgs_per_s"], abs=0.001
    )


@pytest.mark.parametrize(
    "database_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_the_benchmark_measures_a_running_stack_with_its_own_app_secret(
    stack: Stack,
) -> None:
    pids = [
        f"--pid={name}={service.process.pid}"
        for name, service in stack.services.items()
        if service.process is not None
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dmdesk",
        "bench",
        "--use-running",
        f"--ingest-url={stack.ingest_url}",
        f"--api-url={stack.api_url}",
        f"--nats-url={stack.services['api'].env['DMDESK_NATS_URL']}",
        f"--database-url={stack.database_url}",
        *pids,
        "--rate=20",
        "--duration=1",
        "--burst=30",
        "--raw-messages=200",
        "--json",
        env=os.environ | {"DMDESK_META_APP_SECRET": META_APP_SECRET},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, stderr.decode()[-4000:]
    figures = json.loads(stdout)

    # Signed with the running stack's secret, every webhook was accepted.
    assert figures["offered"]["refused_attempts"] == {}
    assert figures["offered"]["accepted"] == 20
    assert figures["saturation"]["routed"] == 30
    assert figures["e2e_dms_per_s"] > 0
    assert set(figures["max_rss_mb"]) == SERVICES
    cpu = figures["cpu_ms_per_dm"]
    assert set(cpu) == {*SERVICES, "total"}, "the pids given: the services, not NATS"
    assert all(ms is not None and ms >= 0 for ms in cpu.values())
    assert cpu["total"] == pytest.approx(sum(ms for n, ms in cpu.items() if n != "total"), abs=0.01)
    assert cpu["total"] > 0
    by_subject = figures["bus"]["stored_per_dm_by_subject"]
    routed = by_subject.get("dm.routed.reply", 0.0) + by_subject.get("dm.routed.quiet", 0.0)
    assert routed == pytest.approx(1.0, abs=0.05)
    # A PostgreSQL server on this machine: its processes' CPU for the database, apart.
    if stack.database_url.startswith("postgresql"):
        assert figures["database_cpu_ms_per_dm"] > 0
    else:
        assert "database_cpu_ms_per_dm" not in figures
