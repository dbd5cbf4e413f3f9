"""`dmdesk bench-projections` measures the api's real projections, not an empty loop."""

import pytest
from sqlalchemy import text

from dmdesk.bench_projections import measure
from shared.db import create_engine

ROUTED = """
SELECT count(*) FROM conversations cv
JOIN messages m ON m.conversation_id = cv.id
WHERE cv.team = 'shipping' AND cv.category = 'order_shipping' AND m.classification IS NOT NULL
"""
CLOCKS = "SELECT count(*) FROM sla_clocks"


async def test_every_dm_is_stored_classified_and_handed_off(database_url: str) -> None:
    figures = await measure(database_url, dms=30, group=8)

    assert figures["dms"] == 30
    assert figures["events_per_transaction"] == 8
    assert figures["cpu_ms_per_dm"] > 0
    assert figures["dms_per_cpu_second"] == pytest.approx(1000 / figures["cpu_ms_per_dm"], rel=0.01)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text(ROUTED))).scalar_one() == 30
            # Each DM started its response and resolution clocks.
            assert (await connection.execute(text(CLOCKS))).scalar_one() == 60
    finally:
        await engine.dispose()
