"""`dmdesk up`, the README's first command: everything from nothing but Python."""

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from dmdesk.natsserver import free_port
from shared.models import Scope
from tests.stack import eventually, issue_api_key

pytestmark = pytest.mark.e2e


def child_pid(parent: int, module: str) -> int:
    """The pid of ``parent``'s child running ``python -m module`` (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == parent and module in cmdline:
            return int(stat.parent.name)
    raise LookupError(f"no child of {parent} runs {module}")


async def test_dmdesk_up_runs_the_stack_restarts_a_dead_child_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    ports = {name: free_port() for name in ("api", "ingest", "classifier", "responder")}
    env = {key: value for key, value in os.environ.items() if not key.startswith("DMDESK_")}
    env |= {f"DMDESK_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    log = (tmp_path / "up.log").open("wb")
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dmdesk",
        "up",
        "--data-dir",
        str(tmp_path / "data"),
        env=env,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # a process group of its own, as in a terminal
    )

    def output() -> str:
        return (tmp_path / "up.log").read_text(errors="replace")

    try:
        ready = await eventually(
            lambda: asyncio.sleep(0, output()), lambda text: "ready: ingest" in text, timeout=60
        )
        assert f"ready: API http://127.0.0.1:{ports['api']}/docs" in ready, ready
        assert "(embedded)" in ready
        assert "POST /v1/messages is open without an ingest key" in ready

        database = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'dmdesk.db'}"
        key = await issue_api_key(database, Scope.READ)
        async with httpx.AsyncClient(timeout=10) as client:
            posted = await client.post(
                f"http://127.0.0.1:{ports['ingest']}/v1/messages",
                json={"id": "up-1", "contact": {"id": "ana"}, "text": "where is my order?"},
            )
            assert posted.status_code == 202

            async def queue() -> list[dict[str, object]]:
                response = await client.get(
                    f"http://127.0.0.1:{ports['api']}/v1/queue", headers={"X-API-Key": key}
                )
                items: list[dict[str, object]] = response.json()["items"]
                return items

            items = await eventually(queue, lambda items: bool(items and items[0]["team"]))
            assert items[0]["team"] == "support"

            os.kill(child_pid(up.pid, "services.classifier"), signal.SIGKILL)
            restarted = await eventually(
                lambda: asyncio.sleep(0, output()),
                lambda text: "classifier exited with code -9; restarting" in text,
            )
            assert "restarting" in restarted
            await eventually(
                lambda: asyncio.sleep(0, output()),
                lambda text: (
                    text.count("classifier| ") > 0
                    and text.rsplit("restarting", 1)[1].count("service started") >= 1
                ),
                timeout=30,
            )
            second = await client.post(
                f"http://127.0.0.1:{ports['ingest']}/v1/messages",
                json={"id": "up-2", "contact": {"id": "ben"}, "text": "refund please"},
            )
            assert second.status_code == 202
            items = await eventually(
                queue, lambda items: len([i for i in items if i["team"]]) == 2, timeout=30
            )
            assert len(items) == 2
        assert (tmp_path / "data" / "dmdesk.db").exists()
        assert (tmp_path / "data" / "nats").is_dir()
    finally:
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
        code = await asyncio.wait_for(up.wait(), 60)
        log.close()
    text = output()
    assert code == 0, text
    assert "killing it" not in text, text
    # Every service stops gracefully while NATS still runs; NATS stops last.
    stops = text.split("stopping every service", 1)[1]
    stopping_nats = stops.index("dmdesk: stopping NATS")
    for name in ports:
        stopped = re.search(rf"^{name} *\|.* service stopped", stops, re.MULTILINE)
        assert stopped is not None, text
        assert stopped.start() < stopping_nats, text
