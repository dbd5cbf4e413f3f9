"""The commands' number arguments: a bad count is a usage error, not a traceback later."""

import pytest

from dmdesk.cli import parser


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["bench-projections", "--dms", "0"], "0 is not a positive whole number"),
        (["bench-decisions", "--messages", "-3"], "-3 is not a positive whole number"),
        (["bench-ingest", "--concurrency", "two"], "'two' is not a whole number"),
        (["bench", "--rate", "0"], "0 is not a positive number"),
        (["bench", "--duration", "inf"], "inf is not a positive number"),
        (["bench", "--bot-share", "1.5"], "1.5 is not a share from 0 to 1"),
        (["bench-classifier", "--batch-size", "0"], "0 is not a positive whole number"),
    ],
)
def test_a_bad_number_is_a_usage_error_with_its_reason(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(argv)
    assert exit_.value.code == 2
    assert reason in capsys.readouterr().err


def test_good_numbers_parse() -> None:
    args = parser().parse_args(["bench", "--rate", "50.5", "--burst", "10", "--bot-share", "0"])
    assert (args.rate, args.burst, args.bot_share) == (50.5, 10, 0.0)
