"""``dmdesk eval-faq``: measure the FAQ on held-out paraphrases."""

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


def run_eval_faq(args: argparse.Namespace) -> int:
    """Print the FAQ figures for each threshold."""
    from dataclasses import asdict  # noqa: PLC0415 - heavy imports only when the command runs

    from services.responder.faq import FaqIndex, load_knowledge_base  # noqa: PLC0415
    from services.responder.faq_eval import evaluate, load_heldout  # noqa: PLC0415
    from services.responder.rules import load_rule_set_document, parse_rule_set  # noqa: PLC0415

    guards = parse_rule_set(load_rule_set_document()).guards
    index = FaqIndex(load_knowledge_base(args.faq))
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
