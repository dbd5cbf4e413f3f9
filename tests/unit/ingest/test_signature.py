"""X-Hub-Signature-256 and the verification handshake, without HTTP."""

import pytest

from services.ingest.meta import SignatureVerdict, answer_handshake, check_signature, sign
from tests.unit.ingest.conftest import SHARED_FIXTURES

# messenger4j's WebhookTest vector (see ../shared/fixtures/meta/SOURCES.md).
MESSENGER4J_SECRET = "60efff025951cddde78c8d03de52cc90"
MESSENGER4J_SHA1 = "sha1=3daa41999293ff66c3eb313e04bcf77861bb0276"
MESSENGER4J_SHA256 = "sha256=2c28be6e4b8c62b732b3487f445dbec6624868db6844b347567ebc86d7da3ad4"


@pytest.fixture
def messenger4j_body() -> bytes:
    path = SHARED_FIXTURES / "messenger_text_signed_sha1__messenger4j.json"
    if not path.exists():
        pytest.skip(f"captured payloads not here: {SHARED_FIXTURES.resolve()} (a CI-only folder)")
    return path.read_bytes()


def test_messenger4j_vector_verifies_with_sha1_and_sha256(messenger4j_body: bytes) -> None:
    assert len(messenger4j_body) == 274
    assert sign(messenger4j_body, MESSENGER4J_SECRET, "sha1") == MESSENGER4J_SHA1
    assert sign(messenger4j_body, MESSENGER4J_SECRET) == MESSENGER4J_SHA256
    assert (
        check_signature(messenger4j_body, MESSENGER4J_SHA256, [MESSENGER4J_SECRET])
        == SignatureVerdict.VALID
    )
    assert (
        check_signature(
            messenger4j_body, MESSENGER4J_SHA1, [MESSENGER4J_SECRET], algorithms=("sha1",)
        )
        == SignatureVerdict.VALID
    )


def test_sha1_is_refused_where_only_sha256_is_accepted(messenger4j_body: bytes) -> None:
    verdict = check_signature(messenger4j_body, MESSENGER4J_SHA1, [MESSENGER4J_SECRET])
    assert verdict == SignatureVerdict.MALFORMED


def test_one_changed_byte_does_not_verify(messenger4j_body: bytes) -> None:
    tampered = messenger4j_body.replace(b"34wrr3wr", b"34wrr3wR")
    verdict = check_signature(tampered, MESSENGER4J_SHA256, [MESSENGER4J_SECRET])
    assert verdict == SignatureVerdict.MISMATCH


def test_any_configured_app_secret_verifies() -> None:
    body = b'{"object":"page","entry":[]}'
    header = sign(body, "second")
    assert check_signature(body, header, ["first", "second"]) == SignatureVerdict.VALID
    assert check_signature(body, header.upper().replace("SHA256", "sha256"), ["second"]) == (
        SignatureVerdict.VALID
    )
    assert check_signature(body, header, ["first"]) == SignatureVerdict.MISMATCH


@pytest.mark.parametrize(
    ("header", "secrets", "verdict"),
    [
        (None, ["s"], SignatureVerdict.MISSING),
        ("", ["s"], SignatureVerdict.MISSING),
        ("sha256=", ["s"], SignatureVerdict.MALFORMED),
        ("sha256=zz" + "0" * 62, ["s"], SignatureVerdict.MALFORMED),
        ("md5=" + "0" * 32, ["s"], SignatureVerdict.MALFORMED),
        ("0" * 64, ["s"], SignatureVerdict.MALFORMED),
        ("sha256=" + "0" * 64, ["s"], SignatureVerdict.MISMATCH),
        ("sha256=" + "0" * 64, [], SignatureVerdict.NOT_CONFIGURED),
        ("sha256=" + "0" * 64, [""], SignatureVerdict.NOT_CONFIGURED),
    ],
)
def test_signature_verdicts(
    header: str | None, secrets: list[str], verdict: SignatureVerdict
) -> None:
    assert check_signature(b"{}", header, secrets) == verdict


def test_handshake_echoes_the_challenge_for_a_known_token() -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": "t2", "hub.challenge": "1158201444"}
    assert answer_handshake(params, ["t1", "t2"]).challenge == "1158201444"


@pytest.mark.parametrize(
    ("params", "tokens", "refusal"),
    [
        ({"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "1"}, ["t"], "match"),
        ({"hub.mode": "unsubscribe", "hub.verify_token": "t", "hub.challenge": "1"}, ["t"], "mode"),
        ({"hub.mode": "subscribe", "hub.verify_token": "t"}, ["t"], "challenge"),
        ({"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}, [""], "match"),
    ],
)
def test_handshake_is_refused(params: dict[str, str], tokens: list[str], refusal: str) -> None:
    answer = answer_handshake(params, tokens)
    assert answer.challenge is None
    assert refusal in (answer.refusal or "")
