"""The test stack survives losing a port it was given to another process."""

import os
import socket
from pathlib import Path

import pytest

from dmdesk.natsserver import free_port
from tests.stack import META_APP_SECRET, ServiceProcess

pytestmark = pytest.mark.e2e


async def test_a_service_whose_port_is_taken_starts_on_another(
    clean_nats: str, tmp_path: Path
) -> None:
    taken = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        env = os.environ | {
            "DMDESK_NATS_URL": clean_nats,
            "DMDESK_META_APP_SECRET": META_APP_SECRET,
            "DMDESK_DATA_DIR": str(tmp_path / "data"),
        }
        ingest = ServiceProcess("ingest", taken, env, tmp_path / "ingest.log")
        await ingest.start()
        try:
            await ingest.wait_ready()
        finally:
            await ingest.terminate()

    assert ingest.port != taken
    assert b"address already in use" in (tmp_path / "ingest.log").read_bytes()
