"""deploy/nats/auth.conf lets the api ask for a rules dry run and a responder answer it."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from dmdesk.natsserver import NatsServer
from shared.decisions import DRY_RUN_QUEUE, DRY_RUN_SUBJECT

AUTH = Path(__file__).parents[2] / "deploy" / "nats" / "auth.conf"
USERS = ("ingest", "classifier", "responder", "api")


@pytest.fixture
def secured_nats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A nats-server with dmdesk's users and permissions, each password its user's name."""
    shutil.copy(AUTH, tmp_path / "auth.conf")
    (tmp_path / "server.conf").write_text("include ./auth.conf\n")
    for user in USERS:
        monkeypatch.setenv(f"NATS_{user.upper()}_PASSWORD", user)
    with NatsServer(tmp_path / "store", extra_args=("-c", str(tmp_path / "server.conf"))) as server:
        yield server.url


async def _connect(url: str, user: str) -> NatsClient:
    return await nats.connect(url, user=user, password=user, allow_reconnect=False)


async def test_the_api_asks_and_a_responder_answers_under_their_own_users(
    secured_nats: str,
) -> None:
    responder = await _connect(secured_nats, "responder")
    api = await _connect(secured_nats, "api")
    ingest = await _connect(secured_nats, "ingest")
    try:

        async def answer(msg: Msg) -> None:
            await msg.respond(b"answered")

        await responder.subscribe(DRY_RUN_SUBJECT, queue=DRY_RUN_QUEUE, cb=answer)
        # nats-py writes a flush's PING straight to the socket, ahead of the SUB still
        # waiting for its flusher task, so one flush's PONG may come back before the
        # server has the subscription (the api then met "no responders" in CI). The first
        # round trip lets the flusher write the SUB; the second PING follows it.
        await responder.flush()
        await responder.flush()
        reply = await api.request(DRY_RUN_SUBJECT, b"{}", timeout=5)
        assert reply.data == b"answered"
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await ingest.request(DRY_RUN_SUBJECT, b"{}", timeout=1)
    finally:
        for client in (responder, api, ingest):
            await client.close()
