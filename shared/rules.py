"""The chatbot's rule set: what it is (pydantic models) and how it is checked (no framework).

A rule set is a YAML/JSON document (``shared/defaults/rules.yaml`` is the default)::

    rules:
      - id: order-status
        when: {keywords: ["where is my order"]}
        then:
          - reply: order_status
          - handoff: {team: support, reason: order status question}

Rules are tried in order; the first that matches decides, unless it says
``continue: true``. :func:`compile_rule_set` validates everything a rule refers to
(teams, calendars, templates, regular expressions) and renders every template,
so a bad rule set is refused with the rule and the reason before it is stored.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from shared import packaged
from shared.business_hours import ALWAYS_OPEN, WEEKDAYS, Calendar
from shared.events import Category, Channel, CriticalSignal, Priority, PrivateInfoKind
from shared.rule_guards import (
    DEFAULT_OPT_IN_WORDS,
    DEFAULT_OPT_OUT_WORDS,
    DEFAULT_PROMOTIONAL_PATTERNS,
    compile_patterns,
    normalised_command,
    plain_text,
    promotional_match,
)
from shared.rule_templates import Renderer, TemplateRenderError

DEFAULT_RULES_RESOURCE = "rules.yaml"
AUTO_TEAM = "auto"
RuleId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]


class Strict(BaseModel):
    """Rule-set documents refuse unknown keys: a typo is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Skills(Strict):
    """What a team handles; empty means anything."""

    categories: list[Category] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)


class Team(Strict):
    """A human team: its skills and the calendar it works by."""

    skills: Skills = Field(default_factory=Skills)
    calendar: str | None = Field(default=None, description="A name from `calendars`.")


class BotTurns(Strict):
    """Bounds on how many times the bot already replied in the conversation."""

    at_least: int | None = Field(default=None, ge=0)
    at_most: int | None = Field(default=None, ge=0)


class Conditions(Strict):
    """All given conditions must hold; a list matches any of its values."""

    category: list[Category] | None = None
    priority: list[Priority] | None = None
    language: list[str] | None = None
    channel: list[Channel] | None = None
    keywords: list[str] | None = Field(
        default=None,
        description="Any of these words or phrases (case- and accent-insensitive, whole words).",
    )
    regex: str | None = Field(
        default=None,
        description="A Python regular expression, searched case-insensitively in the text as "
        "written and without accents.",
    )
    contact_tags: list[str] | None = Field(default=None, description="Any of these tags.")
    vip: bool | None = None
    first_message: bool | None = None
    business_hours: bool | None = Field(
        default=None, description="True: inside business hours; false: outside."
    )
    calendar: str | None = Field(
        default=None, description="Calendar for business_hours; the default calendar if unset."
    )
    spam: bool | None = None
    private_info: bool | None = None
    bot_turns: BotTurns | None = None
    complaint: bool | None = Field(
        default=None, description="The classifier's complaint flag, whatever the category."
    )
    sentiment_below: float | None = Field(
        default=None, ge=-1, le=1, description="The sentiment is at or below this value."
    )
    critical: list[CriticalSignal] | None = Field(
        default=None, description="Any of these critical signals was found."
    )
    masked: list[PrivateInfoKind] | None = Field(
        default=None, description="Ingest masked any of these kinds of private information."
    )
    has_text: bool | None = Field(
        default=None, description="False: the DM has no words (an image, a sticker...)."
    )
    message_is: list[str] | None = Field(
        default=None,
        description="The whole message is one of these, or several in a row (case, accents, "
        "punctuation, emoji, polite fillers and a drawn-out last letter aside): greetings.",
    )
    max_words: int | None = Field(
        default=None, ge=1, description="The message has at most this many words."
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"bad regular expression: {error}") from error
        return value

    @property
    def is_category_rule(self) -> bool:
        """Whether the rule relies on the classifier's category (guarded by its confidence)."""
        return self.category is not None


class ReplyAction(Strict):
    """Send the named template, in the customer's language."""

    reply: str


class FaqOptions(Strict):
    """Answer from the knowledge base; when unsure, ask an open question or hand off."""

    clarify_template: str | None = Field(
        default="faq_clarify", description="None: a miss hands off at once, no open question."
    )
    handoff_team: str | None = None


class FaqAction(Strict):
    """Answer from the FAQ."""

    faq: FaqOptions = Field(default_factory=FaqOptions)


class TagAction(Strict):
    """Add tags to the conversation."""

    tag: list[str] = Field(min_length=1)


class SetPriorityAction(Strict):
    """Set the conversation's priority."""

    set_priority: Priority


