"""API keys with scopes: every endpoint but health and metrics needs one."""

import hashlib
import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter
from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.api.assignment import registered
from shared.events import utcnow
from shared.models import AgentRow, ApiKeyRow, Scope
from shared.ratelimit import RateLimit, retry_after
from shared.settings import Settings

KEY_PREFIX = "dmd_"
_SCOPE_ORDER = {Scope.READ: 0, Scope.AGENT: 1, Scope.ADMIN: 2}

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key from `dmdesk apikey create`."
)
_bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")


class ApiLimits:
    """The api's rate limits: per key, per client address, and on failed authentication."""

    def __init__(self, settings: Settings, rejected: Counter) -> None:
        self.per_key = RateLimit(settings.api_rate_limit_per_key)
        self.per_address = RateLimit(settings.api_rate_limit_per_address)
        self.auth_failures = RateLimit(settings.api_auth_failure_limit)
        self.rejected = rejected
        for reason in _REASONS:  # every series from the start, so rate() sees the first
            rejected.labels(reason)

    def too_many(self, wait: float, reason: str) -> HTTPException:
        """The 429 to raise, counted by reason."""
        self.rejected.labels(reason).inc()
        return HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"too many requests: {_REASONS[reason]}",
            headers=retry_after(wait),
        )


_REASONS = {
    "auth_failures": "too many failed authentications from this address; wait",
    "address": "this address's rate limit is reached",
    "key": "this API key's rate limit is reached",
}


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


class Principal(BaseModel):
    """Who is calling: the API key's id, name and scope, and the agent a bound key acts as."""

    key_id: int
    name: str
    scope: Scope
    agent: str | None = None

    @property
    def actor(self) -> str:
        """Who the activity log names: the bound agent, or the key's name."""
        return self.agent or self.name

    def acting_as(self, named: str | None, field: str) -> str:
        """The agent this request acts as, where its body names one in ``field``.

        A bound key acts as its agent (the body may leave it out; naming another is
        refused with 403); an admin key or an unbound agent key acts for the agent the
        body names (422 when it names none).
        """
        if self.agent is not None:
            if named is not None and named != self.agent:
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    detail=f"this API key acts as agent {self.agent!r}; "
                    f"{field} {named!r} names another agent",
                )
            return self.agent
        if named is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"name the agent in {field!r}: this API key is not bound to one",
            )
        return named


class IssuedKey(BaseModel):
    """A new key: ``secret`` is shown this once and stored only as a hash."""

    id: int
    name: str
    scope: Scope
    agent: str | None
    secret: str


def hash_key(secret: str) -> str:
    """SHA-256 of a key: keys are long random strings, so a fast hash is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(
    session: AsyncSession, name: str, scope: Scope, agent: str | None = None
) -> IssuedKey:
    """Issue a new key with ``scope``; an agent-scope key may be bound to ``agent``, who is
    registered (offline, no team) if they are not yet."""
    if agent is not None:
        if scope != Scope.AGENT:
            raise ValueError("only a key with agent scope is bound to an agent")
        await register_agent(session, agent)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKeyRow(
        name=name, prefix=secret[:10], key_hash=hash_key(secret), scope=scope.value, agent=agent
    )
    session.add(row)
    await session.flush()
    assert row.id is not None
    return IssuedKey(id=row.id, name=name, scope=scope, agent=agent, secret=secret)


async def register_agent(session: AsyncSession, name: str) -> bool:
    """Register agent ``name`` unless they are; True when they are new."""
    if await registered(session, name) is not None:
        return False
    session.add(AgentRow(name=name))
    await session.flush()
    return True


async def revoke_key(session: AsyncSession, key_id: int) -> bool:
    """Revoke a key; False when there is no such active key."""
    result = await session.execute(
        update(ApiKeyRow)
        .where(col(ApiKeyRow.id) == key_id, col(ApiKeyRow.revoked_at).is_(None))
        .values(revoked_at=utcnow())
        .returning(col(ApiKeyRow.id))
    )
    return result.scalar_one_or_none() is not None


async def list_keys(session: AsyncSession) -> list[ApiKeyRow]:
    """Every key, newest first (hashes only, never secrets)."""
    rows = await session.execute(select(ApiKeyRow).order_by(col(ApiKeyRow.id).desc()))
    return list(rows.scalars())


async def authenticated(
    request: Request,
    header_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The caller's key (X-API-Key or a bearer token), or 401 with the reason.

    429 with ``Retry-After`` past a rate limit: the client address's, the key's, or, after
    repeated failed authentications from an address, every request from it for a while.
    """
    limits: ApiLimits = request.app.state.limits
    address = request.client.host if request.client else "unknown"
    if (wait := await limits.auth_failures.exhausted(address)) is not None:
        raise limits.too_many(wait, "auth_failures")
    if (wait := await limits.per_address.hit(address)) is not None:
        raise limits.too_many(wait, "address")
    secret = header_key or (bearer.credentials if bearer else None)
    if not secret:
        await limits.auth_failures.hit(address)
        raise _unauthorized("missing API key: send X-API-Key or Authorization: Bearer")
    # A session of its own, closed at once: a long response (the event stream) must not
    # hold a transaction, and on SQLite a transaction holds the write lock.
    sessions: async_sessionmaker[AsyncSession] = request.app.state.read_sessions
    async with sessions() as session:
        row = (
            await session.execute(
                select(ApiKeyRow).where(
                    col(ApiKeyRow.key_hash) == hash_key(secret),
                    col(ApiKeyRow.revoked_at).is_(None),
                )
            )
        ).scalar_one_or_none()
    if row is None or row.id is None:
        await limits.auth_failures.hit(address)
        raise _unauthorized("unknown or revoked API key")
    if (wait := await limits.per_key.hit(str(row.id))) is not None:
        raise limits.too_many(wait, "key")
    return Principal(key_id=row.id, name=row.name, scope=Scope(row.scope), agent=row.agent)


def require(scope: Scope) -> Any:
    """A dependency that admits keys with ``scope`` or a broader one (403 otherwise)."""

    async def check(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if _SCOPE_ORDER[principal.scope] < _SCOPE_ORDER[scope]:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this API key has scope '{principal.scope.value}'; "
                f"'{scope.value}' is needed",
            )
        return principal

    return Depends(check)


ReadKey = Annotated[Principal, require(Scope.READ)]
AgentKey = Annotated[Principal, require(Scope.AGENT)]
AdminKey = Annotated[Principal, require(Scope.ADMIN)]
