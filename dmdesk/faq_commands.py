"""``dmdesk eval-faq`` and ``dmdesk eval-bot``: measure the FAQ and what customers read."""

import argparse
import json
from pathlib import Path
from typing import Any

DEFAULT_THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5)


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``eval-faq`` to the ``dmdesk`` command line."""
    parser = commands.add_parser(
        "eval-faq",
        help="measure FAQ answers on held-out paraphrased questions",
        description="Top-1 accuracy, wrong-answer rate and hand-off rate of the FAQ retrieval.",
    )
    parser.add_argument("--faq", type=Path, help="knowledge base YAML (default: packaged)")
    parser.add_argument("--heldout", type=Path, help="held-out questions YAML (default: packaged)")
    parser.add_argument(
        "--threshold",
        type=float,
        action="append",
        help="confidence threshold(s) to report (default: the rule set's, plus a sweep)",
    )
    parser.add_argument("--misses", type=int, default=None, help="misses before hand-off")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run_eval_faq)
    bot = commands.add_parser(
        "eval-bot",
        help="measure what customers read: right answers, wrong answers, silent hand-offs",
        description="Runs the labelled customer messages (six languages) through the default "
        "rules and FAQ and reports, per language, right and wrong answers and silent hand-offs.",
    )
    bot.add_argument("--set", type=Path, help="evaluation set YAML (default: packaged)")
    bot.add_argument("--faq", type=Path, help="knowledge base YAML (default: packaged)")
    bot.add_argument("--rules", type=Path, help="rule set YAML (default: packaged)")
    bot.add_argument(
        "--split",
        choices=("dev", "heldout", "all"),
        action="append",
        help="which part to report (default: dev and heldout apart, then all)",
    )
    bot.add_argument(
        "--no-answer-check",
        action="store_true",
        help="answer as the retrieval alone would (the answer check trains on the set's dev part)",
    )
    bot.add_argument("--mistakes", action="store_true", help="list every message not right")
    bot.add_argument("--json", action="store_true", help="print JSON")
    bot.set_defaults(handler=run_eval_bot)


def run_eval_bot(args: argparse.Namespace) -> int:
    """Print the per-language figures of the bot on the labelled set."""
    from dataclasses import asdict  # noqa: PLC0415 - heavy imports only when the command runs

    from services.responder.answer_check import faq_index  # noqa: PLC0415
    from services.responder.bot_eval import evaluate_bot, interval, pooled  # noqa: PLC0415
    from services.responder.examples import Split, load_eval_set  # noqa: PLC0415
    from services.responder.faq import FaqIndex, load_knowledge_base  # noqa: PLC0415
    from shared.rules import (  # noqa: PLC0415
        compile_rule_set,
        load_rule_set_document,
    )

    rules = compile_rule_set(load_rule_set_document(args.rules))
    if args.no_answer_check:
        index = FaqIndex(load_knowledge_base(args.faq))
    else:
        index = faq_index(args.faq, args.set)
    eval_set = load_eval_set(args.set)
    choices = args.split or ["dev", "heldout", "all"]
    report: dict[str, Any] = {}
    totals: dict[str, dict[str, Any]] = {}
    for choice in choices:
        splits: tuple[Split, ...] = ("dev", "heldout") if choice == "all" else (choice,)
        figures = evaluate_bot(eval_set, rules, index, splits)
        report[choice] = {language: asdict(counts) for language, counts in figures.items()}
        totals[choice] = asdict(pooled(figures))
        for row in [*report[choice].values(), totals[choice]]:
            # 95 % Wilson intervals: a part of 40 messages a language is a small sample.
            row["wrong_interval"] = interval(row["wrong"], row["messages"])
            row["right_of_covered_interval"] = interval(row["covered_right"], row["covered"])
            if not args.mistakes:  # a held-out part's messages are shown only when asked for
                del row["mistakes"]
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    for choice, languages in report.items():
        print(
            f"\n{choice}: language  messages  right  wrong  silent  missed  right-of-covered"
            "   (95 % intervals: wrong; right of covered)"
        )
        for language, row in [*languages.items(), ("all", totals[choice])]:
            if not row["messages"]:
                print(f"{'':>{len(choice) + 2}}{language:<8}  no messages")
                continue
            covered = row["covered_right"] / max(1, row["covered"])
            wrong = row["wrong"] / max(1, row["messages"])
            print(
                f"{'':>{len(choice) + 2}}{language:<8}  {row['messages']:>8}  {row['right']:>5}"
                f"  {row['wrong']:>2} ({wrong:4.1%})  {row['silent']:>6}  {row['missed']:>6}"
                f"  {covered:>16.1%}   ({_span(row['wrong_interval'])};"
                f" {_span(row['right_of_covered_interval'])})"
            )
            if args.mistakes:
                for note in row["mistakes"]:
                    print(f"{'':>12}{note}")
    return 0


def _span(bounds: tuple[float, float] | None) -> str:
    return "-" if bounds is None else f"{bounds[0]:.1%}-{bounds[1]:.1%}"


def run_eval_faq(args: argparse.Namespace) -> int:
    """Print the FAQ figures for each threshold."""
    from dataclasses import asdict  # noqa: PLC0415 - heavy imports only when the command runs

    from services.responder.answer_check import faq_index  # noqa: PLC0415
    from services.responder.bot_eval import missing_translations  # noqa: PLC0415
    from services.responder.faq_eval import evaluate, load_heldout  # noqa: PLC0415
    from shared.rules import (  # noqa: PLC0415
        compile_rule_set,
        load_rule_set_document,
        parse_rule_set,
    )

    guards = parse_rule_set(load_rule_set_document()).guards
    index = faq_index(args.faq)
    heldout = load_heldout(args.heldout)
    misses = args.misses or guards.faq_misses_before_handoff
    thresholds = args.threshold or sorted({guards.faq_threshold, *DEFAULT_THRESHOLDS})
    rows: list[dict[str, Any]] = [
        asdict(evaluate(index, heldout, threshold, misses)) for threshold in thresholds
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    first = rows[0]
    print(
        f"FAQ evaluation: {first['questions']} held-out questions "
        f"({first['answerable']} answerable), {misses} tries before hand-off"
    )
    print(f"top-1 accuracy (best match is right): {first['top1_accuracy']:.1%}")
    missing = missing_translations(index.knowledge_base, compile_rule_set(load_rule_set_document()))
    print(f"missing translations (en es de fr it pt): {len(missing) or 'none'}")
    for line in missing:
        print(f"  {line}")
    header = "threshold  answered-right  wrong-answer  hand-off  out-of-scope-refused"
    print(header)
    for row in rows:
        marker = "  <- rule set" if row["threshold"] == guards.faq_threshold else ""
        print(
            f"{row['threshold']:>9.2f}  {row['answered_correctly']:>14.1%}"
            f"  {row['wrong_answer_rate']:>12.1%}  {row['handoff_rate']:>8.1%}"
            f"  {row['out_of_scope_refused']:>20.1%}{marker}"
        )
    return 0
