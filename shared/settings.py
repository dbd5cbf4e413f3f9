"""Settings for every dmdesk process, read from ``DMDESK_*`` environment variables."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob the platform team can turn; each field is ``DMDESK_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="DMDESK_", extra="ignore")

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="NATS server(s), comma-separated for a cluster.",
    )
    nats_user: str = Field(
        default="",
        description="NATS user this service connects as (deploy/nats/auth.conf); empty"
        " connects without credentials.",
    )
    nats_password: SecretStr = Field(default=SecretStr(""), description="Password of `nats_user`.")
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
    default_language: str = Field(
        default="en",
        description="ISO 639-1 language of a page not in account_languages: the language a"
        " DM falls back to when it cannot be told, and the bot's fallback for a missing"
        " translation.",
    )
    account_languages: dict[str, list[str]] = Field(
        default_factory=dict,
        description="The languages each page serves, as JSON {account id: [ISO 639-1, ...]};"
        " the first is that page's default. Pages not listed serve every supported language"
        " with default_language first.",
    )
    priority_policy: Path | None = Field(
        default=None,
        description="The classifier's priority policy (YAML, hot-reloaded); empty: the default.",
    )
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

    meta_app_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            "More Meta apps, as JSON {app name or id: app secret}; a webhook signed by any of"
            " them (or by meta_app_secret) is accepted."
        ),
    )
    meta_app_ids: list[str] = Field(
        default_factory=list,
        description=(
            "The ids of the Meta apps dmdesk sends with, as JSON. An echo from one of them is"
            " dmdesk's own reply; from any other app (Meta's inbox, a phone) a human's."
            " Empty: echoes are told apart by the mids dmdesk recorded and its sends in flight."
        ),
    )
    meta_verify_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="More verify tokens (JSON list) accepted in the handshake, one per app.",
    )
    ingest_max_body_bytes: int = Field(
        default=1_048_576, gt=0, description="Largest webhook or /v1/messages body (413 above)."
    )
    ingest_api_key_hashes: list[str] = Field(
        default_factory=list,
        description=(
            "SHA-256 hex digests of the keys allowed to POST /v1/messages (JSON list);"
            " empty leaves the generic endpoint open."
        ),
    )
    contacts_bucket: str = Field(
        default="dmdesk_contacts",
        description="NATS KV bucket where ingest remembers contacts (message requests).",
    )

    send_adapter: Literal["log", "meta"] = Field(
        default="log",
        description="How the responder sends: `log` records what would be sent, `meta` calls"
        " the Send API / WhatsApp Cloud API.",
    )
    page_access_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Access tokens as JSON {page, Instagram or WhatsApp phone-number id: token}.",
    )
    whatsapp_access_token: SecretStr = Field(
        default=SecretStr(""),
        description="WhatsApp Cloud API token for phone-number ids not in page_access_tokens.",
    )
    send_max_attempts: int = Field(
        default=5, ge=1, description="Send API attempts on rate limits and 5xx before failing."
    )
    send_backoff_seconds: float = Field(
        default=0.5, ge=0, description="First back-off between Send API attempts (doubles)."
    )
    send_timeout_seconds: float = Field(default=10, gt=0, description="Send API HTTP timeout.")
    send_rate_per_second: float = Field(
        default=300,
        gt=0,
        description="Send API calls per second per page and replica (Meta: ~300/s for text).",
    )
    rules_path: Path | None = Field(
        default=None,
        description="Rule set YAML loaded when the rules bucket is empty; the packaged"
        " default (deploy/rules.yaml) when unset.",
    )
    faq_path: Path | None = Field(
        default=None, description="FAQ knowledge base YAML; the packaged default when unset."
    )
    rules_bucket: str = Field(
        default="dmdesk_rules", description="NATS KV bucket holding the live rule set."
    )
    conversation_state_bucket: str = Field(
        default="dmdesk_conversation_state",
        description="NATS KV bucket of the responder's per-conversation state.",
    )

    def languages_of(self, account_id: str) -> list[str]:
        """The languages a page serves, its default first; empty means all of them."""
        return self.account_languages.get(account_id, [])

    def default_language_of(self, account_id: str) -> str:
        """The language a page falls back to."""
        languages = self.languages_of(account_id)
        return languages[0] if languages else self.default_language

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
