"""The supervisor renders children's JSON logs readable."""

from dmdesk.supervisor import render_log_line


def test_json_log_line_is_rendered_with_the_service_prefix() -> None:
    line = (
        '{"ts": "2026-11-28T11:00:01.5+00:00", "level": "WARNING", "logger": "x",'
        ' "message": "handler failed", "service": "api", "stage": "api", "deliveries": 2}'
    )
    assert render_log_line("api", line, colour=False) == (
        "api       | 11:00:01 WARNING handler failed stage=api deliveries=2"
    )


def test_other_lines_pass_through() -> None:
    assert render_log_line("ingest", "plain text", colour=False) == "ingest    | plain text"
