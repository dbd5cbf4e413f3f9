"""Subjects, the stream and consumers are defined once, and configs are never shared."""

from nats.js.api import AckPolicy, StorageType

from shared.events import Channel
from shared.settings import Settings
from shared.streams import (
    CLASSIFIER,
    CONSUMERS,
    RETIRED_API_DURABLES,
    consumer_config,
    dead_letter_subject,
    inbound_subject,
    stream_config,
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
