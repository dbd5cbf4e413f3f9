"""``dmdesk bench-decisions`` decides the evaluation set's messages and prints its figures."""

import json

import pytest

from dmdesk.cli import main


def test_bench_decisions_prints_cpu_per_decision_for_the_messages_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench-decisions", "--messages", "30"])
    assert exit_info.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["messages"] == 30
    assert report["mean_characters"] > 0
    assert report["cpu_ms_per_decision"] > 0
    assert report["cpu_ms_per_faq_search"] > 0
