"""Guards on what the bot says and to whom (no framework)."""

import re
from collections.abc import Iterable

# Wording a customer-care bot must not send: offers, discounts, calls to buy. Meta's
# policy forbids promotional content in replies sent under RESPONSE/HUMAN_AGENT.
DEFAULT_PROMOTIONAL_PATTERNS = (
    r"\b\d{1,2}\s?% off\b",
    r"\bdiscount(s|ed)?\b",
    r"\bpromo(tion(al)?)?\s?codes?\b",
    r"\bcoupons?\b",
    r"\b(limited[- ]time|special) offer\b",
    r"\bbuy now\b",
    r"\bsale ends\b",
    r"\bfree gift\b",
    r"\bdescuento\b",
    r"\boferta\b",
    r"\bpromoci[oó]n\b",
)

DEFAULT_OPT_OUT_WORDS = ("stop", "unsubscribe", "stop bot", "opt out", "baja", "parar", "arrêt")
DEFAULT_OPT_IN_WORDS = ("start", "unstop", "resume")

_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Case-insensitive compiled patterns."""
    return tuple(re.compile(pattern, re.IGNORECASE) for pattern in patterns)


def promotional_match(text: str, patterns: Iterable[re.Pattern[str]]) -> str | None:
    """The promotional wording found in ``text``, or None."""
    for pattern in patterns:
        if match := pattern.search(text):
            return match.group(0)
    return None


def normalised_command(text: str | None) -> str:
    """A short message reduced to lower-case words, to compare with command words."""
    return " ".join(_PUNCTUATION.sub(" ", (text or "").lower()).split())


def is_command(text: str | None, words: Iterable[str]) -> bool:
    """Whether the whole message is one of ``words`` ("STOP", "stop.", " Stop!")."""
    command = normalised_command(text)
    return bool(command) and command in {normalised_command(word) for word in words}
