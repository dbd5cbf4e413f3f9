"""schemathesis against the api's OpenAPI document: no server errors, no schema violations.

The api runs as a real process against its own nats-server and a SQLite file, beside a
responder (it answers the rules dry run); every operation is called with an admin key and
hypothesis-generated input.
"""

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import checks

from dmdesk.natsserver import NatsServer, free_port

pytestmark = pytest.mark.e2e

# Opaque tokens (cursors) are schema-valid strings the api rightly refuses with a 400;
# every other check (server errors, status codes, content types, response schemas,
# headers, ignored auth...) runs.
OPINIONS = [checks.positive_data_acceptance]
STREAMING = {"/v1/events"}


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    workdir = tmp_path_factory.mktemp("schemathesis")
    port, responder_port = free_port(), free_port()
    with NatsServer(workdir / "nats") as nats_server:
        env = {
            "PATH": "/usr/bin:/bin",
            "DMDESK_NATS_URL": nats_server.url,
            "DMDESK_DATA_DIR": str(workdir / "data"),
            "DMDESK_API_PORT": str(port),
            "DMDESK_LOG_LEVEL": "WARNING",
            # Thousands of calls a minute, some without a key: the limits have tests of
            # their own (tests/integration/test_api_limits.py).
            "DMDESK_API_RATE_LIMIT_PER_KEY": "100000/second",
            "DMDESK_API_RATE_LIMIT_PER_ADDRESS": "100000/second",
            "DMDESK_API_AUTH_FAILURE_LIMIT": "100000/second",
        }
        log = (workdir / "api.log").open("wb")
        api = subprocess.Popen(
            [sys.executable, "-m", "services.api"], env=env, stdout=log, stderr=log
        )
        responder = subprocess.Popen(
            [sys.executable, "-m", "services.responder"],
            env=env | {"DMDESK_RESPONDER_PORT": str(responder_port)},
            stdout=log,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for ready in (f"{url}/readyz", f"http://127.0.0.1:{responder_port}/readyz"):
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(ready).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.1)
            created = subprocess.run(
                [sys.executable, "-m", "dmdesk", "apikey", "create", "--name", "st", "--scope",
                 "admin"],
                env=env, check=True, capture_output=True, text=True,
            )  # fmt: skip
            yield url, created.stdout.strip().splitlines()[-1]
        finally:
            for process in (responder, api):
                process.terminate()
                process.wait(timeout=30)
            log.close()
            if api.returncode not in (0, -15):
                print(Path(workdir / "api.log").read_text())


def test_api_honours_its_openapi_document(api_url: tuple[str, str]) -> None:
    url, key = api_url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    # The event stream never ends, so a call would wait for the client's timeout each time;
    # tests/e2e/test_events_feed.py covers it.
    operations = [
        operation
        for operation in (result.ok() for result in schema.get_all_operations())
        if operation.path not in STREAMING
    ]
    assert len(operations) >= 15
    failures: dict[str, str] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,  # the same cases every run: CI must not flake on a new one
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=url, headers={"X-API-Key": key}, excluded_checks=OPINIONS
            )

        try:
            call()
        except Exception as exc:
            failures[operation.label] = str(exc)[:2000]
    assert failures == {}


JSON_SCALARS = (
    st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
    | st.text(max_size=30)
    | st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


def cursor_of(payload: object) -> str:
    text = payload if isinstance(payload, Deep) else json.dumps(payload)
    return base64.urlsafe_b64encode(text.encode()).decode()


class Deep(str):
    """JSON text nested too deep for Python's json module to build or write."""


@example(payload=Deep("[" * 3000 + "]" * 3000))
@example(payload=[float("inf"), "2026-01-01T00:00:00+00:00", 1])
@example(payload=[1, "9999-12-31T23:59:59-23:59", 2**70])
@given(
    payload=st.tuples(JSON_VALUES, JSON_VALUES, JSON_VALUES).map(list)
    | st.tuples(st.integers(), JSON_SCALARS, st.integers()).map(list)
    | JSON_VALUES
)
@settings(max_examples=150, deadline=None, derandomize=True)
def test_a_forged_queue_cursor_never_gets_a_server_error(
    api_url: tuple[str, str], payload: object
) -> None:
    url, key = api_url
    response = httpx.get(
        f"{url}/v1/queue", params={"cursor": cursor_of(payload)}, headers={"X-API-Key": key}
    )
    assert response.status_code in {200, 400, 422}, response.text
