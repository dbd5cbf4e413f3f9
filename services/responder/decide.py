"""What the bot does with one classified DM: rules, FAQ and guards (no framework).

:func:`decide` is pure: the same message, conversation state, rule set and time
give the same decision, so a replica that lost a race re-decides on the fresh
state, and the dry-run endpoint shows exactly what the responder would do.
:func:`apply_decision` is how a decision changes the conversation's state.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from services.responder.calendar_words import day_asked_about, say_day, say_moment
from services.responder.faq import FaqIndex, FaqMatch
from services.responder.state import ConversationState
from shared.business_hours import Calendar
from shared.decisions import (
    Decision,
    FaqOutcome,
    PlannedClose,
    PlannedHandoff,
    PlannedReply,
    ReplyKind,
)
from shared.events import ClassifiedMessage, Priority
from shared.rule_guards import (
    asks_to_stop_messages,
    is_command,
    is_phrase_sequence,
    normalised_command,
    plain_text,
    promotional_match,
)
from shared.rule_templates import TemplateContact, TemplateContext, pick_language
from shared.rules import (
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

DEFAULT_RULE = "default-handoff"
GUARD_RULE = "guard"


@dataclass(frozen=True, slots=True)
class _Text:
    """A message's text in the forms the rules' conditions read, made once per decision
    (every rule's conditions read them)."""

    raw: str
    plain: str  # lower-cased, without accents (keywords, regex)
    command: str  # plain words, polite fillers dropped (message_is, max_words)

    @classmethod
    def of(cls, text: str | None) -> "_Text":
        raw = text or ""
        return cls(raw=raw, plain=plain_text(raw), command=normalised_command(raw))


_NO_TEXT = _Text(raw="", plain="", command="")


class _Turn:
    """The working state of one evaluation (``text``: what its rules read; a turn that only
    sends a system reply reads none)."""

    def __init__(
        self, decision: Decision, bot_may_reply: bool, replies_left: int, text: _Text = _NO_TEXT
    ) -> None:
        self.decision = decision
        self.text = text
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
    opted_out = state.opted_out
    if opted_out and is_command(message.text, guards.opt_in_words):
        # The way back works even though the opt-out handed the conversation to people.
        decision.opt_out = "in"
        trace.append("the contact opted back in to automated replies")
        turn = _Turn(decision, True, 1)
        _system_reply(turn, rules, classified, source.system_templates.opt_in, "opt_in", at)
        return decision
    if took_over:
        decision.silent_reason = "a human has taken the conversation"
        trace.append("guard: a human has taken the conversation; the bot stays out")
        return decision

    if is_command(message.text, guards.opt_out_words) or asks_to_stop_messages(message.text):
        _opt_out(decision, rules, classified, default_team, at, already=opted_out)
        return decision

    turn = _Turn(decision, True, max(0, guards.max_bot_replies - bot_turns), _Text.of(message.text))
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
        evidence = _evidence(compiled, classified, turn.text)
        trace.append(
            f"rule {compiled.rule.id} (#{compiled.index}) matched"
            + (f" on {', '.join(evidence)}" if evidence else "")
        )
        _run_actions(compiled, classified, rules, faq, turn, faq_misses, default_team, at)
        if decision.handoff is not None and decision.handoff.rule_id == compiled.rule.id:
            decision.handoff.signals = evidence
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
    if not opted_out:
        _acknowledge_handoff(turn, rules, classified, at)
    return decision


def _acknowledge_handoff(
    turn: _Turn, rules: CompiledRuleSet, classified: ClassifiedMessage, at: datetime
) -> None:
    """Never a silent hand-off: a person will answer, and roughly when."""
    decision = turn.decision
    handoff = decision.handoff
    if handoff is None or not handoff.acknowledge or decision.replies:
        return
    # Past the reply limit too: the conversation goes to people, this is the bot's last word.
    turn.bot_may_reply, turn.replies_left = True, max(turn.replies_left, 1)
    ack = rules.source.system_templates.handoff_ack
    _system_reply(turn, rules, classified, ack, "handoff_ack", at)


def _opt_out(
    decision: Decision,
    rules: CompiledRuleSet,
    classified: ClassifiedMessage,
    default_team: str,
    at: datetime,
    *,
    already: bool,
) -> None:
    """The contact wants no more automated replies: confirm once, and leave it to people."""
    decision.opt_out = "out"
    decision.trace.append("guard: the contact opted out of automated replies")
    decision.handoff = PlannedHandoff(
        rule_id=GUARD_RULE,
        team=_team(rules, AUTO_TEAM, classified, decision.language, default_team),
        priority=Priority.LOW,
        reason="contact opted out of automated replies",
        signals=["opt_out"],
        acknowledge=False,
    )
    if not already:
        turn = _Turn(decision, True, 1)
        _system_reply(turn, rules, classified, rules.source.system_templates.opt_out, "opt_out", at)


def _system_reply(
    turn: _Turn,
    rules: CompiledRuleSet,
    classified: ClassifiedMessage,
    template: str,
    kind: ReplyKind,
    at: datetime,
) -> None:
    """Send one of the bot's own messages, when the rule set has that template."""
    if template not in rules.source.templates:
        turn.decision.trace.append(f"no {template!r} template: nothing said ({kind})")
        return
    handoff = turn.decision.handoff
    rule_id = handoff.rule_id if kind == "handoff_ack" and handoff is not None else GUARD_RULE
    _reply(turn, rules, classified, rule_id, template, kind, at)


def _evidence(compiled: CompiledRule, classified: ClassifiedMessage, text: _Text) -> list[str]:
    """The signals that made ``compiled`` match, for the agent: critical:legal, complaint..."""
    when, classification = compiled.rule.when, classified.classification
    found: list[str] = []
    if when.critical is not None:
        found += [f"critical:{signal.value}" for signal in classification.critical
                  if signal in when.critical]  # fmt: skip
    if when.complaint:
        found.append("complaint")
    if when.sentiment_below is not None:
        found.append(f"sentiment:{classification.sentiment:.2f}")
    if when.category is not None:
        found.append(f"category:{classification.category.value}")
    if when.priority is not None:
        found.append(f"priority:{classification.priority.value}")
    if compiled.keywords is not None and (match := compiled.keywords.search(text.plain)):
        found.append(f"keyword:{match.group(0)}")
    if when.masked is not None:
        found += [f"masked:{kind.value}" for kind in classified.message.masked
                  if kind in when.masked]  # fmt: skip
    if when.has_text is False:
        found.append("no text")
    if when.business_hours is False:
        found.append("outside business hours")
    return found


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
    if _mismatch(compiled, classified, turn.text, rules, first_message, bot_turns, at) is not None:
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
    text: _Text,
    rules: CompiledRuleSet,
    first_message: bool,
    bot_turns: int,
    at: datetime,
) -> str | None:
    """The first condition of the rule that does not hold, or None when all hold."""
    when = compiled.rule.when
    message, classification = classified.message, classified.classification
    language = classification.language or rules.source.default_language
    # Cheapest first, stopping at the first that fails: most rules fail on their category or
    # a flag before their keywords, patterns or phrases need searching.
    if when.category is not None and classification.category not in when.category:
        return "category"
    if when.priority is not None and classification.priority not in when.priority:
        return "priority"
    if when.language is not None and language not in when.language:
        return "language"
    if when.channel is not None and message.channel not in when.channel:
        return "channel"
    if when.contact_tags is not None and not set(when.contact_tags) & set(message.contact.tags):
        return "contact_tags"
    if when.vip is not None and message.contact.vip != when.vip:
        return "vip"
    if when.first_message is not None and first_message != when.first_message:
        return "first_message"
    if when.spam is not None and classification.spam != when.spam:
        return "spam"
    if when.private_info is not None and bool(classification.private_info) != when.private_info:
        return "private_info"
    if when.complaint is not None and classification.complaint != when.complaint:
        return "complaint"
    if when.sentiment_below is not None and classification.sentiment > when.sentiment_below:
        return "sentiment_below"
    if when.critical is not None and not set(when.critical) & set(classification.critical):
        return "critical"
    if when.masked is not None and not set(when.masked) & set(message.masked):
        return "masked"
    if when.has_text is not None and bool(text.raw.strip()) != when.has_text:
        return "has_text"
    if when.max_words is not None and len(text.command.split()) > when.max_words:
        return "max_words"
    if when.bot_turns is not None:
        low, high = when.bot_turns.at_least, when.bot_turns.at_most
        if (low is not None and bot_turns < low) or (high is not None and bot_turns > high):
            return "bot_turns"
    if when.business_hours is not None:
        is_open = rules.calendar(when.calendar).is_open(at)
        if is_open != when.business_hours:
            return "business_hours"
    if compiled.keywords is not None and compiled.keywords.search(text.plain) is None:
        return "keywords"
    if compiled.regex is not None and not (
        compiled.regex.search(text.raw) or compiled.regex.search(text.plain)
    ):
        return "regex"
    if compiled.message_is is not None and not is_phrase_sequence(
        text.command, compiled.message_is
    ):
        return "message_is"
    return None


