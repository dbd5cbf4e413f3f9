"""Meta webhooks (Messenger, Instagram, WhatsApp Cloud API), framework-free.

Signature checking, the verification handshake, and normalisation of webhook
bodies into the shared events; the ingest service wires them to HTTP and NATS.
"""

from services.ingest.meta.handshake import HandshakeAnswer, answer_handshake
from services.ingest.meta.normalise import (
    OBJECT_CHANNELS,
    Batch,
    InvalidBody,
    Normalised,
    PlatformEvent,
    content_hash,
    normalise,
    parse_json,
)
from services.ingest.meta.signature import (
    SIGNATURE_HEADER,
    SignatureVerdict,
    check_signature,
    sign,
)

__all__ = [
    "OBJECT_CHANNELS",
    "SIGNATURE_HEADER",
    "Batch",
    "HandshakeAnswer",
    "InvalidBody",
    "Normalised",
    "PlatformEvent",
    "SignatureVerdict",
    "answer_handshake",
    "check_signature",
    "content_hash",
    "normalise",
    "parse_json",
    "sign",
]
