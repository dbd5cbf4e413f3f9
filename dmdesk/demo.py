"""``dmdesk demo``: post a handful of sample DMs and show the queue they make."""

import time
import uuid

import httpx

SAMPLES = (
    ("ana", "Ana Souza", "Hi! Where is my order #4471? It was due on Monday."),
    ("ben", "Ben Carter", "This is the worst service ever, I want to complain about my delivery."),
    ("chloe", "Chloé Martin", "I think my account was hacked, someone changed my password!"),
    ("dev", "Dev Patel", "Thanks a lot, the new jacket is great :)"),
    ("emma", "Emma Rossi", "Do you ship to Italy? How much does it cost?"),
    ("finn", "Finn Olsen", "I was charged twice for the same order, please refund one."),
)


def run_demo(
    ingest_url: str,
    api_url: str,
    api_key: str,
    wait_seconds: float = 10.0,
    ingest_key: str | None = None,
) -> int:
    """Post the samples to ingest, then print the queue once they all show up.

    Ingest takes ``ingest_key`` (an ingest key, not an API key), or none when it is open
    (as `dmdesk up` opens it on loopback).
    """
    run = uuid.uuid4().hex[:8]
    batch = [
        {
            "id": f"demo-{run}-{handle}",
            "account_id": "demo-page",
            "contact": {"id": f"demo-{handle}", "name": name},
            "text": text,
        }
        for handle, name, text in SAMPLES
    ]
    with httpx.Client(timeout=10) as client:
        response = client.post(
            f"{ingest_url}/v1/messages",
            json=batch,
            headers={"X-API-Key": ingest_key} if ingest_key else {},
        )
        if response.status_code != httpx.codes.ACCEPTED:
            print(f"ingest refused the demo DMs: {response.status_code} {response.text}")
            return 1
        print(f"posted {len(batch)} DMs to {ingest_url}/v1/messages")
        deadline = time.monotonic() + wait_seconds
        items: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            items = client.get(
                f"{api_url}/v1/queue", params={"limit": 200}, headers={"X-API-Key": api_key}
            ).json()["items"]
            routed = [i for i in items if i["account_id"] == "demo-page" and i["team"]]
            if len(routed) >= len(SAMPLES):
                break
            time.sleep(0.2)
    print(f"\nthe queue at {api_url}/v1/queue:")
    print(f"{'id':>5}  {'priority':<8}  {'category':<15}  {'team':<10}  contact")
    for item in items:
        contact = item["contact"]
        assert isinstance(contact, dict)
        print(
            f"{item['id']:>5}  {item['priority']!s:<8}  {item['category']!s:<15}  "
            f"{item['team']!s:<10}  {contact.get('name')}"
        )
    return 0
