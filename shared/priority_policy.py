"""The priority policy: a YAML file with sane defaults, hot-reloaded, refused when invalid.

A contract of two services: the classifier decides each DM's priority by it
(``services/classifier/priority.py``), the api applies its contact rules when a
contact's profile arrives (VIPs, influencers).

``PolicyStore.current()`` returns the policy in force; it re-reads the file when its
modification time or size changed, and keeps the previous policy (recording
``last_error``, with the line and the reason) when the new file is invalid.
"""

import hashlib
import logging
import re
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from shared.events import Category, Contact, CriticalSignal, Priority
from shared.settings import get_settings

DEFAULT_POLICY = Path(__file__).parent / "priority_policy.yaml"

logger = logging.getLogger(__name__)


class PolicyError(ValueError):
    """A policy file that cannot be used, with where and why."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        """Record the file, the 1-based line (None when unknown) and the reason."""
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid regular expression {pattern!r}: {error}") from error
    return pattern


Pattern = Annotated[str, AfterValidator(_compiles)]


CRITICAL_REASONS: dict[CriticalSignal, str] = {
    CriticalSignal.SAFETY: "safety hazard",
    CriticalSignal.LEGAL: "legal or regulatory threat",
    CriticalSignal.DISCRIMINATION: "discrimination, harassment or abuse by staff",
    CriticalSignal.PRESS: "press or public escalation",
    CriticalSignal.PERSON_AT_RISK: "person at risk",
    CriticalSignal.FRAUD: "fraud or account takeover",
}


class UrgencyWords(_Strict):
    """Patterns that make a message urgent or high whatever else the policy says."""

    urgent: list[Pattern] = Field(default_factory=list)
    high: list[Pattern] = Field(default_factory=list)


class ModelThresholds(_Strict):
    """Probability mass on urgent (or urgent and high) intents that sets the priority.

    ``high_at`` is for urgent and high intents together; ``urgent_high_at`` for urgent
    intents alone: a smaller chance of fraud or a lost card is already worth a human soon.
    """

    urgent_at: float = Field(default=0.5, gt=0.0, le=1.0)
    high_at: float = Field(default=0.5, gt=0.0, le=1.0)
    urgent_high_at: float = Field(default=0.25, gt=0.0, le=1.0)


class SentimentRule(_Strict):
    """Sentiment at or below which a message is at least high."""

    high_at_or_below: float = Field(default=-0.6, ge=-1.0, le=1.0)


class NegativeComplaint(_Strict):
    """A weaker complaint probability that counts when the message is negative."""

    probability: float = Field(default=0.2, ge=0.0, le=1.0)
    sentiment_at_or_below: float = Field(default=-0.1, ge=-1.0, le=1.0)


class ComplaintDetection(_Strict):
    """When the model's complaint probability flags a message as a complaint.

    ``probability`` None means the threshold the model artefact was trained with.
    ``with_negative_sentiment`` (off when None) adds a lower threshold for negative text.
    """

    probability: float | None = Field(default=None, ge=0.0, le=1.0)
    with_negative_sentiment: NegativeComplaint | None = None


class ContactRule(_Strict):
    """Who gets a faster answer: VIPs and influencers (by tag or by reach)."""

    vip: Priority = Priority.HIGH
    influencer: Priority = Priority.HIGH
    influencer_tags: list[str] = Field(default_factory=list)
    influencer_followers: int | None = Field(default=10_000, ge=0)
    verified: Priority | None = Priority.HIGH


class MessageRequestRule(_Strict):
    """The highest priority of a message request (before urgency words)."""

    at_most: Priority = Priority.NORMAL


class RepeatedUnanswered(_Strict):
    """Customers who wrote this many times without an answer get this priority."""

    count: int = Field(default=3, ge=1)
    priority: Priority = Priority.HIGH


class Policy(_Strict):
    """A validated priority policy."""

    version: int = Field(default=1, ge=1, le=1)
    categories: dict[Category, Priority]
    critical: dict[CriticalSignal, list[Pattern]] = Field(default_factory=dict)
    urgency_words: UrgencyWords = Field(default_factory=UrgencyWords)
    model: ModelThresholds = Field(default_factory=ModelThresholds)
    sentiment: SentimentRule = Field(default_factory=SentimentRule)
    complaint: Priority = Priority.HIGH
    complaint_detection: ComplaintDetection = Field(default_factory=ComplaintDetection)
    contact: ContactRule = Field(default_factory=ContactRule)
    message_request: MessageRequestRule = Field(default_factory=MessageRequestRule)
    repeated_unanswered: RepeatedUnanswered = Field(default_factory=RepeatedUnanswered)
    languages: dict[str, Priority] = Field(default_factory=dict)
    spam: Priority = Priority.LOW
    digest: str = ""

    @field_validator("categories")
    @classmethod
    def _every_category(cls, categories: dict[Category, Priority]) -> dict[Category, Priority]:
        missing = [category.value for category in Category if category not in categories]
        if missing:
            raise ValueError(f"no priority for categories: {', '.join(missing)}")
        return categories

    @cached_property
    def critical_patterns(self) -> dict[CriticalSignal, re.Pattern[str]]:
        """Each critical signal's patterns as one pattern, in lower case, for lower-case text.

        Matching lower-cased text without IGNORECASE is 2-3 times faster here (the
        patterns hold many accented letters), and every DM goes through them.
        """
        compiled = {signal: _alternatives(patterns) for signal, patterns in self.critical.items()}
        return {signal: pattern for signal, pattern in compiled.items() if pattern is not None}

    def critical_signals(self, text: str) -> list[tuple[CriticalSignal, str]]:
        """The critical signals in ``text``, each with the words that showed it."""
        lowered = text.lower()
        return [
            (signal, match.group(0))
            for signal, pattern in self.critical_patterns.items()
            if (match := pattern.search(lowered))
        ]

    @cached_property
    def urgent_pattern(self) -> re.Pattern[str] | None:
        """The urgent words as one pattern for lower-case text (None when there are none)."""
        return _alternatives(self.urgency_words.urgent)

    @cached_property
    def high_pattern(self) -> re.Pattern[str] | None:
        """The high-priority words as one pattern for lower-case text (None if none)."""
        return _alternatives(self.urgency_words.high)

    def is_complaint(
        self,
        category: Category,
        probability: float,
        sentiment: float,
        model_threshold: float = 0.5,
    ) -> bool:
        """Whether a message counts as a complaint under this policy.

        A message categorised complaint or negative_review always does (they are routed to
        the complaints team); any other when the model's complaint probability reaches the
        policy's threshold, or the model's (``model_threshold``) when the policy sets none.
        """
        rule = self.complaint_detection
        threshold = model_threshold if rule.probability is None else rule.probability
        weak = rule.with_negative_sentiment
        return (
            category in (Category.COMPLAINT, Category.NEGATIVE_REVIEW)
            or probability >= threshold
            or (
                weak is not None
                and probability >= weak.probability
                and sentiment <= weak.sentiment_at_or_below
            )
        )


_ESCAPE_OR_TEXT = re.compile(r"\\.|[^\\]+")


def _lower(pattern: str) -> str:
    """``pattern`` in lower case, its escapes (``\\W``, ``\\S``...) kept as written."""
    return _ESCAPE_OR_TEXT.sub(
        lambda part: part.group(0) if part.group(0).startswith("\\") else part.group(0).lower(),
        pattern,
    )


def _alternatives(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """The patterns as one, in lower case, to match lower-cased text (see _lower)."""
    if not patterns:
        return None
    return re.compile(r"\b(?:" + "|".join(f"(?:{_lower(p)})" for p in patterns) + r")\b")


def contact_rules(policy: Policy, contact: Contact | None, raise_to: Any) -> None:
    """Call ``raise_to(priority, why)`` for each of the policy's contact rules ``contact`` meets."""
    if contact is None:
        return
    rule = policy.contact
    if contact.vip:
        raise_to(rule.vip, "VIP contact")
    tags = {tag.lower() for tag in contact.tags}
    if tagged := sorted(tags.intersection(tag.lower() for tag in rule.influencer_tags)):
        raise_to(rule.influencer, f"contact tagged {tagged[0]}")
    if (
        rule.influencer_followers is not None
        and contact.followers is not None
        and contact.followers >= rule.influencer_followers
    ):
        raise_to(rule.influencer, f"contact with {contact.followers} followers")
    if contact.verified and rule.verified is not None:
        raise_to(rule.verified, "verified account")


