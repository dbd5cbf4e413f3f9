"""What the bot does with one classified DM: rules, FAQ and guards (no framework).

:func:`decide` is pure: the same message, conversation state, rule set and time
give the same decision, so a replica that lost a race re-decides on the fresh
state, and the dry-run endpoint shows exactly what the responder would do.
:func:`apply_decision` is how a decision changes the conversation's state.
"""

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from services.responder.faq import FaqIndex
from services.responder.guards import is_command, promotional_match
from services.responder.rules import (
    AUTO_TEAM,
    CloseAction,
    CompiledRule,
    CompiledRuleSet,
    FaqAction,
    HandoffAction,
    NothingAction,
    ReplyAction,
    SetPriorityAction,
    TagAction,
)
from services.responder.state import ConversationState
from services.responder.templates import TemplateContact, TemplateContext, pick_language
from shared.events import ClassifiedMessage, Priority

DEFAULT_RULE = "default-handoff"
GUARD_RULE = "guard"
ReplyKind = Literal["template", "faq", "clarify"]


class PlannedReply(BaseModel):
    """A bot message to send."""

    rule_id: str
    text: str
    kind: ReplyKind = "template"
    template: str | None = None
    language: str


class PlannedHandoff(BaseModel):
    """A hand-off to a human team."""

    rule_id: str
    team: str
    priority: Priority
    reason: str


class PlannedClose(BaseModel):
    """Closing the conversation without a reply."""

    rule_id: str
    reason: str


class FaqOutcome(BaseModel):
    """What the FAQ search found."""

    entry_id: str | None
    score: float
    answered: bool


class Decision(BaseModel):
    """Everything the bot decided about one message, and why (``trace``)."""

    replies: list[PlannedReply] = Field(default_factory=list)
    handoff: PlannedHandoff | None = None
    close: PlannedClose | None = None
    tags: list[str] = Field(default_factory=list)
    priority: Priority
    language: str
    matched_rules: list[str] = Field(default_factory=list)
    faq: FaqOutcome | None = None
    opt_out: Literal["out", "in"] | None = None
    new_session: bool = False
    silent_reason: str | None = Field(
        default=None, description="Why the bot stayed out of the conversation, when it did."
    )
    trace: list[str] = Field(default_factory=list)

    @property
    def publishes_nothing(self) -> bool:
        """A decision with no reply, hand-off or close (a human has it, or `nothing`)."""
        return not self.replies and self.handoff is None and self.close is None


class _Turn:
    """The working state of one evaluation."""

    def __init__(self, decision: Decision, bot_may_reply: bool, replies_left: int) -> None:
        self.decision = decision
        self.bot_may_reply = bot_may_reply
        self.replies_left = replies_left
        self.stopped_by_nothing = False
        self.needs_human_reason: str | None = None


