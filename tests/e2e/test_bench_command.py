"""`dmdesk bench --json`: the figures issue #8 asks for, from a short run of the whole stack."""

import json
import subprocess
import sys

import pytest

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
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    assert figures["bot_replies_measured"]
    assert figures["bot_reply_p99_ms"] > 0
    assert figures["bot_replies_per_recipient_max"] == 1, "a bot reply was sent twice"
    assert set(figures["max_rss_mb"]) == SERVICES
    assert all(10 < mb < 1000 for mb in figures["max_rss_mb"].values())

    # Every saturation DM is handed to a team: one inbound, one classified and one
    # hand-off event each, stored once, and each delivered to its consumers.
    bus = figures["bus"]
    for subject in ("dm.inbound.messenger", "dm.classified", "dm.handoff"):
        assert bus["stored_per_dm_by_subject"][subject] == 1.0, subject
    assert bus["stored_per_dm"] == pytest.approx(
        sum(bus["stored_per_dm_by_subject"].values()), abs=0.05
    )
    assert bus["delivered_per_dm"] >= 6, "inbound x3, classified x2, hand-off x1 at least"
    raw = figures["raw_jetstream"]
    seconds_per_dm = (
        bus["stored_per_dm"] / raw["publish_msgs_per_s"]
        + bus["delivered_per_dm"] / raw["consume_msgs_per_s"]
    )
    assert bus["ceiling_dms_per_s"] == pytest.approx(1 / seconds_per_dm, rel=0.01)
    assert bus["ceiling_ratio"] == pytest.approx(
        bus["ceiling_dms_per_s"] / figures["raw_jetstream_msgs_per_s"], abs=0.001
    )
