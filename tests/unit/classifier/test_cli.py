import io
import json

from dmdesk.classifier_commands import classify_stream, parse_line
from services.classifier.pipeline import Classifier


def run(lines: list[str], classifier: Classifier, batch_size: int = 2) -> list[dict[str, object]]:
    sink = io.StringIO()
    classify_stream(lines, sink, classifier, batch_size=batch_size)
    return [json.loads(line) for line in sink.getvalue().splitlines()]


def test_one_output_line_per_input_in_input_order(classifier: Classifier) -> None:
    lines = [
        json.dumps({"text": "Someone used my card without my permission, fraud!"}),
        json.dumps({"text": "Buy 10k followers cheap, link in bio", "contact": {"name": "x"}}),
        json.dumps({"text": "Merci beaucoup, super service !"}),
        json.dumps({"text": "here is my card 4539 1488 0343 6467"}),
        json.dumps({"text": None}),
    ]
    results = run(lines, classifier)
    assert len(results) == 5
    assert results[0]["priority"] == "urgent"
    assert results[1]["category"] == "spam"
    assert results[1]["spam"] is True
    assert results[2]["language"] == "fr"
    assert results[3]["private_info"] == ["card"]
    assert results[4]["category"] == "other"
    for result in results:
        assert set(result) >= {
            "language",
            "sentiment",
            "category",
            "confidence",
            "priority",
            "private_info",
            "spam",
            "reasons",
        }
        assert result["reasons"]


def test_unreadable_lines_give_an_error_in_their_place(classifier: Classifier) -> None:
    lines = [
        "not json",
        json.dumps({"text": "Where is my order?"}),
        json.dumps({"text": "hi", "contact": {"followers": -3}}),
        "\n",
        json.dumps(["a list"]),
    ]
    results = run(lines, classifier)
    assert [set(r) == {"error"} for r in results] == [True, False, True, True]
    assert "not JSON" in str(results[0]["error"])
    assert "contact.followers" in str(results[2]["error"])
    assert results[1]["category"] == "order_shipping"


def test_contact_and_request_flags_reach_the_priority() -> None:
    request = parse_line(
        json.dumps({"text": "hi", "contact": {"vip": True}, "is_request": True, "unanswered": 2})
    )
    assert request.contact is not None
    assert request.contact.vip
    assert request.is_request
    assert request.unanswered == 2