def decide(
    classified: ClassifiedMessage,
    state: ConversationState,
    rules: CompiledRuleSet,
    faq: FaqIndex | None,
    *,
    default_team: str,
    now: datetime,
) -> Decision:
    """Apply guards and rules to ``classified`` in the conversation ``state``."""
    message, classification = classified.message, classified.classification
    source = rules.source
    guards = source.guards
    language = classification.language or source.default_language
    at = min(message.platform_ts, now)
    decision = Decision(priority=classification.priority, language=language)
    trace = decision.trace

    bot_turns, faq_misses, took_over = _session(state, at, guards.bot_resumes_after_hours, decision)
    if took_over:
        decision.silent_reason = "a human has taken the conversation"
        trace.append("guard: a human has taken the conversation; the bot stays out")
        return decision

    opted_out = state.opted_out
    if is_command(message.text, guards.opt_out_words):
        decision.opt_out = "out"
        trace.append("guard: the contact opted out of automated replies")
        decision.handoff = PlannedHandoff(
            rule_id=GUARD_RULE,
            team=_team(rules, AUTO_TEAM, classified, language, default_team),
            priority=Priority.LOW,
            reason="contact opted out of automated replies",
        )
        return decision
    if opted_out and is_command(message.text, guards.opt_in_words):
        decision.opt_out = "in"
        opted_out = False
        trace.append("the contact opted back in to automated replies")

    turn = _Turn(decision, True, max(0, guards.max_bot_replies - bot_turns))
    if opted_out:
        turn.bot_may_reply = False
        turn.needs_human_reason = "contact opted out of automated replies"
        trace.append("guard: the contact opted out; no bot reply")
    elif turn.replies_left == 0:
        turn.bot_may_reply = False
        turn.needs_human_reason = f"bot reply limit ({guards.max_bot_replies}) reached"
        trace.append(f"guard: the bot already replied {bot_turns} times")

    first_message = state.messages_seen == 0 or decision.new_session
    for compiled in rules.rules:
        if not _applies(compiled, classified, rules, turn, first_message, bot_turns, at):
            continue
        decision.matched_rules.append(compiled.rule.id)
        trace.append(f"rule {compiled.rule.id} (#{compiled.index}) matched")
        _run_actions(compiled, classified, rules, faq, turn, faq_misses, default_team)
        if not compiled.rule.continue_:
            break

    if decision.publishes_nothing and not turn.stopped_by_nothing:
        reason = turn.needs_human_reason or "no bot rule matched"
        decision.handoff = PlannedHandoff(
            rule_id=DEFAULT_RULE,
            team=_team(rules, AUTO_TEAM, classified, language, default_team),
            priority=decision.priority,
            reason=reason,
        )
        trace.append(f"hand-off to {decision.handoff.team}: {reason}")
    return decision


def _session(
    state: ConversationState, at: datetime, resume_after_hours: float | None, decision: Decision
) -> tuple[int, int, bool]:
    """Bot turns, FAQ misses and hand-over, reset when a quiet conversation starts afresh."""
    bot_turns, faq_misses, took_over = state.bot_turns, state.faq_misses, state.human_took_over
    last = state.last_customer_message_at
    if (
        (took_over or bot_turns or faq_misses)
        and resume_after_hours is not None
        and last is not None
        and at - last >= timedelta(hours=resume_after_hours)
    ):
        decision.new_session = True
        decision.trace.append(f"conversation quiet for {at - last}: a new bot session starts")
        return 0, 0, False
    return bot_turns, faq_misses, took_over


def _applies(
    compiled: CompiledRule,
    classified: ClassifiedMessage,
    rules: CompiledRuleSet,
    turn: _Turn,
    first_message: bool,
    bot_turns: int,
    at: datetime,
) -> bool:
    """Whether the rule is enabled, its conditions hold and the confidence guard allows it."""
    rule = compiled.rule
    if not rule.enabled:
        return False
    if _mismatch(compiled, classified, rules, first_message, bot_turns, at) is not None:
        return False
    confidence, minimum = classified.classification.confidence, rules.source.guards.min_confidence
    if rule.when.is_category_rule and confidence < minimum:
        turn.decision.trace.append(
            f"rule {rule.id}: skipped, classification confidence {confidence:.2f}"
            f" below {minimum:.2f}"
        )
        turn.needs_human_reason = turn.needs_human_reason or "low-confidence classification"
        return False
    return True


