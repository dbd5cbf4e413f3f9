"""No ingest log line carries message text or private data, on any path, tracebacks included."""

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from shared.events import Channel
from shared.logs import configure_logging
from tests.unit.ingest.conftest import Ingest, make_ingest

MARKER = "MARKER-c0ffee"
CARD = "4111 1111 1111 1111"
SECRET_TEXT = f"{MARKER} my card {CARD} cvv 123 ana@example.com"


@pytest.fixture
def logged(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Logs as a service writes them (JSON on stderr), configured when the test calls it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield lambda: capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def dm(**fields: Any) -> dict[str, Any]:
    return {"id": "g-1", "contact": {"id": "ana", "name": MARKER}, "text": SECRET_TEXT} | fields


def messenger(event: dict[str, Any]) -> dict[str, Any]:
    envelope = {"sender": {"id": "psid"}, "recipient": {"id": "page"}, "timestamp": 1_700_000_000}
    return {"object": "page", "entry": [{"id": "page", "time": 1, "messaging": [envelope | event]}]}


def drive_every_error_path(ingest: Ingest, closed: Ingest) -> None:
    post = ingest.client.post
    secret_message = {"message": {"mid": "m_1", "text": SECRET_TEXT}}
    # Webhooks: unsigned, wrongly signed, malformed, another channel's, too deep, NaN,
    # unknown kinds, fields that do not fit, NATS down.
    ingest.post_webhook(Channel.MESSENGER, messenger(secret_message), secret=None)
    ingest.post_webhook(Channel.MESSENGER, messenger(secret_message), secret="wrong")
    ingest.post_webhook(Channel.MESSENGER, f'{{"object": "page", "x": "{SECRET_TEXT}"'.encode())
    ingest.post_webhook(Channel.INSTAGRAM, messenger(secret_message))
    ingest.post_webhook(Channel.MESSENGER, f'{{"a": "{SECRET_TEXT}", "b": NaN}}'.encode())
    deep: Any = SECRET_TEXT
    for _ in range(300):
        deep = [deep]
    ingest.post_webhook(Channel.MESSENGER, json.dumps(messenger({"mystery": deep})).encode())
    ingest.post_webhook(Channel.MESSENGER, messenger({"mystery": {"note": SECRET_TEXT}}))
    long = {"message": {"mid": "m_2", "text": SECRET_TEXT * 2000}}
    ingest.post_webhook(Channel.MESSENGER, messenger(long))
    ingest.post_webhook(Channel.MESSENGER, messenger(secret_message))
    # The generic endpoint: every refusal.
    closed.client.post("/v1/messages", json=dm())
    closed.client.post("/v1/messages", json=dm(), headers={"X-API-Key": MARKER})
    post("/v1/messages", json=dm(contact={"id": "ana", "followers": 2**70, "name": MARKER}))
    post("/v1/messages", json=dm(contact={"id": "ana", "vip": True}))
    post("/v1/messages", json=dm(text=SECRET_TEXT * 2000))
    post("/v1/messages", json=dm(extra=SECRET_TEXT))
    post("/v1/messages", json=[dm(), {"text": SECRET_TEXT}])
    body = json.dumps(dm()).replace('"g-1"', "NaN").encode()
    post("/v1/messages", content=body, headers={"Content-Type": "application/json"})
    post("/v1/messages", content=SECRET_TEXT.encode(), headers={"Content-Type": "application/json"})
    post("/v1/messages", json=dm())
    ingest.sink.down = True
    ingest.post_webhook(Channel.MESSENGER, messenger(secret_message))
    post("/v1/messages", json=dm(id="g-2"))
    ingest.sink.down = False
    ingest.sink.max_payload = 100
    post("/v1/messages", json=dm(id="g-3"))
    ingest.post_webhook(Channel.MESSENGER, messenger(secret_message))


def test_no_log_line_carries_the_text_a_card_or_an_email(logged: Any) -> None:
    ingest = make_ingest(ingest_open=True, ingest_max_body_bytes=1_048_576)
    closed = make_ingest()
    logged()
    configure_logging("ingest", "DEBUG")
    try:
        drive_every_error_path(ingest, closed)
    finally:
        ingest.client.close()
        closed.client.close()
    output = logged()
    assert len(json_lines(output)) >= 5  # the paths do log, every line is JSON
    for secret in (MARKER, CARD, CARD.replace(" ", ""), "ana@example.com"):
        assert secret not in output


def fail_with_the_text() -> None:
    raise ValueError(f"cannot store {SECRET_TEXT}")


def test_a_traceback_keeps_its_frames_but_not_the_values(logged: Any) -> None:
    logged()
    configure_logging("ingest", "DEBUG")
    try:
        fail_with_the_text()
    except ValueError:
        logging.getLogger("dmdesk.ingest").exception("unexpected failure")
    output = logged()
    assert json_lines(output)
    assert "ValueError" in output
    assert "fail_with_the_text" in output
    assert MARKER not in output
    assert CARD not in output
