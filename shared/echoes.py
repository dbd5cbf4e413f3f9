"""Whose message an echo is: dmdesk's own reply, or a person's (one rule for every service).

Meta echoes every message a page sends, dmdesk's replies included. The responder
(which stops the bot when a person replies) and the api (which records the message
and the SLA response) must read an echo the same way, so both call
:func:`attribute_echo`. No framework, no I/O: the caller passes what it knows.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EchoAttribution:
    """Who sent an echoed message.

    ``ours``: dmdesk sent it (never a person's response). ``request_id``: the outbound
    request it is, when known (its platform mid was recorded); ``None`` for an echo of
    dmdesk's that beat the Send API's answer, or a person's.
    """

    ours: bool
    request_id: str | None = None


PERSON = EchoAttribution(ours=False)


def attribute_echo(
    *,
    app_id: str | None,
    mid: str,
    our_app_ids: Collection[str],
    recorded: Mapping[str, str],
    sends_in_flight: bool,
) -> EchoAttribution:
    """Whose the echo ``mid`` (sent by Meta app ``app_id``, when the platform says) is.

    In order, whichever is known first (the echo can beat the Send API's answer):

    1. ``mid`` is one dmdesk recorded (``recorded``: platform mid -> request id): that
       request, whatever the app id says.
    2. The echo names its app and ``our_app_ids`` (``DMDESK_META_APP_IDS``) is set: ours
       when the app is one of them, else a person's (Meta's inbox, a phone, another tool).
    3. Nothing tells (no app id, or none configured): ours while one of dmdesk's sends is
       in flight (its mid is not recorded yet), else a person's.
    """
    if (request_id := recorded.get(mid)) is not None:
        return EchoAttribution(ours=True, request_id=request_id)
    if our_app_ids and app_id is not None:
        return EchoAttribution(ours=app_id in our_app_ids)
    return EchoAttribution(ours=True) if sends_in_flight else PERSON
