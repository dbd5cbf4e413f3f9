"""``dmdesk classify``, ``train-classifier``, ``eval-classifier`` and ``bench-classifier``.

Heavy modules (numpy, lingua, scikit-learn) are imported when a command runs, so the
rest of the command line starts fast.
"""

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import ValidationError

from services.classifier.datasets import DEFAULT_COMPLAINTS
from shared.events import Classification, Contact

if TYPE_CHECKING:
    from services.classifier.pipeline import Classifier, ClassifyRequest

BATCH_SIZE = 256


def output_record(classification: Classification) -> dict[str, Any]:
    """The JSON object ``dmdesk classify`` writes for one classification."""
    return {
        "language": classification.language,
        "sentiment": classification.sentiment,
        "category": classification.category.value,
        "confidence": classification.confidence,
        "priority": classification.priority.value,
        "private_info": [finding.kind.value for finding in classification.private_info],
        "spam": classification.spam,
        "complaint": classification.complaint,
        "reasons": classification.reasons,
        "model_version": classification.model_version,
    }


def parse_line(line: str) -> "ClassifyRequest":
    """One input line (``{"text": ..., "contact": {...}, "is_request": false}``) as a request.

    Raises:
        ValueError: the line is not such a JSON object; the message says what is wrong.
    """
    from services.classifier.pipeline import ClassifyRequest  # noqa: PLC0415 (lazy: heavy)

    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error.msg} at column {error.colno}") from error
    if not isinstance(record, dict):
        # Bad input from the caller, reported like every other unreadable line.
        raise ValueError(  # noqa: TRY004
            "each line must be a JSON object with a 'text' field"
        )
    text = record.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError("'text' must be a string or null")
    contact = None
    if (raw_contact := record.get("contact")) is not None:
        if not isinstance(raw_contact, dict):
            raise ValueError("'contact' must be an object")
        try:
            contact = Contact.model_validate({"platform_id": "unknown", **raw_contact})
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"contact.{where}: {first['msg']}") from error
    unanswered = record.get("unanswered", 0)
    if not isinstance(unanswered, int) or unanswered < 0:
        raise ValueError("'unanswered' must be a non-negative integer")
    return ClassifyRequest(
        text=text,
        contact=contact,
        is_request=bool(record.get("is_request", False)),
        unanswered=unanswered,
    )


def classify_stream(
    source: Iterable[str],
    sink: IO[str],
    classifier: "Classifier | None" = None,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Classify JSON lines from ``source`` into ``sink``, one output line per input line.

    Blank lines are skipped; a line that cannot be read gives ``{"error": ...}`` in its
    place, so outputs stay in input order. Returns the number of such errors.
    """
    from services.classifier.pipeline import Classifier  # noqa: PLC0415 (lazy: heavy)

    classifier = classifier or Classifier()
    errors = 0
    for batch in _batches((line for line in source if line.strip()), batch_size):
        parsed: list[ClassifyRequest | str] = []
        for line in batch:
            try:
                parsed.append(parse_line(line))
            except ValueError as error:
                parsed.append(str(error))
        requests = [item for item in parsed if not isinstance(item, str)]
        results = iter(classifier.classify_batch(requests))
        for item in parsed:
            if isinstance(item, str):
                errors += 1
                record: dict[str, Any] = {"error": item}
            else:
                record = output_record(next(results))
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
        sink.flush()
    return errors


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _classify(args: argparse.Namespace) -> int:
    errors = classify_stream(sys.stdin, sys.stdout, batch_size=args.batch_size)
    return 1 if errors else 0


def _train(args: argparse.Namespace) -> int:
    from services.classifier.model import DEFAULT_ARTIFACT  # noqa: PLC0415 (lazy: numpy)
    from services.classifier.training import train  # noqa: PLC0415 (lazy: scikit-learn)

    report = train(Path(args.output) if args.output else DEFAULT_ARTIFACT)
    print("\n".join(report.lines()))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from services.classifier.evaluation import evaluate  # noqa: PLC0415 (lazy: heavy)

    complaints = Path(args.complaints)
    if not complaints.is_file():
        print(f"eval-classifier: no complaints set at {complaints}; skipping it", file=sys.stderr)
    evaluation = evaluate(complaints if complaints.is_file() else None)
    print("\n".join(evaluation.lines()))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from dmdesk.bench_classifier import run  # noqa: PLC0415 (lazy: heavy)

    print(
        json.dumps(run(args.messages, args.batch_size, pin_one_core=not args.all_cores), indent=2)
    )
    return 0


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``classify``, ``train-classifier``, ``eval-classifier`` and ``bench-classifier``."""
    classify = commands.add_parser(
        "classify", help="classify JSON lines ({'text', 'contact'}) from stdin to stdout"
    )
    classify.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    classify.set_defaults(handler=_classify)
    train = commands.add_parser("train-classifier", help="train the category model")
    train.add_argument(
        "--output", help="artefact to write (default: the one shipped in the package)"
    )
    train.set_defaults(handler=_train)
    evaluate = commands.add_parser(
        "eval-classifier", help="measure the classifier and the keyword baseline on held-out data"
    )
    evaluate.add_argument(
        "--complaints",
        default=str(DEFAULT_COMPLAINTS),
        help="path of complaints-data.csv (read in place, never copied)",
    )
    evaluate.set_defaults(handler=_evaluate)
    bench = commands.add_parser("bench-classifier", help="DMs/s and peak memory of classification")
    bench.add_argument("--messages", type=int, default=30_000)
    bench.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    bench.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    bench.set_defaults(handler=_bench)
