"""``dmdesk bench-decisions``: what the responder's decision costs per DM, on customers' text.

Every message of the bot's evaluation set (``dmdesk eval-bot``: written as customers write,
six languages, 90-odd characters on average) is decided as the responder decides a DM:
:func:`~services.responder.decide.decide` with the default rules and the packaged FAQ, in
one process with nothing else running. It prints the process's CPU time per decision and
per FAQ search (the search is most of a decision). ``dmdesk bench`` offers short,
machine-written DMs, so this is the figure for real text. No timing is asserted anywhere.
"""

import argparse
import itertools
import json
import time
from typing import Any

from dmdesk.arguments import positive_int

WARM_UP = 200


def run(messages: int | None = None) -> dict[str, Any]:
    """Decide ``messages`` evaluation messages (default: all of them, dev and held-out)."""
    from services.responder.answer_check import faq_index  # noqa: PLC0415 - heavy imports
    from services.responder.bot_eval import (  # noqa: PLC0415
        classified_for,
        decide_as_evaluated,
        state_for,
    )
    from services.responder.examples import load_eval_set  # noqa: PLC0415
    from shared.rules import compile_rule_set, load_rule_set_document  # noqa: PLC0415

    rules = compile_rule_set(load_rule_set_document())
    index = faq_index()
    cases = [
        (classified_for(message, language, position), state_for(message))
        for language, part in load_eval_set().items()
        for position, message in enumerate([*part.dev, *part.heldout])
    ]
    cases = cases[:messages] if messages is not None else cases

    def decide_all(batch: list[Any]) -> None:
        for classified, state in batch:
            decide_as_evaluated(classified, state, rules, index)

    decide_all(list(itertools.islice(itertools.cycle(cases), WARM_UP)))
    started = time.process_time()
    decide_all(cases)
    decisions = time.process_time() - started
    started = time.process_time()
    for classified, _ in cases:
        index.search(classified.message.text or "", classified.classification.language)
    searches = time.process_time() - started
    texts = [classified.message.text or "" for classified, _ in cases]
    return {
        "messages": len(cases),
        "mean_characters": round(sum(map(len, texts)) / max(1, len(texts)), 1),
        "cpu_ms_per_decision": round(decisions * 1000 / max(1, len(cases)), 3),
        "cpu_ms_per_faq_search": round(searches * 1000 / max(1, len(cases)), 3),
        "decisions_per_cpu_second": round(len(cases) / decisions) if decisions else None,
    }


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``dmdesk bench-decisions``."""
    bench = commands.add_parser(
        "bench-decisions", help="the responder's decisions on the evaluation set, in process"
    )
    bench.add_argument(
        "--messages", type=positive_int, help="decide only the first N (default: all)"
    )
    bench.set_defaults(handler=lambda args: print(json.dumps(run(args.messages), indent=2)) or 0)