class HandoffOptions(Strict):
    """Hand the conversation to a team (``auto``: the first whose skills fit)."""

    team: str = AUTO_TEAM
    reason: str = "handed off by rule"
    priority: Priority | None = None
    acknowledge: bool = Field(
        default=True,
        description="Tell the customer a person will answer (the `handoff_ack` system "
        "template) when the rule sent nothing else.",
    )


class HandoffAction(Strict):
    """Hand off to a human team."""

    handoff: HandoffOptions = Field(default_factory=HandoffOptions)


class CloseOptions(Strict):
    """Close the conversation without a reply."""

    reason: str = "closed by rule"


class CloseAction(Strict):
    """Close the conversation."""

    close: CloseOptions = Field(default_factory=CloseOptions)


class NothingAction(Strict):
    """Do nothing (and stop looking at further rules)."""

    nothing: Literal[True] = True


ACTION_KINDS = ("reply", "faq", "tag", "set_priority", "handoff", "close", "nothing")


def _action_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_defaults=False)
    if isinstance(value, str) and value in ACTION_KINDS:
        return value
    if isinstance(value, dict) and len(value) == 1:
        (key,) = value
        if key in ACTION_KINDS:
            return str(key)
    return None


def _expand_shorthand(value: Any) -> Any:
    # `- close`, `- nothing`, `- faq` and `- handoff` may be written without options.
    if isinstance(value, str) and value in {"faq", "handoff", "close", "nothing"}:
        return {value: {} if value != "nothing" else True}
    if isinstance(value, dict) and len(value) == 1:
        ((key, options),) = value.items()
        if options is None and key in {"faq", "handoff", "close"}:
            return {key: {}}
    return value


Action = Annotated[
    Annotated[ReplyAction, Tag("reply")]
    | Annotated[FaqAction, Tag("faq")]
    | Annotated[TagAction, Tag("tag")]
    | Annotated[SetPriorityAction, Tag("set_priority")]
    | Annotated[HandoffAction, Tag("handoff")]
    | Annotated[CloseAction, Tag("close")]
    | Annotated[NothingAction, Tag("nothing")],
    Discriminator(
        _action_kind,
        custom_error_type="unknown_action",
        custom_error_message=f"an action is one of {', '.join(ACTION_KINDS)}",
    ),
]


class Rule(Strict):
    """When ``when`` holds, do ``then``; stop there unless ``continue``."""

    id: RuleId
    description: str = ""
    enabled: bool = True
    when: Conditions = Field(default_factory=Conditions)
    then: list[Action] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")

    @field_validator("then", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_expand_shorthand(item) for item in value]
        return value


class Guards(Strict):
    """Limits the bot never crosses, whatever the rules say."""

    min_confidence: float = Field(
        default=0.4, ge=0, le=1, description="Below it, rules on the category do not apply."
    )
    max_bot_replies: int = Field(default=3, ge=0, description="Bot replies per conversation.")
    faq_threshold: float = Field(default=0.4, ge=0, le=1, description="FAQ match confidence.")
    faq_misses_before_handoff: int = Field(default=2, ge=1)
    bot_resumes_after_hours: float | None = Field(
        default=72,
        gt=0,
        description="A handed-off conversation quiet this long starts afresh with the bot.",
    )
    opt_out_words: list[str] = Field(default_factory=lambda: list(DEFAULT_OPT_OUT_WORDS))
    opt_in_words: list[str] = Field(default_factory=lambda: list(DEFAULT_OPT_IN_WORDS))
    promotional_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PROMOTIONAL_PATTERNS)
    )

    @field_validator("promotional_patterns")
    @classmethod
    def _compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"bad pattern {pattern!r}: {error}") from error
        return value


class SystemTemplates(Strict):
    """The templates the bot sends on its own; one that is not in `templates` is not sent."""

    handoff_ack: str = Field(
        default="handoff_ack", description="A hand-off with no other reply: a person will answer."
    )
    opt_out: str = Field(default="opt_out_confirm", description="Confirms an opt-out.")
    opt_in: str = Field(default="opt_in_confirm", description="Confirms the bot is back.")
    holiday: str = Field(
        default="hours_holiday", description="An hours question about a day the calendar closes."
    )


class RuleSet(Strict):
    """The whole chatbot configuration."""

    version: Literal[1] = 1
    default_language: str = "en"
    default_team: str | None = Field(
        default=None, description="Team for hand-offs no rule names; DMDESK_DEFAULT_TEAM if unset."
    )
    default_calendar: str | None = None
    guards: Guards = Field(default_factory=Guards)
    system_templates: SystemTemplates = Field(default_factory=SystemTemplates)
    calendars: dict[str, Calendar] = Field(default_factory=dict)
    teams: dict[str, Team] = Field(default_factory=dict)
    templates: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Template name to {language: Jinja2 text}."
    )
    rules: list[Rule] = Field(default_factory=list)


