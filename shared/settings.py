"""Settings for every dmdesk process, read from ``DMDESK_*`` environment variables."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob the platform team can turn; each field is ``DMDESK_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="DMDESK_", extra="ignore")

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="NATS server(s), comma-separated for a cluster.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy async URL; empty means SQLite under the data directory.",
    )
    data_dir: Path = Field(
        default=Path("data"),
        description="Where `dmdesk up` keeps the embedded NATS store and the SQLite file.",
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP servers bind.")
    ingest_port: int = Field(default=8001, description="Ingest's HTTP port (webhooks).")
    api_port: int = Field(default=8000, description="The REST API's port.")
    classifier_port: int = Field(default=8002, description="Classifier's health/metrics port.")
    responder_port: int = Field(default=8003, description="Responder's health/metrics port.")
    nats_port: int = Field(
        default=0,
        description="Port of the embedded nats-server in `dmdesk up`; 0 picks a free one.",
    )

    meta_app_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Meta app secret used to check X-Hub-Signature-256.",
    )
    meta_verify_token: SecretStr = Field(
        default=SecretStr(""),
        description="Token Meta echoes in the webhook verification handshake.",
    )
    graph_api_url: str = Field(
        default="https://graph.facebook.com/v21.0",
        description="Base URL of Meta's Graph API (the Send API adapter).",
    )

    stream_name: str = Field(default="DMDESK", description="The JetStream stream for dm.>.")
    stream_replicas: int = Field(default=1, description="JetStream replicas (3 on a cluster).")
    stream_max_age_days: float = Field(default=30, description="How long the stream keeps events.")
    dedupe_window_seconds: float = Field(
        default=600,
        description="JetStream Nats-Msg-Id duplicate window.",
    )
    max_deliveries: int = Field(
        default=5,
        description="Deliveries of a failing message before it goes to the dead-letter subject.",
    )
    ack_wait_seconds: float = Field(default=30, description="Consumer ack wait.")
    pull_batch_size: int = Field(default=64, description="Messages fetched per pull request.")
    publish_timeout_seconds: float = Field(default=5, description="PubAck wait per publish.")
    graceful_timeout_seconds: float = Field(
        default=15,
        description="On SIGTERM, how long in-flight messages may take to finish.",
    )

    default_team: str = Field(default="support", description="Team that gets hand-offs.")
    auto_close_after_hours: float = Field(
        default=0,
        description="Resolve a conversation waiting on a silent customer after this; 0: never.",
    )
    nudge_after_hours: float = Field(
        default=0,
        description="Before auto-closing, nudge a silent customer after this; 0: no nudge.",
    )
    nudge_text: str = Field(
        default="Is there anything else we can help you with?",
        description="The nudge sent to a silent customer.",
    )
    reassign_after_minutes: float = Field(
        default=0,
        description="Unassign a conversation whose customer waited this long; 0: never.",
    )
    log_level: str = Field(default="INFO", description="Root log level.")

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to SQLite under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'dmdesk.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
