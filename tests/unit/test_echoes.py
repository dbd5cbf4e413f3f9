"""Whose an echo is (shared/echoes.py): the one rule the responder and the api both use."""

from shared.echoes import EchoAttribution, attribute_echo

OUR_APP = "1517924325178312"
METAS_INBOX = "263902037430900"
SENT = {"m_sent": "bot-abc-0"}


def test_an_echo_from_our_app_is_ours_before_the_send_apis_answer() -> None:
    found = attribute_echo(
        app_id=OUR_APP, mid="m_new", our_app_ids=[OUR_APP], recorded={}, sends_in_flight=True
    )
    assert found == EchoAttribution(ours=True, request_id=None)


def test_an_echo_from_our_app_is_ours_even_with_no_send_in_flight() -> None:
    found = attribute_echo(
        app_id=OUR_APP, mid="m_new", our_app_ids=[OUR_APP], recorded={}, sends_in_flight=False
    )
    assert found.ours


def test_an_echo_from_our_app_after_the_answer_is_matched_to_its_request() -> None:
    found = attribute_echo(
        app_id=OUR_APP, mid="m_sent", our_app_ids=[OUR_APP], recorded=SENT, sends_in_flight=False
    )
    assert found == EchoAttribution(ours=True, request_id="bot-abc-0")


def test_an_echo_from_another_app_is_a_persons_even_while_a_send_is_in_flight() -> None:
    found = attribute_echo(
        app_id=METAS_INBOX, mid="m_new", our_app_ids=[OUR_APP], recorded={}, sends_in_flight=True
    )
    assert found == EchoAttribution(ours=False)


def test_a_recorded_mid_is_ours_whatever_the_app_id_says() -> None:
    found = attribute_echo(
        app_id=METAS_INBOX,
        mid="m_sent",
        our_app_ids=[OUR_APP],
        recorded=SENT,
        sends_in_flight=False,
    )
    assert found == EchoAttribution(ours=True, request_id="bot-abc-0")


def test_without_an_app_id_a_recorded_mid_is_ours() -> None:
    found = attribute_echo(
        app_id=None, mid="m_sent", our_app_ids=[OUR_APP], recorded=SENT, sends_in_flight=False
    )
    assert found == EchoAttribution(ours=True, request_id="bot-abc-0")


def test_without_an_app_id_an_echo_during_a_send_in_flight_is_ours_unmatched() -> None:
    found = attribute_echo(
        app_id=None, mid="m_new", our_app_ids=[OUR_APP], recorded=SENT, sends_in_flight=True
    )
    assert found == EchoAttribution(ours=True, request_id=None)


def test_without_app_ids_configured_the_app_id_tells_nothing() -> None:
    found = attribute_echo(
        app_id=METAS_INBOX, mid="m_new", our_app_ids=[], recorded={}, sends_in_flight=True
    )
    assert found.ours
    found = attribute_echo(
        app_id=METAS_INBOX, mid="m_new", our_app_ids=[], recorded={}, sends_in_flight=False
    )
    assert not found.ours


def test_an_unknown_echo_with_nothing_in_flight_is_a_persons() -> None:
    found = attribute_echo(
        app_id=None, mid="m_unknown", our_app_ids=[OUR_APP], recorded=SENT, sends_in_flight=False
    )
    assert found == EchoAttribution(ours=False)
