"""The classifier's commands: ``classify``, ``train-classifier``, ``tune-classifier``,
``eval-classifier`` and ``bench-classifier``.

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

from dmdesk.arguments import positive_int
from services.classifier.datasets import DEFAULT_COMPLAINTS
from shared.events import Classification, Contact

if TYPE_CHECKING:
    from services.classifier.pipeline import Classifier, ClassifyRequest

BATCH_SIZE = 256


def output_record(classification: Classification) -> dict[str, Any]:
    """The JSON object ``dmdesk classify`` writes for one classification."""
    return {
        "language": classification.language,
        "language_source": classification.language_source.value,
        "sentiment": classification.sentiment,
        "category": classification.category.value,
        "confidence": classification.confidence,
        "priority": classification.priority.value,
        "private_info": [finding.kind.value for finding in classification.private_info],
        "spam": classification.spam,
        "complaint": classification.complaint,
        "critical": [signal.value for signal in classification.critical],
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


def corrections_from_api(url: str, api_key: str) -> list[tuple[str | None, str | None]]:
    """(text, corrected category) of every correction ``GET /v1/corrections`` lists.

    Raises:
        httpx.HTTPError: the API cannot be reached or refuses the key.
    """
    import httpx  # noqa: PLC0415 (lazy)

    response = httpx.get(
        f"{url.rstrip('/')}/v1/corrections",
        params={"limit": 5000},
        headers={"X-API-Key": api_key},
        timeout=30,
    )
    response.raise_for_status()
    return [(row.get("text"), row.get("new_category")) for row in response.json()]


async def corrections_from_database(url: str) -> list[tuple[str | None, str | None]]:
    """(text, corrected category) of every correction stored in the database at ``url``."""
    from sqlmodel import col, select  # noqa: PLC0415 (lazy)

    from shared.db import create_engine, session_factory  # noqa: PLC0415 (lazy)
    from shared.models import CorrectionRow, MessageRow  # noqa: PLC0415 (lazy)

    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            rows = await session.execute(
                select(col(MessageRow.text), col(CorrectionRow.new_category))
                .join(MessageRow, col(MessageRow.id) == col(CorrectionRow.message_id))
                .order_by(col(CorrectionRow.id))
            )
            return [(text, category) for text, category in rows]
    finally:
        await engine.dispose()


def _train(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from services.classifier.model import DEFAULT_ARTIFACT  # noqa: PLC0415 (lazy: numpy)
    from services.classifier.training import (  # noqa: PLC0415 (lazy: scikit-learn)
        TrainingConfig,
        correction_examples,
        train,
    )
    from shared.settings import get_settings  # noqa: PLC0415

    settings = get_settings()
    pairs: list[tuple[str | None, str | None]] = []
    if args.corrections_from_db is not None:
        pairs += asyncio.run(
            corrections_from_database(args.corrections_from_db or settings.sqlalchemy_url)
        )
    if args.corrections_url:
        pairs += corrections_from_api(args.corrections_url, args.api_key or "")
    corrections = correction_examples(pairs)
    if pairs:
        print(f"corrections: {len(corrections)} usable of {len(pairs)}")
    output = Path(args.output) if args.output else DEFAULT_ARTIFACT
    report = train(
        output,
        TrainingConfig(correction_weight=args.correction_weight),
        corrections=corrections,
    )
    print("\n".join(report.lines()))
    if args.publish:
        version = asyncio.run(_publish(output))
        print(f"published {version} to the {settings.models_bucket} object store")
    return 0


async def _publish(artefact: Path) -> str:
    import nats  # noqa: PLC0415

    from services.classifier.stores import publish_model  # noqa: PLC0415 (lazy: numpy)
    from shared.settings import get_settings  # noqa: PLC0415

    settings = get_settings()
    client = await nats.connect(settings.nats_url.split(","))
    try:
        return await publish_model(client.jetstream(), settings, artefact)
    finally:
        await client.close()


def _evaluate(args: argparse.Namespace) -> int:
    from services.classifier.evaluation import evaluate  # noqa: PLC0415 (lazy: heavy)
    from services.classifier.model import load  # noqa: PLC0415 (lazy: numpy)
    from services.classifier.pipeline import Classifier  # noqa: PLC0415 (lazy: heavy)

    complaints = Path(args.complaints)
    if not complaints.is_file():
        print(f"eval-classifier: no complaints set at {complaints}; skipping it", file=sys.stderr)
    path = complaints if complaints.is_file() else None
    evaluation = evaluate(path, Classifier(load(Path(args.model))) if args.model else None)
    print("\n".join(evaluation.lines()))
    if args.before:
        before = evaluate(path, Classifier(load(Path(args.before))))
        print("\nbefore -> after (same held-out sets)")
        print("\n".join(compare(before.summary(), evaluation.summary())))
    return 0


def compare(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """One line per figure: before, after and the change."""
    return [
        f"  {name}: {before[name]:.4f} -> {value:.4f} ({value - before[name]:+.4f})"
        for name, value in after.items()
        if name in before
    ]


def _tune(_args: argparse.Namespace) -> int:
    from services.classifier.tuning import tune  # noqa: PLC0415 (lazy: scikit-learn)

    chosen = tune()
    print(f"settings: {chosen.config}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from dmdesk.bench_classifier import run  # noqa: PLC0415 (lazy: heavy)

    print(
        json.dumps(run(args.messages, args.batch_size, pin_one_core=not args.all_cores), indent=2)
    )
    return 0


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``classify``, ``train-classifier``, ``tune-classifier``, ``eval-classifier`` and
    ``bench-classifier``."""
    classify = commands.add_parser(
        "classify", help="classify JSON lines ({'text', 'contact'}) from stdin to stdout"
    )
    classify.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE)
    classify.set_defaults(handler=_classify)
    train = commands.add_parser("train-classifier", help="train the category model")
    train.add_argument(
        "--output", help="artefact to write (default: the one shipped in the package)"
    )
    train.add_argument(
        "--corrections-from-db",
        nargs="?",
        const="",
        metavar="DATABASE_URL",
        help="add the agents' corrections stored in this database (default: DMDESK_DATABASE_URL)",
    )
    train.add_argument(
        "--corrections-url", metavar="API_URL", help="add the corrections GET /v1/corrections lists"
    )
    train.add_argument("--api-key", help="read-scoped API key for --corrections-url")
    train.add_argument(
        "--correction-weight", type=float, default=3.0, help="weight of each correction"
    )
    train.add_argument(
        "--publish",
        action="store_true",
        help="publish the artefact to the NATS model bucket: running classifiers load it",
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
    evaluate.add_argument("--model", help="artefact to measure (default: the shipped one)")
    evaluate.add_argument(
        "--before", help="also measure this artefact and print before -> after for each figure"
    )
    evaluate.set_defaults(handler=_evaluate)
    tune = commands.add_parser(
        "tune-classifier",
        help="measure candidate training settings on a validation split of the training data",
    )
    tune.set_defaults(handler=_tune)
    bench = commands.add_parser("bench-classifier", help="DMs/s and peak memory of classification")
    bench.add_argument("--messages", type=positive_int, default=30_000)
    bench.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE)
    bench.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    bench.set_defaults(handler=_bench)