def _mismatch(
    compiled: CompiledRule,
    classified: ClassifiedMessage,
    rules: CompiledRuleSet,
    first_message: bool,
    bot_turns: int,
    at: datetime,
) -> str | None:
    """The first condition of the rule that does not hold, or None when all hold."""
    when = compiled.rule.when
    message, classification = classified.message, classified.classification
    text = message.text or ""
    language = classification.language or rules.source.default_language
    checks: list[tuple[str, bool]] = []
    if when.category is not None:
        checks.append(("category", classification.category in when.category))
    if when.priority is not None:
        checks.append(("priority", classification.priority in when.priority))
    if when.language is not None:
        checks.append(("language", language in when.language))
    if when.channel is not None:
        checks.append(("channel", message.channel in when.channel))
    if compiled.keywords is not None:
        checks.append(("keywords", compiled.keywords.search(text) is not None))
    if compiled.regex is not None:
        checks.append(("regex", compiled.regex.search(text) is not None))
    if when.contact_tags is not None:
        checks.append(("contact_tags", bool(set(when.contact_tags) & set(message.contact.tags))))
    if when.vip is not None:
        checks.append(("vip", message.contact.vip == when.vip))
    if when.first_message is not None:
        checks.append(("first_message", first_message == when.first_message))
    if when.spam is not None:
        checks.append(("spam", classification.spam == when.spam))
    if when.private_info is not None:
        checks.append(("private_info", bool(classification.private_info) == when.private_info))
    if when.bot_turns is not None:
        low, high = when.bot_turns.at_least, when.bot_turns.at_most
        checks.append(
            ("bot_turns", (low is None or bot_turns >= low) and (high is None or bot_turns <= high))
        )
    if when.business_hours is not None:
        is_open = rules.calendar(when.calendar).is_open(at)
        checks.append(("business_hours", is_open == when.business_hours))
    return next((name for name, holds in checks if not holds), None)


def _run_actions(
    compiled: CompiledRule,
    classified: ClassifiedMessage,
    rules: CompiledRuleSet,
    faq: FaqIndex | None,
    turn: _Turn,
    faq_misses: int,
    default_team: str,
) -> None:
    rule = compiled.rule
    decision = turn.decision
    for action in rule.then:
        if isinstance(action, ReplyAction):
            _reply(turn, rules, classified, rule.id, action.reply, "template")
        elif isinstance(action, FaqAction):
            _answer_from_faq(
                turn, rules, classified, faq, rule.id, action, faq_misses, default_team
            )
        elif isinstance(action, TagAction):
            decision.tags += [tag for tag in action.tag if tag not in decision.tags]
        elif isinstance(action, SetPriorityAction):
            decision.priority = action.set_priority
            if decision.handoff is not None:
                decision.handoff.priority = action.set_priority
        elif isinstance(action, HandoffAction):
            options = action.handoff
            team = _team(rules, options.team, classified, decision.language, default_team)
            priority = options.priority or decision.priority
            decision.priority = priority
            decision.handoff = PlannedHandoff(
                rule_id=rule.id, team=team, priority=priority, reason=options.reason
            )
        elif isinstance(action, CloseAction):
            decision.close = PlannedClose(rule_id=rule.id, reason=action.close.reason)
        elif isinstance(action, NothingAction):
            turn.stopped_by_nothing = True


def _reply(
    turn: _Turn,
    rules: CompiledRuleSet,
    classified: ClassifiedMessage,
    rule_id: str,
    template: str,
    kind: ReplyKind,
    answer: str | None = None,
) -> None:
    decision = turn.decision
    if not turn.bot_may_reply or turn.replies_left <= 0:
        decision.trace.append(f"rule {rule_id}: reply {template!r} withheld by a guard")
        turn.needs_human_reason = turn.needs_human_reason or "bot reply limit reached"
        return
    source = rules.source
    variants = source.templates[template]
    language = pick_language(variants, decision.language, source.default_language)
    message, classification = classified.message, classified.classification
    context = TemplateContext(
        contact=TemplateContact.of(message.contact),
        channel=message.channel.value,
        language=decision.language,
        category=classification.category.value,
        priority=decision.priority.value,
        team=decision.handoff.team if decision.handoff else None,
        answer=answer,
    )
    text = rules.renderer.render(variants[language], context)
    _add_reply(
        turn,
        rules,
        PlannedReply(rule_id=rule_id, text=text, kind=kind, template=template, language=language),
    )


