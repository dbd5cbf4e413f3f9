"""Log lines say why something failed without the data it failed on."""

import io
import json
import logging
import traceback

import pytest

from shared.logs import RedactingJsonFormatter, error_fields, redacted

CARD = "4111 1111 1111 1111"
MARKER = "zebra-marker-7731"


def fail_privately() -> None:
    raise ValueError(f"text {MARKER!r} with card '{CARD}' from ana@example.com")


def private_error() -> ValueError:
    try:
        fail_privately()
    except ValueError as error:
        return error
    raise AssertionError("unreachable")


@pytest.fixture
def log() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingJsonFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.redaction")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger, out


def test_redacted_keeps_the_shape_and_drops_values() -> None:
    message = redacted(
        "(psycopg.DataError) invalid 'My card is 4111 1111 1111 1111' for ana@example.com\n"
        "[SQL: INSERT INTO messages (text) VALUES (%(text)s)]\n"
        "[parameters: {'text': 'hello'}]"
    )
    assert "4111" not in message
    assert "My card" not in message
    assert "ana@" not in message
    assert "hello" not in message
    assert "INSERT INTO messages" in message
    assert "psycopg.DataError" in message


def test_error_fields_name_type_redacted_message_and_frames() -> None:
    fields = error_fields(private_error())
    assert fields["error_type"] == "ValueError"
    assert MARKER not in fields["error"]
    assert "4111" not in fields["error"]
    assert any("fail_privately" in frame for frame in fields["frames"])


def test_logged_exceptions_and_chained_causes_are_redacted(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = log
    try:
        try:
            raise private_error()
        except ValueError as error:
            raise RuntimeError(f"wrapped {MARKER!r}") from error
    except RuntimeError:
        logger.exception("failed")
    record = json.loads(out.getvalue())
    assert MARKER not in out.getvalue()
    assert "4111" not in out.getvalue()
    assert "RuntimeError" in record["exc_info"]
    assert "ValueError" in record["exc_info"]
    assert "fail_privately" in record["exc_info"]


def test_a_traceback_logged_as_text_is_redacted(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = log
    try:
        raise private_error()
    except ValueError:
        text = traceback.format_exc()
    logger.error(text)  # what uvicorn does when a lifespan fails
    assert MARKER not in out.getvalue()
    assert "4111" not in out.getvalue()
    assert "fail_privately" in json.loads(out.getvalue())["message"]
