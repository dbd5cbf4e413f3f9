"""Structured JSON logs on stderr, one object a line.

Log events and identifiers, never message text or contact details: a DM's
content is private information.
"""

import logging
import re
import sys
import traceback
from typing import Any

from pythonjsonlogger.json import JsonFormatter


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record as JSON to stderr, tagged with ``service``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingJsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"service": service},
            timestamp="ts",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_WITH_DIGITS = re.compile(r"[^\s'\"]*\d[^\s'\"]*")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PARAMETERS = re.compile(r"\[parameters: .*?\]\s*$", re.DOTALL | re.MULTILINE)
MAX_ERROR_MESSAGE = 500
MAX_FRAMES = 12


def redacted(text: str) -> str:
    """An error message with the values it may quote taken out, its shape kept.

    Quoted strings, words with a digit in them (cards, phones, ids, codes), emails and
    SQLAlchemy's ``[parameters: ...]`` become ``<redacted>``.
    """
    text = _PARAMETERS.sub("[parameters: <redacted>]", text)
    text = _QUOTED.sub("'<redacted>'", text)
    text = _EMAIL.sub("<redacted>", text)
    text = _WITH_DIGITS.sub("<redacted>", text)
    return text[:MAX_ERROR_MESSAGE]


def error_fields(error: BaseException) -> dict[str, Any]:
    """Log fields that say why something failed without the data it failed on.

    The exception's type, its message redacted, and where it was raised: the innermost
    frames as ``file:line in function`` (no source lines, no local values).
    """
    frames = traceback.extract_tb(error.__traceback__)[-MAX_FRAMES:]
    return {
        "error_type": type(error).__name__,
        "error": redacted(str(error)),
        "frames": [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in frames],
    }


_TRACEBACK = "Traceback (most recent call last)"
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>.+)$')


def redacted_traceback(text: str) -> str:
    """A traceback printed as text, with its frames kept and everything else redacted.

    Source lines are dropped (they can quote literals); exception lines are redacted.
    """
    lines: list[str] = []
    for line in text.splitlines():
        if frame := _FRAME.match(line):
            lines.append(f"  at {frame['file']}:{frame['line']} in {frame['name']}")
        elif line and not line[0].isspace():
            lines.append(redacted(line))
    return "\n".join(lines)


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines whose tracebacks are redacted (see :func:`error_fields`).

    Every ``logger.exception`` in dmdesk and in the libraries it runs on (uvicorn,
    faststream, SQLAlchemy) goes through this: an exception's message often quotes the
    values it failed on, and those can be a customer's text.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON, a traceback logged as text (uvicorn's lifespan) redacted."""
        if isinstance(record.msg, str) and record.msg.startswith(_TRACEBACK):
            record.msg, record.args = redacted_traceback(record.msg), ()
        return super().format(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        """The exception's type, redacted message and frames, each cause after it."""
        lines: list[str] = []
        error: BaseException | None = ei[1]
        while error is not None and len(lines) < 4 * MAX_FRAMES:
            fields = error_fields(error)
            lines.append(f"{fields['error_type']}: {fields['error']}")
            lines.extend(f"  at {frame}" for frame in fields["frames"])
            error = error.__cause__ or error.__context__
        return "\n".join(lines)
