"""Structured JSON logs on stderr, one object a line.

Log events and identifiers, never message text or contact details: a DM's
content is private information.
"""

import logging
import sys
import traceback
from types import TracebackType

from pythonjsonlogger.json import JsonFormatter

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def redacted_traceback(exc_info: ExcInfo) -> str:
    """A traceback's frames and exception types, without the messages.

    An exception's message may quote what failed (a value, a body, a message's text):
    only its type is kept, so a log line never carries private data.
    """
    _, error, _ = exc_info
    if error is None:
        return ""
    lines: list[str] = []
    for part in traceback.TracebackException.from_exception(error).format():
        if part.startswith(("Traceback", "  File", "\nDuring", "\nThe above")):
            lines.append(part.split("\n    ", 1)[0].rstrip("\n"))  # the frame, not its code
        else:
            name = part.split(":", 1)[0].strip()
            if name and " " not in name:
                lines.append(f"{name}: <redacted>")
    return "\n".join(lines)


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines whose tracebacks keep frames and types but no exception messages."""

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 - logging's name
        """See :func:`redacted_traceback`."""
        return redacted_traceback(ei)


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
