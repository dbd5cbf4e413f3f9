"""``X-Hub-Signature-256``: Meta's HMAC of the raw request body with the app secret."""

import hashlib
import hmac
from collections.abc import Iterable
from enum import StrEnum

SIGNATURE_HEADER = "X-Hub-Signature-256"
ALGORITHMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}


class SignatureVerdict(StrEnum):
    """What checking a signature concluded; every value but ``VALID`` rejects the body."""

    VALID = "valid"
    MISSING = "signature_missing"
    MALFORMED = "signature_malformed"
    MISMATCH = "signature_mismatch"
    NOT_CONFIGURED = "app_secret_not_configured"


def sign(body: bytes, secret: str | bytes, algorithm: str = "sha256") -> str:
    """The header value Meta sends for ``body``: ``<algorithm>=<hex digest>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return f"{algorithm}={hmac.new(key, body, ALGORITHMS[algorithm]).hexdigest()}"


def check_signature(
    body: bytes,
    header: str | None,
    secrets: Iterable[str | bytes],
    *,
    algorithms: Iterable[str] = ("sha256",),
) -> SignatureVerdict:
    """Whether ``header`` is the HMAC of ``body`` under any of ``secrets``.

    Every secret is tried (one dmdesk may serve several Meta apps) and compared in
    constant time, so the answer does not leak how much of a guess was right.
    """
    keys = [s.encode() if isinstance(s, str) else s for s in secrets if s]
    if not keys:
        return SignatureVerdict.NOT_CONFIGURED
    if not header:
        return SignatureVerdict.MISSING
    algorithm, _, digest = header.strip().partition("=")
    algorithm = algorithm.lower()
    hash_function = ALGORITHMS.get(algorithm)
    expected_length = hash_function().digest_size * 2 if hash_function else 0
    if (
        algorithm not in set(algorithms)
        or hash_function is None
        or len(digest) != expected_length
        or not _is_hex(digest)
    ):
        return SignatureVerdict.MALFORMED
    given = digest.lower().encode()
    matched = False
    for key in keys:
        computed = hmac.new(key, body, hash_function).hexdigest().encode()
        matched |= hmac.compare_digest(computed, given)
    return SignatureVerdict.VALID if matched else SignatureVerdict.MISMATCH


def _is_hex(text: str) -> bool:
    return all(char in "0123456789abcdefABCDEF" for char in text)
