"""Rate limits on the api: per key, per client address, and after failed authentications."""

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from services.api.app import build
from services.api.auth import create_key
from shared.db import transaction
from shared.models import Scope
from shared.service import service_app
from shared.settings import Settings


@pytest.fixture
async def limited(
    settings_factory: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    settings = settings_factory(
        api_rate_limit_per_key="5/minute",
        api_rate_limit_per_address="8/minute",
        api_auth_failure_limit="3/minute",
    )
    app = service_app(build(settings))
    async with app.router.lifespan_context(app):
        async with transaction(app.state.sessions) as session:
            keys = [(await create_key(session, f"k{i}", Scope.READ)).secret for i in range(2)]

        def client(key_index: int | None = 0, address: str = "10.0.0.1") -> httpx.AsyncClient:
            headers = {"X-API-Key": keys[key_index]} if key_index is not None else {}
            transport = httpx.ASGITransport(app=app, client=(address, 4000))
            return httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers)

        yield client


async def test_a_key_past_its_limit_gets_429_with_retry_after(
    limited: Callable[..., httpx.AsyncClient],
) -> None:
    async with limited(0) as client:
        codes = [(await client.get("/v1/queue")).status_code for _ in range(5)]
        refused = await client.get("/v1/queue")
    assert codes == [200] * 5
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "API key" in refused.json()["detail"]
    async with limited(1) as other_key:
        assert (await other_key.get("/v1/queue")).status_code == 200


async def test_an_address_past_its_limit_gets_429_whatever_the_key(
    limited: Callable[..., httpx.AsyncClient],
) -> None:
    async with limited(0) as first, limited(1) as second:
        codes = [(await first.get("/v1/queue")).status_code for _ in range(4)]
        codes += [(await second.get("/v1/queue")).status_code for _ in range(4)]
        refused = await second.get("/v1/queue")
    assert codes == [200] * 8
    assert refused.status_code == 429
    assert "address" in refused.json()["detail"]
    async with limited(1, address="10.0.0.2") as elsewhere:
        assert (await elsewhere.get("/v1/queue")).status_code == 200


async def test_repeated_failed_authentication_locks_the_address_out(
    limited: Callable[..., httpx.AsyncClient],
) -> None:
    async with limited(None) as anonymous:
        wrong = [
            (await anonymous.get("/v1/queue", headers={"X-API-Key": f"dmd_wrong{i}"})).status_code
            for i in range(3)
        ]
    async with limited(0) as right_key:
        locked = await right_key.get("/v1/queue")
        assert (await right_key.get("/healthz")).status_code == 200
    assert wrong == [401] * 3
    assert locked.status_code == 429
    assert "failed authentications" in locked.json()["detail"]
    async with limited(0, address="10.0.0.3") as other_address:
        assert (await other_address.get("/v1/queue")).status_code == 200