def _add_reply(turn: _Turn, rules: CompiledRuleSet, reply: PlannedReply) -> None:
    promo = promotional_match(reply.text, rules.promotional)
    if promo is not None:
        turn.decision.trace.append(f"rule {reply.rule_id}: reply refused, promotional wording")
        turn.needs_human_reason = "the bot's reply was refused as promotional"
        return
    turn.decision.replies.append(reply)
    turn.replies_left -= 1


def _answer_from_faq(
    turn: _Turn,
    rules: CompiledRuleSet,
    classified: ClassifiedMessage,
    faq: FaqIndex | None,
    rule_id: str,
    action: FaqAction,
    faq_misses: int,
    default_team: str,
) -> None:
    decision = turn.decision
    guards = rules.source.guards
    match = faq.search(classified.message.text or "") if faq is not None else None
    if faq is not None and match is not None and match.score >= guards.faq_threshold:
        decision.faq = FaqOutcome(
            entry_id=match.entry.id, score=round(match.score, 4), answered=True
        )
        default_language = faq.knowledge_base.default_language
        answers = match.entry.answers
        language = decision.language if decision.language in answers else default_language
        decision.trace.append(f"FAQ {match.entry.id} answers (score {match.score:.2f})")
        if turn.bot_may_reply and turn.replies_left > 0:
            reply = PlannedReply(
                rule_id=rule_id, text=answers[language], kind="faq", language=language
            )
            _add_reply(turn, rules, reply)
        else:
            turn.needs_human_reason = turn.needs_human_reason or "bot reply limit reached"
        return
    score = match.score if match is not None else 0.0
    decision.faq = FaqOutcome(
        entry_id=match.entry.id if match is not None else None,
        score=round(score, 4),
        answered=False,
    )
    misses = faq_misses + 1
    if misses >= guards.faq_misses_before_handoff:
        team = _team(
            rules, action.faq.handoff_team or AUTO_TEAM, classified, decision.language, default_team
        )
        decision.handoff = PlannedHandoff(
            rule_id=rule_id,
            team=team,
            priority=decision.priority,
            reason=f"the FAQ could not answer after {misses} tries",
        )
        decision.trace.append(f"FAQ miss {misses} (score {score:.2f}): hand-off to {team}")
        return
    decision.trace.append(f"FAQ miss {misses} (score {score:.2f}): asking an open question")
    _reply(turn, rules, classified, rule_id, action.faq.clarify_template, "clarify")


def _team(
    rules: CompiledRuleSet,
    wanted: str,
    classified: ClassifiedMessage,
    language: str,
    default_team: str,
) -> str:
    """``wanted``, or for ``auto`` the first team whose skills fit category and language."""
    source = rules.source
    fallback = source.default_team or default_team
    if wanted != AUTO_TEAM:
        return wanted
    category = classified.classification.category
    for name, team in source.teams.items():
        skills = team.skills
        if category in skills.categories and (not skills.languages or language in skills.languages):
            return name
    for name, team in source.teams.items():
        skills = team.skills
        if not skills.categories and language in skills.languages:
            return name
    return fallback


def apply_decision(
    state: ConversationState, classified: ClassifiedMessage, decision: Decision
) -> None:
    """Change ``state`` the way ``decision`` on ``classified`` does."""
    if decision.new_session:
        state.bot_turns = state.faq_misses = 0
        state.human_took_over, state.human_took_over_at = False, None
    state.messages_seen += 1
    state.customer_wrote(classified.message.platform_ts)
    state.bot_turns += len(decision.replies)
    if decision.faq is not None:
        state.faq_misses = 0 if decision.faq.answered else state.faq_misses + 1
    if decision.opt_out == "out":
        state.opted_out = True
    elif decision.opt_out == "in":
        state.opted_out = False
    if decision.handoff is not None and not state.human_took_over:
        state.human_took_over = True
        state.human_took_over_at = classified.message.platform_ts