class RuleSetError(ValueError):
    """A rule set that cannot be used, with where and why."""

    def __init__(self, problems: list["Problem"]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a rule set: where (rule id and index, or a path) and why."""

    reason: str
    rule_id: str | None = None
    rule_index: int | None = None
    location: str = ""

    def __str__(self) -> str:
        where = []
        if self.rule_id is not None or self.rule_index is not None:
            where.append(f"rule {self.rule_id or '?'} (#{self.rule_index})")
        if self.location:
            where.append(self.location)
        return f"{', '.join(where) or 'rule set'}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for API errors."""
        return {
            "rule_id": self.rule_id,
            "rule_index": self.rule_index,
            "location": self.location,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with its patterns compiled."""

    rule: Rule
    index: int
    keywords: re.Pattern[str] | None
    regex: re.Pattern[str] | None
    message_is: frozenset[str] | None = None


@dataclass(frozen=True)
class CompiledRuleSet:
    """A validated rule set, ready to evaluate (immutable: swapped whole, never edited)."""

    source: RuleSet
    rules: tuple[CompiledRule, ...]
    promotional: tuple[re.Pattern[str], ...]
    renderer: Renderer = field(default_factory=Renderer)
    revision: int = 0

    def calendar(self, name: str | None) -> Calendar:
        """The calendar called ``name`` (the default one, or always open, when None)."""
        name = name or self.source.default_calendar
        if name is None:
            return ALWAYS_OPEN
        return self.source.calendars[name]

    def with_revision(self, revision: int) -> "CompiledRuleSet":
        """The same rule set, stamped with its bucket revision."""
        return CompiledRuleSet(self.source, self.rules, self.promotional, self.renderer, revision)


def _keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str]:
    """Matched on :func:`plain_text` (no accents): "donde esta mi pedido" finds "dónde está";
    a last letter drawn out counts as itself ("merciii", "grazieee", "obrigadaa")."""
    words = (plain_text(word.strip()) for word in keywords if word.strip())
    alternatives = "|".join(re.escape(word) + ("+" if word[-1].isalpha() else "") for word in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _validation_problems(error: ValidationError, raw: Any) -> list[Problem]:
    problems = []
    rules = raw.get("rules") if isinstance(raw, dict) else None
    for item in error.errors():
        loc = item["loc"]
        rule_id = rule_index = None
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rule_index = loc[1]
            if isinstance(rules, list) and rule_index < len(rules):
                candidate = rules[rule_index]
                if isinstance(candidate, dict) and isinstance(candidate.get("id"), str):
                    rule_id = candidate["id"]
            loc = loc[2:]
        location = ".".join(str(part) for part in loc)
        problems.append(Problem(item["msg"], rule_id, rule_index, location))
    return problems


def parse_rule_set(raw: Any) -> RuleSet:
    """Validate the shape of a rule-set document; RuleSetError says where and why."""
    try:
        return RuleSet.model_validate(raw)
    except ValidationError as error:
        raise RuleSetError(_validation_problems(error, raw)) from error


def compile_rule_set(raw: Any, *, faq_available: bool = True) -> CompiledRuleSet:
    """Validate ``raw`` completely (shape, references, templates) and compile it."""
    rule_set = raw if isinstance(raw, RuleSet) else parse_rule_set(raw)
    promotional = compile_patterns(rule_set.guards.promotional_patterns)
    renderer = Renderer()
    problems = [
        *_reference_problems(rule_set),
        *_template_problems(rule_set, renderer, promotional),
    ]
    seen: dict[str, int] = {}
    for index, rule in enumerate(rule_set.rules):
        if rule.id in seen:
            problems.append(
                Problem(f"duplicate rule id (first at #{seen[rule.id]})", rule.id, index, "id")
            )
        seen.setdefault(rule.id, index)
        problems += _rule_problems(rule_set, rule, index, faq_available=faq_available)
    if problems:
        raise RuleSetError(problems)
    compiled = tuple(
        CompiledRule(
            rule,
            index,
            _keyword_pattern(rule.when.keywords) if rule.when.keywords else None,
            re.compile(rule.when.regex, re.IGNORECASE) if rule.when.regex else None,
            frozenset(normalised_command(text) for text in rule.when.message_is)
            if rule.when.message_is is not None
            else None,
        )
        for index, rule in enumerate(rule_set.rules)
    )
    return CompiledRuleSet(rule_set, compiled, promotional, renderer)


def _reference_problems(rule_set: RuleSet) -> list[Problem]:
    problems = []
    calendars = {"default_calendar": rule_set.default_calendar} | {
        f"teams.{name}.calendar": team.calendar for name, team in rule_set.teams.items()
    }
    for location, calendar in calendars.items():
        if calendar is not None and calendar not in rule_set.calendars:
            problems.append(Problem(f"unknown calendar {calendar!r}", location=location))
    if rule_set.default_team is not None and rule_set.default_team not in rule_set.teams:
        problems.append(Problem(f"unknown team {rule_set.default_team!r}", location="default_team"))
    return problems


def _template_problems(
    rule_set: RuleSet, renderer: Renderer, promotional: tuple[re.Pattern[str], ...]
) -> list[Problem]:
    problems = []
    default_language = rule_set.default_language
    for name, variants in rule_set.templates.items():
        if default_language not in variants:
            problems.append(
                Problem(
                    f"no {default_language!r} (default language) variant",
                    location=f"templates.{name}",
                )
            )
        for language, source in variants.items():
            location = f"templates.{name}.{language}"
            try:
                renderer.check(source)
            except TemplateRenderError as error:
                problems.append(Problem(f"template does not render: {error}", location=location))
                continue
            if (promo := promotional_match(source, promotional)) is not None:
                problems.append(
                    Problem(f"promotional wording {promo!r} is refused", location=location)
                )
    return problems


def _rule_problems(
    rule_set: RuleSet, rule: Rule, index: int, *, faq_available: bool
) -> list[Problem]:
    problems: list[Problem] = []

    def problem(reason: str, location: str) -> None:
        problems.append(Problem(reason, rule.id, index, location))

    def check_team(team: str | None, location: str) -> None:
        if team is not None and team != AUTO_TEAM and team not in rule_set.teams:
            problem(f"unknown team {team!r}", location)

    def check_template(name: str, location: str) -> None:
        if name not in rule_set.templates:
            problem(f"unknown template {name!r}", location)

    calendar = rule.when.calendar
    if calendar is not None and calendar not in rule_set.calendars:
        problem(f"unknown calendar {calendar!r}", "when.calendar")
    for position, action in enumerate(rule.then):
        location = f"then.{position}"
        if isinstance(action, ReplyAction):
            check_template(action.reply, location)
        elif isinstance(action, FaqAction):
            if not faq_available:
                problem("no FAQ knowledge base is loaded", location)
            if action.faq.clarify_template is not None:
                check_template(action.faq.clarify_template, f"{location}.faq.clarify_template")
            check_team(action.faq.handoff_team, f"{location}.faq.handoff_team")
        elif isinstance(action, HandoffAction):
            check_team(action.handoff.team, f"{location}.handoff.team")
    return problems


def load_rule_set_document(path: Path | None = None) -> dict[str, Any]:
    """The rule-set document at ``path``, or the default packaged with dmdesk."""
    return parse_document(packaged.read_text("shared.defaults", DEFAULT_RULES_RESOURCE, path))


ROUND_THE_CLOCK = {day: ["00:00-24:00"] for day in WEEKDAYS}


def with_calendar_hours(document: dict[str, Any], hours: dict[str, list[str]]) -> dict[str, Any]:
    """``document`` with every calendar set to ``hours`` and no holidays.

    Benchmarks and tests run the default rules round the clock, so what they
    measure does not depend on the hour they run at (outside business hours
    every DM would get the away reply).
    """
    calendars = {
        name: {**calendar, "hours": hours, "holidays": []}
        for name, calendar in document.get("calendars", {}).items()
    }
    return {**document, "calendars": calendars}


def parse_document(text: str | bytes) -> dict[str, Any]:
    """A JSON or YAML rule-set document as a mapping (:func:`shared.packaged.parse_yaml`); one
    whose strings hold an unpaired UTF-16 surrogate, which could never be stored or sent, is
    refused with the reason."""
    try:
        raw = packaged.parse_yaml(text)
    except yaml.YAMLError as error:
        raise RuleSetError([Problem(f"not valid YAML/JSON: {error}")]) from error
    if not isinstance(raw, dict):
        raise RuleSetError([Problem("a rule set is a mapping with a `rules` list")])
    if not packaged.utf8_encodable(raw):
        raise RuleSetError(
            [Problem("a string holds an unpaired UTF-16 surrogate: write the character itself")]
        )
    return raw
