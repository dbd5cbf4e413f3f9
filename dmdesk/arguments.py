"""Argument types the ``dmdesk`` commands share: a bad number is a usage error from
argparse (exit 2, with the reason), never a traceback halfway through a run."""

import argparse
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def _number(value: str, kind: Callable[[str], N], what: str) -> N:
    try:
        return kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {what}") from None


def positive_int(value: str) -> int:
    """A count of at least 1 (messages, requests, connections, DMs per group)."""
    number = _number(value, int, "a whole number")
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not a positive whole number")
    return number


def positive_float(value: str) -> float:
    """A rate or a duration above 0."""
    number = _number(value, float, "a number")
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def share(value: str) -> float:
    """A share from 0 to 1."""
    number = _number(value, float, "a number")
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not a share from 0 to 1")
    return number