def _run_actions(
    compiled: CompiledRule,
    classified: ClassifiedMessage,
    rules: CompiledRuleSet,
    faq: FaqIndex | None,
    turn: _Turn,
    faq_misses: int,
    default_team: str,
    at: datetime,
) -> None:
    rule = compiled.rule
    decision = turn.decision
    for action in rule.then:
        if isinstance(action, ReplyAction):
            _reply(turn, rules, classified, rule.id, action.reply, "template", at)
        elif isinstance(action, FaqAction):
            _answer_from_faq(
                turn, rules, classified, faq, rule.id, action, faq_misses, default_team, at
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
                rule_id=rule.id,
                team=team,
                priority=priority,
                reason=options.reason,
                acknowledge=options.acknowledge,
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
    at: datetime,
    answer: str | None = None,
    asked_day: str | None = None,
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
    team = decision.handoff.team if decision.handoff else None
    calendar = _team_calendar(rules, team)
    back = _next_opening(calendar, at)
    context = TemplateContext(
        contact=TemplateContact.of(message.contact),
        channel=message.channel.value,
        language=decision.language,
        category=classification.category.value,
        priority=decision.priority.value,
        team=team,
        answer=answer,
        open_now=calendar.is_open(at),
        back_at=say_moment(back, calendar.timezone, language) if back else None,
        asked_day=asked_day,
    )
    text = rules.renderer.render(variants[language], context)
    _add_reply(
        turn,
        rules,
        PlannedReply(rule_id=rule_id, text=text, kind=kind, template=template, language=language),
    )


def _next_opening(calendar: Calendar, at: datetime) -> datetime | None:
    """When the calendar next opens after ``at`` (None while open, or when it never does)."""
    if calendar.is_open(at):
        return None
    try:
        return calendar.add(at, timedelta())
    except ValueError:  # a calendar with no hours at all
        return None


def _team_calendar(rules: CompiledRuleSet, team: str | None) -> Calendar:
    """The calendar of ``team`` (the default calendar for none or an unknown team)."""
    known = rules.source.teams.get(team) if team is not None else None
    return rules.calendar(known.calendar if known is not None else None)


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
    at: datetime,
) -> None:
    decision = turn.decision
    guards = rules.source.guards
    text = classified.message.text or ""
    match = faq.search(text, decision.language) if faq is not None else None
    holiday = _holiday_asked(rules, classified, match, at)
    verdict, settles = _faq_verdict(
        faq, match, guards.faq_threshold, decision, checked=holiday is None
    )
    if faq is not None and match is not None and verdict == "answer":
        decision.faq = FaqOutcome(
            entry_id=match.entry.id, score=round(match.score, 4), answered=True, settles=settles
        )
        decision.trace.append(f"FAQ {match.entry.id} answers (score {match.score:.2f})")
        if not (turn.bot_may_reply and turn.replies_left > 0):
            turn.needs_human_reason = turn.needs_human_reason or "bot reply limit reached"
            return
        if holiday is not None:
            decision.trace.append(f"the calendar closes on {holiday.isoformat()}: holiday answer")
            asked = say_day(holiday, decision.language)
            template = rules.source.system_templates.holiday
            _reply(turn, rules, classified, rule_id, template, "faq", at, asked_day=asked)
            return
        default_language = faq.knowledge_base.default_language
        answers = match.entry.answers
        language = decision.language if decision.language in answers else default_language
        reply = PlannedReply(rule_id=rule_id, text=answers[language], kind="faq", language=language)
        _add_reply(turn, rules, reply)
        return
    score = match.score if match is not None else 0.0
    decision.faq = FaqOutcome(
        entry_id=match.entry.id if match is not None else None,
        score=round(score, 4),
        answered=False,
        settles=settles,
    )
    misses = faq_misses + 1
    clarify = action.faq.clarify_template
    # A question the knowledge base knows it does not answer (jobs, stock...), or one next to
    # an entry's topic that the answer check finds the answer would not settle, goes to a
    # person at once: asking the customer to rephrase it would not help.
    known_unanswered = match is not None and match.unanswered_wins(guards.faq_threshold)
    refused = verdict == "refused"
    if clarify is None or known_unanswered or refused or misses >= guards.faq_misses_before_handoff:
        team = _team(
            rules, action.faq.handoff_team or AUTO_TEAM, classified, decision.language, default_team
        )
        if known_unanswered:
            reason = "the FAQ does not answer this kind of question"
        elif refused and match is not None:
            reason = f"the FAQ's {match.entry.id} answer would not settle this (answer check)"
        elif clarify is not None:
            reason = f"the FAQ could not answer after {misses} tries"
        else:
            reason = turn.needs_human_reason or "the FAQ has no answer to this question"
        decision.handoff = PlannedHandoff(
            rule_id=rule_id, team=team, priority=decision.priority, reason=reason
        )
        decision.trace.append(f"FAQ miss {misses} (score {score:.2f}): hand-off to {team}")
        return
    decision.trace.append(f"FAQ miss {misses} (score {score:.2f}): asking an open question")
    _reply(turn, rules, classified, rule_id, clarify, "clarify", at)


