"""The labelled customer messages (``defaults/bot_eval.yaml``): what ``dmdesk eval-bot``
measures the bot on, and what the FAQ's answer check learns from (their dev part only).

Hand-written customer messages in the six supported languages, each with the outcome a
customer should get: a FAQ entry, a person, a greeting, an opt-out or a polite close of their
thanks. ``dev`` is tuned and trained on; ``heldout`` never is.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.responder.faq import DEFAULTS_PACKAGE
from shared import packaged
from shared.events import Category, CriticalSignal

EVAL_RESOURCE = "bot_eval.yaml"
OUTCOMES = frozenset({"handoff", "greet", "opt_out", "thanks"})
"""The expected outcomes that are not a FAQ entry."""
HANDOFF = "handoff"
Split = Literal["dev", "heldout"]
QUIET_SIGNALS = frozenset(
    {
        CriticalSignal.SAFETY,
        CriticalSignal.LEGAL,
        CriticalSignal.DISCRIMINATION,
        CriticalSignal.PRESS,
        CriticalSignal.PERSON_AT_RISK,
        CriticalSignal.FRAUD,
    }
)
"""Critical signals whose DMs go to a person with no bot message at all (a product decision:
every critical signal of issue 13, fraud and account takeover included)."""


class EvalMessage(BaseModel):
    """A customer message and the outcome it should get."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    t: str = Field(description="The text.")
    e: str = Field(description="A FAQ entry id, handoff, greet, opt_out or thanks.")
    c: Category = Category.INQUIRY
    f: list[Literal["complaint", "negative"] | CriticalSignal] = Field(
        default_factory=list,
        description="Flags the classifier would set: complaint, negative (sentiment), and "
        "critical signals (safety, legal, discrimination, press, person_at_risk, fraud).",
    )

    @property
    def critical(self) -> list[CriticalSignal]:
        """The critical signals the classifier would find."""
        return [flag for flag in self.f if isinstance(flag, CriticalSignal)]

    @property
    def quiet(self) -> bool:
        """Whether a person must take it with no bot message: a critical signal, or a DM the
        classifier calls spam (the default rules queue it, low, unanswered: a reply would
        tell a spammer the account is read)."""
        return bool(QUIET_SIGNALS.intersection(self.critical)) or self.c is Category.SPAM


class LanguageSet(BaseModel):
    """One language's messages: tuned on (dev) and never tuned on (heldout)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dev: list[EvalMessage]
    heldout: list[EvalMessage] = Field(
        default_factory=list,
        description="Empty between a measured held-out part joining dev and a fresh one.",
    )


def load_eval_set(path: Path | None = None) -> dict[str, LanguageSet]:
    """The evaluation set at ``path``, or the one packaged with dmdesk."""
    return parse_eval_set(packaged.read_text(DEFAULTS_PACKAGE, EVAL_RESOURCE, path))


def parse_eval_set(text: str) -> dict[str, LanguageSet]:
    """The evaluation set whose YAML is ``text``."""
    raw = packaged.parse_yaml(text)
    return {language: LanguageSet.model_validate(value) for language, value in raw.items()}