def contact_priority(policy: Policy, contact: Contact) -> tuple[Priority, str] | None:
    """The most urgent priority the policy's contact rules give ``contact``, and why."""
    found: list[tuple[Priority, str]] = []

    def note(candidate: Priority, why: str) -> None:
        found.append((candidate, f"{why} -> {candidate.value}"))

    contact_rules(policy, contact, note)
    return min(found, key=lambda item: item[0].rank, default=None)


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file.

    Raises:
        PolicyError: the file cannot be read, is not YAML, or breaks a rule; with the
            line of the offending value where it can be known.
    """
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(path, None, f"cannot read: {error.strerror or error}") from error
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
        document = yaml.safe_load(source)
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else None
        raise PolicyError(path, line, f"not valid YAML: {error.problem}") from error
    if not isinstance(document, dict):
        raise PolicyError(path, 1, "a policy is a mapping (key: value) at the top level")
    digest = hashlib.sha256(source.encode()).hexdigest()[:8]
    try:
        return Policy.model_validate({**document, "digest": digest})
    except ValidationError as error:
        first = error.errors()[0]
        location = tuple(first["loc"])
        reason = f"{'.'.join(str(part) for part in location) or 'policy'}: {first['msg']}"
        raise PolicyError(path, _line_of(root, location), reason) from error


def _line_of(node: yaml.Node | None, location: tuple[Any, ...]) -> int | None:
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        child = _child(node, part)
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _child(node: yaml.Node | None, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if str(key.value) == str(part):
                found: yaml.Node = value
                return found
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item: yaml.Node = node.value[part]
        return item
    return None


def policy_path() -> Path:
    """The policy file in force: ``$DMDESK_PRIORITY_POLICY`` or the packaged default."""
    return get_settings().priority_policy or DEFAULT_POLICY


class PolicyStore:
    """The policy in force, re-read when its file changes; thread-safe enough for reads."""

    def __init__(self, path: Path | None = None, check_every: float = 1.0) -> None:
        """Load ``path`` (default: ``policy_path()``); an invalid first file raises.

        Args:
            path: the YAML policy file.
            check_every: at most one ``stat`` of the file per this many seconds.

        Raises:
            PolicyError: the first file is invalid (there is no previous one to keep).
        """
        self.path = path or policy_path()
        self.check_every = check_every
        self.last_error: PolicyError | None = None
        self._stamp = self._file_stamp()
        self._policy = load_policy(self.path)
        self._checked_at = time.monotonic()

    def current(self) -> Policy:
        """The policy in force, reloaded first if the file changed since the last look."""
        now = time.monotonic()
        if now - self._checked_at >= self.check_every:
            self._checked_at = now
            self.reload_if_changed()
        return self._policy

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True when a new policy took effect."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            policy = load_policy(self.path)
        except PolicyError as error:
            self.last_error = error
            logger.warning("priority policy refused, the previous one stays: %s", error)
            return False
        self._policy = policy
        self.last_error = None
        logger.info("priority policy %s loaded from %s", policy.digest, self.path)
        return True

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size