def _faq_verdict(
    faq: FaqIndex | None,
    match: FaqMatch | None,
    threshold: float,
    decision: Decision,
    *,
    checked: bool = True,
) -> tuple[Literal["answer", "miss", "refused"], float | None]:
    """Whether ``match`` is good enough to answer, a miss, or refused by the answer check (the
    retrieval would answer; the model trained on labelled messages finds the answer would not
    settle the case), with the check's probability (None when it was not asked: not
    ``checked``, for an answer the calendar gives rather than the entry's own). The trace
    says why."""
    if faq is None or match is None or not _clears(faq, match, threshold, decision):
        return "miss", None
    if not checked:
        decision.trace.append(
            f"FAQ {match.entry.id}: the calendar answers for the day asked about, not the"
            " entry's answer: the answer check is not asked"
        )
        return "answer", None
    settles = faq.settles(match)
    if settles is not None and faq.refuses(settles):
        decision.trace.append(
            f"FAQ {match.entry.id} (score {match.score:.2f}) refused by the answer check: its"
            f" answer settles this with probability {settles:.2f}, under"
            f" {faq.knowledge_base.min_answer_probability:.2f}"
        )
        return "refused", round(settles, 4)
    return "answer", None if settles is None else round(settles, 4)


def _clears(faq: FaqIndex, match: FaqMatch, threshold: float, decision: Decision) -> bool:
    """Whether ``match`` clears the retrieval's bars; a close call says so in the trace."""
    if faq.clears(match, threshold):
        return True
    if match.unanswered_topic:
        decision.trace.append(
            f"FAQ {match.entry.id} (score {match.score:.2f}) not answered: the message names a"
            " topic the FAQ does not answer"
        )
    elif match.score >= threshold:
        rival = match.runner_up_id or "a question the FAQ does not answer"
        decision.trace.append(
            f"FAQ {match.entry.id} (score {match.score:.2f}) too close to {rival}"
            f" ({match.runner_up:.2f}): not answered"
        )
    return False


def _holiday_asked(
    rules: CompiledRuleSet, classified: ClassifiedMessage, match: FaqMatch | None, at: datetime
) -> date | None:
    """The day an hours question (``match`` an entry of ``topic: hours``) asks about when the
    calendar closes on it: the bot then answers with the holiday template for that day."""
    template = rules.source.system_templates.holiday
    if match is None or match.entry.topic != "hours" or template not in rules.source.templates:
        return None
    calendar = rules.calendar(None)
    day = day_asked_about(classified.message.text or "", at, calendar.timezone)
    return day if day is not None and day in calendar.holidays else None


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
        state.human_took_over, state.human_took_over_at = False, None
    if decision.handoff is not None and not state.human_took_over:
        state.human_took_over = True
        state.human_took_over_at = classified.message.platform_ts
