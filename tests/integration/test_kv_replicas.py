"""Every KV bucket is defined once (shared/streams.py) with DMDESK_STREAM_REPLICAS replicas.

On a cluster, a bucket on one replica stops its readers and writers while the node that
holds it is down (the compose test's first run: every bot reply stopped). A bucket
created with one replica earlier (an older definition, or a single node moved to a
cluster) is raised to the replicas the settings ask for when it is opened.
"""

from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType

from shared.settings import Settings
from shared.streams import (
    attachments_store_config,
    contact_languages_bucket_config,
    contacts_bucket_config,
    conversation_state_bucket_config,
    models_store_config,
    open_key_value,
    profiles_bucket_config,
    rules_bucket_config,
)
from tests.cluster import NODES, jetstream_ready, loopback_cluster
from tests.stack import eventually

BUCKETS = [
    rules_bucket_config,
    conversation_state_bucket_config,
    contacts_bucket_config,
    profiles_bucket_config,
    contact_languages_bucket_config,
]
STORES = [attachments_store_config, models_store_config]


@pytest.mark.parametrize("definition", BUCKETS, ids=lambda d: d.__name__)
def test_every_bucket_has_the_stream_replicas(definition: object) -> None:
    settings = Settings(stream_replicas=3)
    config = definition(settings)  # type: ignore[operator]
    assert config.replicas == 3
    assert config.storage == StorageType.FILE
    assert config.direct


@pytest.mark.parametrize("definition", STORES, ids=lambda d: d.__name__)
def test_every_object_store_has_the_stream_replicas(definition: object) -> None:
    config = definition(Settings(stream_replicas=3))  # type: ignore[operator]
    assert config.replicas == 3
    assert config.storage == StorageType.FILE


async def test_a_bucket_without_direct_gets_is_given_them(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    client = await nats.connect(settings.nats_url)
    try:
        js = client.jetstream()
        old = conversation_state_bucket_config(settings)
        await js.create_key_value(
            KeyValueConfig(bucket=old.bucket, history=old.history, storage=StorageType.FILE)
        )
        assert not (await js.stream_info(f"KV_{old.bucket}")).config.allow_direct
        kv = await open_key_value(js, conversation_state_bucket_config(settings))
        assert (await js.stream_info(f"KV_{old.bucket}")).config.allow_direct
        await kv.put("key", b"value")
        assert (await kv.get("key")).value == b"value"
    finally:
        await client.close()


async def test_a_single_replica_bucket_is_raised_to_the_cluster_replicas(tmp_path: Path) -> None:
    with loopback_cluster(tmp_path, "dmdesk-kv") as by_name:
        servers = list(by_name.values())
        assert await eventually(lambda: jetstream_ready(servers[0].url), bool, timeout=30)
        client = await nats.connect([server.url for server in servers])
        try:
            js = client.jetstream()
            settings = Settings(stream_replicas=NODES)
            old = rules_bucket_config(settings)
            await js.create_key_value(
                KeyValueConfig(bucket=old.bucket, history=old.history, storage=StorageType.FILE)
            )
            assert (await js.stream_info(f"KV_{old.bucket}")).config.num_replicas == 1
            await open_key_value(js, rules_bucket_config(settings))
            info = await js.stream_info(f"KV_{old.bucket}")
            assert info.config.num_replicas == NODES
            fresh = await open_key_value(js, conversation_state_bucket_config(settings))
            assert (await fresh.status()).stream_info.config.num_replicas == NODES
        finally:
            await client.close()
