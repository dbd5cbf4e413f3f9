"""Ingest's Prometheus metrics."""

import re

from prometheus_client import CollectorRegistry, Counter

_LABEL_SAFE = re.compile(r"^[a-z0-9_:]{1,48}$")


def label(value: str) -> str:
    """``value`` as a metric label, or ``other``: platform-chosen names must not explode series."""
    return value if _LABEL_SAFE.match(value) else "other"


class IngestMetrics:
    """Received events, rejected requests and duplicates (the publish latency is the
    EventBus's ``dmdesk_publish_seconds``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "dmdesk_ingest_events_total",
            "Events stored in JetStream, by channel and kind.",
            ["channel", "kind"],
            registry=registry,
        )
        self.unknown = Counter(
            "dmdesk_ingest_unknown_events_total",
            "Platform events kept raw (unknown kind or fields that do not fit), by kind.",
            ["channel", "kind"],
            registry=registry,
        )
        self.refused = Counter(
            "dmdesk_ingest_refused_events_total",
            "Events of a signed webhook that could not be stored (kept as a refused raw event"
            " with the reason, no body), by channel and reason.",
            ["channel", "reason"],
            registry=registry,
        )
        self.rejected = Counter(
            "dmdesk_ingest_rejected_total",
            "Requests refused before anything was published, by reason.",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "dmdesk_ingest_duplicates_total",
            "Events JetStream had already stored (dedupe by message id).",
            ["channel"],
            registry=registry,
        )

    def reject(self, reason: str) -> None:
        """Count a refused request."""
        self.rejected.labels(label(reason)).inc()
