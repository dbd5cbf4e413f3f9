"""Settings for every dmdesk process, read from ``DMDESK_*`` environment variables."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.events import PrivateInfoKind
from shared.ratelimit import parse_rule


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
    pull_linger_seconds: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="After a pull smaller than pull_batch_size, wait this long before the "
        "next, so that a steady flow is handled in batches (0: pull again at once).",
    )
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
    bot_contained_after_hours: float = Field(
        default=24,
        gt=0,
        description="A conversation the bot replied in, idle this long with no person's reply"
        " after the bot's, counts as contained (dmdesk_bot_containment_total).",
    )
    nudge_after_hours: float = Field(
        default=0,
        description="Before auto-closing, nudge a silent customer after this; 0: no nudge.",
    )
    nudge_text: str = Field(
        default="Is there anything else we can help you with?",
        description="The nudge sent to a silent customer.",
    )
    decision_late_seconds: float = Field(
        default=5.0,
        gt=0,
        description="A customer DM whose decision (dm.routed) is later than this is put in"
        " the queue from its classification, or from the inbound message when the classifier"
        " is behind too; the decision completes it when it comes.",
    )
    reassign_after_minutes: float = Field(
        default=0,
        description="Unassign a conversation whose customer waited this long; 0: never.",
    )
    log_level: str = Field(default="INFO", description="Root log level.")
    api_rate_limit_per_key: str = Field(
        default="100/second;3000/minute",
        description="Requests each API key may make to an api replica (429 past it), in the"
        " `limits` notation: `N/second;M/minute`.",
    )
    api_rate_limit_per_address: str = Field(
        default="200/second;6000/minute",
        description="Requests each client address may make to an api replica (429 past it).",
    )
    api_auth_failure_limit: str = Field(
        default="20/minute",
        description="Failed authentications a client address may make before its requests"
        " are refused (429) until the window passes.",
    )
    reply_confirm_kinds: list[PrivateInfoKind] = Field(
        default_factory=lambda: [PrivateInfoKind.CARD, PrivateInfoKind.IBAN],
        description=(
            "Kinds of private information an agent's reply may carry only when the request"
            " confirms them (`confirm_private_info`); otherwise it is refused with 409 and"
            " never sent. The other kinds come back as a warning."
        ),
    )

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
            " without one (or ingest_open) the generic endpoint refuses every request."
        ),
    )
    ingest_trusted_key_hashes: list[str] = Field(
        default_factory=list,
        description=(
            "SHA-256 hex digests of the ingest keys (JSON list) that may also set the fields"
            " only a trusted system should: contact vip, followers and tags, and a timestamp"
            " more than 5 minutes in the past."
        ),
    )
    ingest_open: bool = Field(
        default=False,
        description=(
            "Let POST /v1/messages in without a key (local development; `dmdesk up` sets it"
            " when it binds loopback). The trusted fields still need a trusted key."
        ),
    )
    ingest_rate_limit: str = Field(
        default="500/10 seconds;3000/minute",
        description=(
            "Requests each source (ingest key, or client address when open) may make to"
            " /v1/messages, in the `limits` notation (429 with Retry-After past it)."
            " Signed Meta webhooks are never limited."
        ),
    )
    ingest_body_timeout_seconds: float = Field(
        default=30,
        gt=0,
        description="How long ingest waits for a request body to arrive in full (408 after).",
    )
    ingest_masked_kinds: list[PrivateInfoKind] = Field(
        default_factory=lambda: [PrivateInfoKind.CARD],
        description=(
            "Kinds of private information ingest masks in a DM before publishing it (JSON"
            " list of card, iban, email, phone, address). Cards (all but the last four"
            " digits, and their security codes) are masked whatever this says; the kinds"
            " not listed are kept and flagged by the classifier."
        ),
    )
    contacts_bucket: str = Field(
        default="dmdesk_contacts",
        description="NATS KV bucket where ingest remembers contacts (message requests).",
    )
    contact_languages_bucket: str = Field(
        default="dmdesk_contact_languages",
        description="NATS KV bucket where the classifier keeps each contact's last detected"
        " language (the fallback for short DMs).",
    )
    models_bucket: str = Field(
        default="dmdesk_models",
        description="NATS object store bucket the classifiers load their category model from"
        " (`dmdesk train-classifier --publish`); they follow it without a restart.",
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
        " default (shared/defaults/rules.yaml) when unset.",
    )
    faq_path: Path | None = Field(
        default=None, description="FAQ knowledge base YAML; the packaged default when unset."
    )
    faq_examples_path: Path | None = Field(
        default=None,
        description="Labelled customer messages (`dmdesk eval-bot`'s format) whose dev part"
        " trains the FAQ's answer check; the packaged ones when unset with faq_path unset, and no"
        " check for a faq_path of one's own without them.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Where the responder keeps its trained answer check between starts (keyed by"
        " the files and code it is made from; the image ships one); $XDG_CACHE_HOME/dmdesk or"
        " ~/.cache/dmdesk when unset.",
    )
    rules_bucket: str = Field(
        default="dmdesk_rules", description="NATS KV bucket holding the live rule set."
    )
    dry_run_timeout_seconds: float = Field(
        default=5,
        gt=0,
        le=60,
        description="How long the api waits for a responder to answer a rules dry run (503 after).",
    )
    conversation_state_bucket: str = Field(
        default="dmdesk_conversation_state",
        description="NATS KV bucket of the responder's per-conversation state.",
    )

    profiles_bucket: str = Field(
        default="dmdesk_profiles",
        description="NATS KV bucket caching contacts' platform profiles (shared by replicas).",
    )
    profile_refresh_hours: float = Field(
        default=168,
        gt=0,
        description="A contact's profile is fetched from the platform again after this long.",
    )
    profile_retry_minutes: float = Field(
        default=60,
        gt=0,
        description="After a failed profile fetch, how long before a new DM tries again.",
    )
    profile_wait_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long the responder waits for a profile being fetched before it"
        " decides without it (a template then has no first name); 0: never waits.",
    )
    profile_rate_limit: str = Field(
        default="20/second;1000/minute",
        description="Profile fetches per page and responder replica, in the `limits` notation.",
    )
    profile_timeout_seconds: float = Field(
        default=5, gt=0, description="HTTP timeout of one profile request to the Graph API."
    )
    profile_max_attempts: int = Field(
        default=3,
        ge=1,
        description="Profile requests on rate-limit errors and 5xx (with back-off) before"
        " the fetch is recorded as failed.",
    )

    attachments_bucket: str = Field(
        default="dmdesk_attachments",
        description="NATS object store bucket keeping copies of inbound attachments.",
    )
    attachment_max_bytes: int = Field(
        default=25 * 1024 * 1024,
        gt=0,
        description="Largest attachment copied (Meta's own limit is 25 MB); larger ones are"
        " refused and recorded with the reason.",
    )
    attachment_content_types: list[str] = Field(
        default_factory=lambda: ["image/*", "video/*", "audio/*", "application/pdf"],
        description="Content types copied, as JSON; `type/*` matches a whole type.",
    )
    attachment_timeout_seconds: float = Field(
        default=30, gt=0, description="HTTP timeout of one attachment download."
    )
    attachment_max_attempts: int = Field(
        default=3, ge=1, description="Attachment downloads tried (with back-off) before failing."
    )

    def languages_of(self, account_id: str) -> list[str]:
        """The languages a page serves, its default first; empty means all of them."""
        return self.account_languages.get(account_id, [])

    def default_language_of(self, account_id: str) -> str:
        """The language a page falls back to."""
        languages = self.languages_of(account_id)
        return languages[0] if languages else self.default_language

    @field_validator(
        "api_rate_limit_per_key",
        "api_rate_limit_per_address",
        "api_auth_failure_limit",
        "ingest_rate_limit",
        "profile_rate_limit",
    )
    @classmethod
    def _a_rate_limit(cls, rule: str) -> str:
        parse_rule(rule)
        return rule

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
