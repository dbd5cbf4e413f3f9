"""Subjects, the stream and consumers are defined once, and configs are never shared."""

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StorageType

from shared.events import (
    Category,
    Channel,
    Classification,
    ClassifiedMessage,
    Contact,
    InboundMessage,
    Priority,
    RoutedMessage,
    RouteOutcome,
    utcnow,
)
from shared.settings import Settings
from shared.streams import (
    CLASSIFIED_EVENT,
    CLASSIFIER,
    CONSUMERS,
    ECHO_EVENT,
    INBOUND_EVENT,
    RETIRED_API_DURABLES,
    RETIRED_RESPONDER_DURABLES,
    ROUTED_EVENT,
    SENDER,
    SUBJECTS,
    UnfitServerError,
    _check_filters,
    consumer_config,
    dead_letter_subject,
    inbound_subject,
    stream_config,
    subject_matches,
)


def test_each_call_builds_a_fresh_consumer_config() -> None:
    settings = Settings()
    first, second = consumer_config(CLASSIFIER, settings), consumer_config(CLASSIFIER, settings)
    assert first is not second
    first.filter_subject = "changed"
    assert second.filter_subject == "dm.inbound.*"


def test_consumers_ack_explicitly_and_leave_giving_up_to_the_dead_letter_path() -> None:
    config = consumer_config(CLASSIFIER, Settings())
    assert config.ack_policy == AckPolicy.EXPLICIT
    assert config.max_deliver == -1
    assert config.durable_name == "classifier-v1"


def test_durable_names_are_unique() -> None:
    names = [consumer.durable for consumer in CONSUMERS]
    assert len(names) == len(set(names))


def test_retired_durables_are_never_provisioned_again() -> None:
    """A retired name in use again would start where the v1 consumer stopped (README)."""
    assert not {consumer.durable for consumer in CONSUMERS} & set(RETIRED_API_DURABLES)


def test_one_file_backed_stream_carries_every_subject() -> None:
    config = stream_config(Settings(stream_replicas=3, dedupe_window_seconds=120))
    assert config.subjects == ["dm.>"]
    assert config.storage == StorageType.FILE
    assert config.num_replicas == 3
    assert config.duplicate_window == 120
    for channel in Channel:
        assert inbound_subject(channel).startswith("dm.inbound.")
    assert dead_letter_subject("classifier") == "dm.dlq.classifier"


def test_every_published_subject_has_one_definition_with_its_event_and_dedupe_id() -> None:
    patterns = [definition.pattern for definition in SUBJECTS]
    assert len(patterns) == len(set(patterns))
    message = InboundMessage(
        mid="m-1",
        channel=Channel.INSTAGRAM,
        account_id="ig-1",
        contact=Contact(platform_id="ana"),
        text="hi",
        platform_ts=utcnow(),
    )
    classification = Classification(
        category=Category.INQUIRY, confidence=0.9, priority=Priority.NORMAL, model_version="t"
    )
    routed = RoutedMessage(
        message=message,
        classification=classification,
        classified_at=utcnow(),
        outcome=RouteOutcome.IGNORED,
    )
    assert ROUTED_EVENT.subject(routed) == "dm.routed.quiet"
    assert ROUTED_EVENT.msg_id(routed) == "routed:instagram:m-1"
    assert INBOUND_EVENT.subject(message) == "dm.inbound.instagram"
    assert INBOUND_EVENT.msg_id(message) == ECHO_EVENT.msg_id(message) == "instagram:m-1"
    echo = message.model_copy(update={"is_echo": True})
    assert ECHO_EVENT.subject(echo) == "dm.echo.instagram"
    classified = ClassifiedMessage(message=message, classification=classification)
    assert CLASSIFIED_EVENT.msg_id(classified) == "classified:instagram:m-1"


def test_a_consumer_of_several_subjects_filters_on_each() -> None:
    config = consumer_config(SENDER, Settings())
    assert config.filter_subject is None
    assert config.filter_subjects == ["dm.routed.reply", "dm.outbound.requested"]
    assert consumer_config(CLASSIFIER, Settings()).filter_subjects is None
    retired = set(RETIRED_RESPONDER_DURABLES)
    assert not retired & {consumer.durable for consumer in CONSUMERS}


def test_a_server_that_drops_a_durables_subjects_is_refused() -> None:
    """NATS 2.9 ignores filter_subjects: the sender would read the whole stream."""
    asked = consumer_config(SENDER, Settings())
    assert set(asked.filter_subjects or ()) == set(SENDER.subjects)
    _check_filters(SENDER, asked)  # a 2.10 server keeps them
    with pytest.raises(UnfitServerError, match=r"NATS 2\.10 or later"):
        _check_filters(SENDER, ConsumerConfig(durable_name=SENDER.durable))
    _check_filters(CLASSIFIER, consumer_config(CLASSIFIER, Settings()))


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("dm.routed.*", "dm.routed.reply", True),
        ("dm.routed.*", "dm.routed", False),
        ("dm.routed.*", "dm.routed.reply.more", False),
        ("dm.outbound.result", "dm.outbound.result", True),
        ("dm.outbound.result", "dm.outbound.requested", False),
        ("dm.>", "dm.inbound.whatsapp", True),
        ("dm.>", "dm", False),
        ("dm.*.messenger", "dm.echo.messenger", True),
    ],
)
def test_a_subject_matches_a_pattern_as_nats_wildcards_do(
    pattern: str, subject: str, matches: bool
) -> None:
    assert subject_matches(pattern, subject) is matches
