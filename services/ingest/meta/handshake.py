"""Meta's webhook verification handshake (``GET`` with ``hub.mode``, ``hub.verify_token``)."""

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HandshakeAnswer:
    """The challenge to echo back, or why the handshake is refused."""

    challenge: str | None
    refusal: str | None = None


def answer_handshake(params: Mapping[str, str], verify_tokens: Iterable[str]) -> HandshakeAnswer:
    """Echo ``hub.challenge`` when ``hub.mode`` is subscribe and the token is one of ours."""
    if params.get("hub.mode") != "subscribe":
        return HandshakeAnswer(None, "hub.mode must be 'subscribe'")
    challenge = params.get("hub.challenge")
    if not challenge:
        return HandshakeAnswer(None, "hub.challenge is missing")
    given = params.get("hub.verify_token", "").encode()
    matched = False
    for token in verify_tokens:
        if token:
            matched |= hmac.compare_digest(token.encode(), given)
    if not matched:
        return HandshakeAnswer(None, "hub.verify_token does not match")
    return HandshakeAnswer(challenge)
