"""``dmdesk bench``: signed Messenger webhooks through the whole stack, against raw JetStream.

Starts the embedded stack (a nats-server and the four services as processes on free
loopback ports, a temporary SQLite file or ``--database-url``), or uses a running one
(``--use-running``). A local Send API stub stands in for Meta's Graph API, so a bot
reply's arrival is timed. Then, in one run:

1. **Offered rate**: signed ``POST /webhooks/messenger`` (one DM each, one new contact
   each) at a fixed rate (default 200/s for 20 s). Latency is measured from just before
   the POST to the conversation being queued and routed (when the projection that
   gave it its team ran: ``projected_at`` in the activity log's ``bot.handoff`` entry,
   not the conversation's ``updated_at``, which later projections such as the
   acknowledgement's send result move), and to the bot reply reaching the Send API stub.
   The queued latency is split in two: to the responder's decision (the entry's ``at``:
   ingest, the classifier and the responder) and from it to the projection (the api).
2. **Saturation**: a bounded number of DMs (default 5,000) sent as fast as ingest
   accepts them, batched like Meta does under load (several events per webhook). The
   sustained rate is DMs divided by the time from the first POST to the last DM queued
   and routed in the database. The JetStream traffic of the phase is counted too:
   messages stored (every stream, the KV buckets' too) and delivered to the durable
   consumers, per DM, in total, by subject (stored) and by durable (delivered).
3. **Raw JetStream** on the same server: publish with a PubAck to a scratch stream
   (file storage), then pull-consume with an ack; messages per second over both. With
   the traffic per DM this gives the *bus ceiling*: the DMs/s the stack could not pass
   even if every service did nothing but its publishes and deliveries, at raw nats-py
   speed (a KV read, a request, is not counted, so the ceiling is generous).
4. **Raw JetStream at the offered pace** (``raw_paced``): for 10 s
   (``--raw-paced-seconds``), one message every 1/rate s published with a PubAck while a
   pull consumer fetches each as it comes and acks it: one bus hop with nothing batched,
   its latency and its CPU time per message (this process and the server) beside the
   bulk run's (``raw_jetstream.cpu_us_per_msg``): the baseline of the offered phase, whose
   DMs come one at a time.

Peak memory is each service's VmHWM from ``/proc/<pid>/status``; ``cpu_ms_per_dm`` is
the CPU time (user + system, ``/proc/<pid>/stat``) each service and the nats-server
spent during the saturation phase, divided by the DMs routed in it, and their total
(with ``--use-running``, for the pids given); ``offered.cpu_ms_per_dm`` the same over the
offered-rate phase (its DMs come one per webhook, so each costs more). On a PostgreSQL
server on this machine, ``database_cpu_ms_per_dm`` is the same for the server processes of
the bench's database (outside the total: the issue's figure is the stack's own).
``gc_full_collections`` of each phase counts each service's CPython full collections in it
(``python_gc_collections_total``, generation 2, read from its /metrics before and after:
each stalls the service while it walks what the process tracks). ``--profile DIR``
samples every service with py-spy during the saturation phase, and into ``DIR/offered``
during the offered-rate phase (py-spy must be on PATH or beside Python; it is not a dmdesk
dependency), and prints where time goes while saturated.
"""

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from dmdesk.arguments import positive_float, positive_int, share
from dmdesk.natsserver import NatsServer, free_port
from shared.db import as_utc, create_engine
from shared.rules import ROUND_THE_CLOCK, load_rule_set_document, with_calendar_hours

SERVICES = ("api", "ingest", "classifier", "responder")
APP_SECRET = "bench-app-secret"  # noqa: S105 - a throw-away secret of a local stack
PAGE_ID = "100000000000001"
PAGE_TOKEN = "bench-page-token"  # noqa: S105 - the Send API stub accepts anything
SIGNATURE_HEADER = "X-Hub-Signature-256"
# Texts the default rules hand to a team, and texts a bot rule may answer itself.
HANDOFF_TEXTS = (
    "Hi, where is my order {n}? It was due on Monday.",
    "I was charged twice for order {n}, I want a refund",
    "I cannot login to my account since yesterday ({n}), I need a person to help",
    "This is the worst service ever, order {n} arrived broken",
)
BOT_TEXTS = (
    "What are your opening hours?",
    "Do you ship internationally?",
    "How can I return an item?",
)
READY_TIMEOUT_SECONDS = 60.0
# How often the database is asked whether the DMs are routed. The figures come from the
# rows' own timestamps, so a slow poll costs no precision; a fast one takes CPU from
# the stack.
POLL_SECONDS = 1.0
RAW_STREAM_PREFIX = "BENCH_RAW_"


# --- Meta's side: signed webhooks and a Send API stub -------------------------------


def sign(body: bytes, secret: str) -> str:
    """``X-Hub-Signature-256`` for ``body``: ``sha256=<HMAC-SHA256 hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Dm:
    """One customer DM: a new contact (``psid``) writing ``text``."""

    psid: str
    mid: str
    text: str


def messenger_body(dms: Sequence[Dm], page_id: str = PAGE_ID) -> bytes:
    """A Messenger webhook body (``object: page``) carrying ``dms``, one entry each."""
    now_ms = int(time.time() * 1000)
    entries = [
        {
            "id": page_id,
            "time": now_ms,
            "messaging": [
                {
                    "sender": {"id": dm.psid},
                    "recipient": {"id": page_id},
                    "timestamp": now_ms,
                    "message": {"mid": dm.mid, "text": dm.text},
                }
            ],
        }
        for dm in dms
    ]
    return json.dumps({"object": "page", "entry": entries}, separators=(",", ":")).encode()


def make_dms(prefix: str, count: int, bot_share: float = 0.0, start: int = 0) -> list[Dm]:
    """``count`` DMs from new contacts; every ``1/bot_share``-th asks a bot question."""
    every = round(1 / bot_share) if bot_share > 0 else 0
    dms = []
    for n in range(start, start + count):
        if every and n % every == 0:
            body = BOT_TEXTS[n % len(BOT_TEXTS)]
        else:
            body = HANDOFF_TEXTS[n % len(HANDOFF_TEXTS)].format(n=n)
        dms.append(Dm(psid=f"{prefix}-{n}", mid=f"m_{prefix}_{n}", text=body))
    return dms


@dataclass(frozen=True, slots=True)
class StubCall:
    """One request the Send API stub received."""

    path: str
    body: dict[str, Any]
    at: float

    @property
    def recipient(self) -> str | None:
        """The recipient's id (Messenger/Instagram ``recipient.id``, WhatsApp ``to``)."""
        recipient = self.body.get("recipient")
        if isinstance(recipient, dict):
            return str(recipient.get("id"))
        to = self.body.get("to")
        return None if to is None else str(to)


class SendApiStub:
    """Meta's Graph API on loopback: answers every POST with success and records it."""

    def __init__(self) -> None:
        self.calls: list[StubCall] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL to give the responder as ``DMDESK_GRAPH_API_URL``."""
        return f"http://127.0.0.1:{self.port}/v21.0"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close open connections and wait for their handlers to end."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            # Python 3.11's server neither waits for its handlers nor lets them be
            # cancelled quietly at shutdown (a traceback each).
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def by_recipient(self) -> Counter[str]:
        """How many messages each recipient was sent."""
        return Counter(call.recipient or "?" for call in self.calls)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                request = await read_http_message(reader)
                if request is None:
                    return
                start_line, _headers, body = request
                method, path = start_line.split(" ")[:2]
                payload: dict[str, Any] = {}
                with contextlib.suppress(ValueError):
                    parsed = json.loads(body or b"{}")
                    payload = parsed if isinstance(parsed, dict) else {}
                number = len(self.calls) + 1
                if method == "POST":
                    self.calls.append(StubCall(path, payload, time.time()))
                answer = json.dumps(
                    {
                        "recipient_id": StubCall(path, payload, 0).recipient,
                        "message_id": f"m_stub_{number}",
                        "messages": [{"id": f"wamid.stub{number}"}],
                    }
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            self._connections.discard(task)
            writer.close()


async def read_http_message(
    reader: asyncio.StreamReader,
) -> tuple[str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request or response: start line, headers (lower-case), body."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return lines[0], headers, body


class LoopbackClient:
    """A lean HTTP/1.1 keep-alive client for loopback POSTs (the load generator).

    httpx costs about a millisecond of CPU per request; on two shared cores the load
    generator must leave the CPU to the stack it measures.
    """

    def __init__(self, url: str, connections: int) -> None:
        host_port = url.removeprefix("http://").rstrip("/")
        self.host, _, port = host_port.partition(":")
        self.port = int(port or 80)
        self.size = connections
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._opened = 0

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body``; the status code. Raises OSError when the server is unreachable."""
        reader, writer = await self._connection()
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + "\r\n"
        )
        try:
            writer.write(head.encode() + body)
            await writer.drain()
            response = await read_http_message(reader)
            if response is None:
                raise ConnectionResetError("connection closed before the response")
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._discard(writer)
            raise ConnectionError(str(exc)) from exc
        self._idle.put_nowait((reader, writer))
        return int(response[0].split(" ")[1])

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle.empty() and self._opened < self.size:
            self._opened += 1
            try:
                return await asyncio.open_connection(self.host, self.port)
            except OSError:
                self._opened -= 1
                raise
        return await self._idle.get()

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        self._opened -= 1
        writer.close()

    async def close(self) -> None:
        """Close every idle connection."""
        while not self._idle.empty():
            _reader, writer = self._idle.get_nowait()
            writer.close()
        self._opened = 0


# --- The stack -----------------------------------------------------------------------


@dataclass
class Endpoints:
    """Where the stack answers, and the services' process ids when this run started them."""

    ingest_url: str
    api_url: str
    nats_url: str
    database_url: str
    pids: dict[str, int] = field(default_factory=dict)
    nats_pid: int | None = None
    # Every service's base URL, for its /metrics (the embedded stack's; with --use-running,
    # ingest's and the api's).
    service_urls: dict[str, str] = field(default_factory=dict)


class EmbeddedStack:
    """A nats-server and the four services as processes on free loopback ports."""

    def __init__(
        self,
        workdir: Path,
        database_url: str | None,
        graph_api_url: str,
        log_level: str,
        app_secret: str = APP_SECRET,
    ) -> None:
        self.workdir = workdir
        self.app_secret = app_secret
        self.database_url = database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        self.graph_api_url = graph_api_url
        self.log_level = log_level
        self.nats = NatsServer(workdir / "nats", log_file=workdir / "nats-server.log")
        self.ports = {name: free_port() for name in SERVICES}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def endpoints(self) -> Endpoints:
        """URLs and pids of the running stack."""
        return Endpoints(
            ingest_url=f"http://127.0.0.1:{self.ports['ingest']}",
            api_url=f"http://127.0.0.1:{self.ports['api']}",
            nats_url=self.nats.url,
            database_url=self.database_url,
            pids={name: process.pid for name, process in self.processes.items()},
            nats_pid=self.nats.process.pid if self.nats.process else None,
            service_urls={name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()},
        )

    def env(self) -> dict[str, str]:
        """The services' environment (the default rules, with the team at work round the clock)."""
        rules_path = self.workdir / "rules.json"
        rules_path.write_text(
            json.dumps(with_calendar_hours(load_rule_set_document(), ROUND_THE_CLOCK))
        )
        return os.environ | {
            "DMDESK_RULES_PATH": str(rules_path),
            "DMDESK_NATS_URL": self.nats.url,
            "DMDESK_DATABASE_URL": self.database_url,
            "DMDESK_DATA_DIR": str(self.workdir / "data"),
            "DMDESK_META_APP_SECRET": self.app_secret,
            "DMDESK_LOG_LEVEL": self.log_level,
            "DMDESK_SEND_ADAPTER": "meta",
            "DMDESK_GRAPH_API_URL": self.graph_api_url,
            "DMDESK_PAGE_ACCESS_TOKENS": json.dumps({PAGE_ID: PAGE_TOKEN}),
            **{f"DMDESK_{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
        }

    async def start(self) -> None:
        """Start NATS, then the api (it migrates the database), then the other three."""
        self.nats.start()
        env = self.env()
        for name in SERVICES:
            self.processes[name] = self._spawn(name, env)
            if name == "api":
                await wait_ready(self.endpoints.api_url, self.processes[name])
        await asyncio.gather(
            *(
                wait_ready(f"http://127.0.0.1:{self.ports[name]}", process)
                for name, process in self.processes.items()
            )
        )

    def _spawn(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(  # noqa: S603 - our own interpreter
                [sys.executable, "-m", f"services.{name}"], env=env, stdout=log, stderr=log
            )

    def stop(self) -> None:
        """SIGTERM every service, then stop NATS."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.nats.stop()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        """The end of a service's log."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


async def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url``/readyz answers 200."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    reader_writer: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    host, _, port = url.removeprefix("http://").partition(":")
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the service exited with {process.returncode}")
        try:
            reader_writer = await asyncio.open_connection(host, int(port))
            reader, writer = reader_writer
            writer.write(f"GET /readyz HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
            await writer.drain()
            response = await read_http_message(reader)
            writer.close()
            if response is not None and response[0].split(" ")[1] == "200":
                return
        except (OSError, asyncio.IncompleteReadError):
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {READY_TIMEOUT_SECONDS}s")


# --- Measuring -----------------------------------------------------------------------


@dataclass
class Sent:
    """When each DM's webhook was posted (wall clock, to compare with database times)."""

    at: dict[str, float] = field(default_factory=dict)
    refused: Counter[int] = field(default_factory=Counter)


async def post_webhook(
    client: LoopbackClient, dms: Sequence[Dm], sent: Sent, secret: str, retry_for: float = 30.0
) -> None:
    """POST one Messenger webhook signed with ``secret``, retrying (as Meta does) until
    it is accepted."""
    body = messenger_body(dms)
    headers = {SIGNATURE_HEADER: sign(body, secret)}
    deadline = time.monotonic() + retry_for
    posted_at = time.time()
    while True:
        try:
            status = await client.post("/webhooks/messenger", body, headers)
        except ConnectionError:
            status = 0
        if status == 200:
            for dm in dms:
                sent.at[dm.psid] = posted_at
            return
        sent.refused[status] += 1
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def offer(
    client: LoopbackClient, dms: Sequence[Dm], rate: float, sent: Sent, secret: str
) -> float:
    """Post ``dms`` one per webhook at ``rate`` per second; the seconds it took."""
    started = time.monotonic()
    tasks = []
    for index, dm in enumerate(dms):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post_webhook(client, [dm], sent, secret)))
    await asyncio.gather(*tasks)
    return time.monotonic() - started


async def flood(
    client: LoopbackClient, dms: Sequence[Dm], batch: int, sent: Sent, secret: str
) -> float:
    """Post ``dms`` in webhooks of ``batch`` as fast as ingest answers; the seconds it took."""
    started = time.monotonic()
    batches = [dms[i : i + batch] for i in range(0, len(dms), batch)]
    queue: asyncio.Queue[Sequence[Dm]] = asyncio.Queue()
    for item in batches:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            await post_webhook(client, queue.get_nowait(), sent, secret)

    await asyncio.gather(*(worker() for _ in range(client.size)))
    return time.monotonic() - started


# The run's contacts by their keys (the unique index), a chunk of ids at a time: a LIKE
# on the ids' prefix had no index on PostgreSQL and scanned every contact per poll.
ROUTED_SQL = text("""
SELECT ct.platform_id, cv.updated_at, ac.detail, ac.at
FROM contacts ct JOIN conversations cv ON cv.contact_id = ct.id
LEFT JOIN activity ac ON ac.conversation_id = cv.id AND ac.kind = 'bot.handoff'
WHERE ct.channel = 'messenger' AND ct.platform_id IN :psids
  AND cv.channel = 'messenger' AND cv.team IS NOT NULL
""").bindparams(bindparam("psids", expanding=True))
ROUTED_COUNT_SQL = text("""
SELECT count(*) FROM contacts ct JOIN conversations cv ON cv.contact_id = ct.id
WHERE ct.channel = 'messenger' AND ct.platform_id IN :psids
  AND cv.channel = 'messenger' AND cv.team IS NOT NULL
""").bindparams(bindparam("psids", expanding=True))
PSIDS_PER_QUERY = 1000


def _chunks(dms: Sequence[Dm]) -> Iterable[list[str]]:
    for start in range(0, len(dms), PSIDS_PER_QUERY):
        yield [dm.psid for dm in dms[start : start + PSIDS_PER_QUERY]]


async def routed(engine: AsyncEngine, dms: Sequence[Dm]) -> dict[str, float]:
    """When each of ``dms`` was queued and routed (epoch seconds), those that are."""
    queued, _ = await routing_times(engine, dms)
    return queued


async def routing_times(
    engine: AsyncEngine, dms: Sequence[Dm]
) -> tuple[dict[str, float], dict[str, float]]:
    """When each of ``dms`` was queued and routed, and when the responder decided its
    hand-off (epoch seconds; the hand-off entry's ``at``), those that are."""
    queued: dict[str, float] = {}
    decided: dict[str, float] = {}
    async with engine.connect() as connection:
        for psids in _chunks(dms):
            rows = await connection.execute(ROUTED_SQL, {"psids": psids})
            for psid, updated, detail, decided_at in rows:
                found = _projected_at(detail)
                at = _epoch(updated) if found is None else found
                queued[str(psid)] = min(at, queued.get(str(psid), at))
                if decided_at is not None:
                    at = _epoch(decided_at)
                    decided[str(psid)] = min(at, decided.get(str(psid), at))
    return queued, decided


def _projected_at(detail: object) -> float | None:
    """When the hand-off was projected (epoch seconds), from its activity entry's detail
    (JSON: a dict, or its text on a driver that does not decode it)."""
    if isinstance(detail, str):
        detail = json.loads(detail)
    if not isinstance(detail, dict) or not isinstance(detail.get("projected_at"), str):
        return None
    return datetime.fromisoformat(detail["projected_at"]).timestamp()


async def wait_routed(engine: AsyncEngine, dms: Sequence[Dm], count: int, within: float) -> int:
    """Wait until ``count`` of ``dms`` are queued and routed; how many are."""
    deadline = time.monotonic() + within
    done = 0
    while time.monotonic() < deadline:
        async with engine.connect() as connection:
            done = 0
            for psids in _chunks(dms):
                result = await connection.execute(ROUTED_COUNT_SQL, {"psids": psids})
                done += int(result.scalar_one())
        if done >= count:
            return done
        await asyncio.sleep(POLL_SECONDS)
    return done


def _epoch(value: datetime | str) -> float:
    return as_utc(value).timestamp()


def percentile(samples: Sequence[float], share: float) -> float | None:
    """The ``share`` quantile (nearest rank), or None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def latency_ms(sent: Sent, done: dict[str, float]) -> list[float]:
    """Milliseconds from each DM's POST to ``done``."""
    return [(done[psid] - at) * 1000 for psid, at in sent.at.items() if psid in done]


def kept_up(sent: Sent, queued_at: dict[str, float]) -> float | None:
    """How well the stack kept up with an offered rate: the time the DMs took to send over
    the time from the first sent to the last queued (1.0: each queued as it came; a stack
    falling behind queues the last ones seconds after they were sent, and its latencies then
    measure the backlog it built, not what a DM waits at a rate it can take)."""
    queued = [psid for psid in sent.at if psid in queued_at]
    if len(queued) < 2:
        return None
    first = min(sent.at[psid] for psid in queued)
    sending = max(sent.at[psid] for psid in queued) - first
    routing = max(queued_at[psid] for psid in queued) - first
    return round(sending / routing, 3) if routing > 0 else None


KEPT_UP = 0.95
"""Below this :func:`kept_up` ratio the bench says the stack fell behind the offered rate
(on a 20 s phase: the last DM queued a second or more after it was sent)."""


def summary(samples: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 and max of ``samples`` in ms, rounded."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "p50_ms": rounded(percentile(samples, 0.50)),
        "p95_ms": rounded(percentile(samples, 0.95)),
        "p99_ms": rounded(percentile(samples, 0.99)),
        "max_ms": rounded(max(samples) if samples else None),
        "samples": len(samples),
    }


def peak_rss_mb(pids: dict[str, int]) -> dict[str, float | None]:
    """Each process's peak resident set (VmHWM) in MB, None when it cannot be read."""
    peaks: dict[str, float | None] = {}
    for name, pid in pids.items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            peaks[name] = None
            continue
        line = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), "")
        peaks[name] = round(int(line.split()[1]) / 1024, 1) if line else None
    return peaks


def cpu_seconds(pids: dict[str, int]) -> dict[str, float | None]:
    """Each process's CPU time so far (user + system, ``/proc/<pid>/stat``), None if unknown."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float | None] = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            used[name] = None
            continue
        used[name] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return used


async def full_collections(client: httpx.AsyncClient, urls: dict[str, str]) -> dict[str, float]:
    """Each service's CPython full collections so far (``python_gc_collections_total`` of
    the oldest generation, from its /metrics); a service that does not answer is left out."""
    counts: dict[str, float] = {}
    for name, url in urls.items():
        try:
            response = await client.get(f"{url}/metrics", timeout=5)
            response.raise_for_status()
        except httpx.HTTPError:
            continue
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if (
                    sample.name == "python_gc_collections_total"
                    and sample.labels.get("generation") == "2"
                ):
                    counts[name] = sample.value
    return counts


def collections_between(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """The full collections each service ran between two readings."""
    return {name: int(after[name] - before[name]) for name in after if name in before}


def cpu_ms_per_dm(
    before: dict[str, float | None], after: dict[str, float | None], dms: int
) -> dict[str, float | None]:
    """CPU milliseconds each process spent per DM between two readings, and their total."""
    spent: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        spent[name] = None if start is None or end is None else round((end - start) * 1000 / dms, 3)
    known = [ms for ms in spent.values() if ms is not None]
    return spent | {"total": round(sum(known), 3) if len(known) == len(spent) else None}


@dataclass(frozen=True, slots=True)
class BusCount:
    """JetStream traffic so far: messages stored (by subject; a KV bucket's all under its
    stream's name), and deliveries to consumers."""

    stored: Counter[str]
    delivered: Counter[str]

    def per_dm(self, before: "BusCount", dms: int) -> dict[str, Any]:
        """The traffic since ``before``, per DM."""
        stored = self.stored - before.stored
        delivered = self.delivered - before.delivered
        return {
            "stored_per_dm": round(stored.total() / dms, 2),
            "delivered_per_dm": round(delivered.total() / dms, 2),
            "stored_per_dm_by_subject": {
                subject: round(count / dms, 2) for subject, count in stored.most_common()
            },
            "delivered_per_dm_by_consumer": {
                durable: round(count / dms, 2) for durable, count in delivered.most_common()
            },
        }


async def bus_count(nats_url: str) -> BusCount:
    """Messages stored in every stream (the KV buckets' too) and delivered from them."""
    client = await nats.connect(nats_url)
    stored: Counter[str] = Counter()
    delivered: Counter[str] = Counter()
    try:
        js = client.jetstream()
        for stream in await js.streams_info():
            name = stream.config.name
            if name is None or name.startswith(RAW_STREAM_PREFIX):
                continue
            if name.startswith("KV_"):
                stored[name] += stream.state.last_seq
            else:
                stored.update((await js.stream_info(name, subjects_filter=">")).state.subjects)
            for consumer in await js.consumers_info(name):
                durable = f"{consumer.name} ({consumer.config.filter_subject or name})"
                delivered[durable] += consumer.delivered.consumer_seq if consumer.delivered else 0
    finally:
        await client.close()
    return BusCount(stored, delivered)


def bus_ceiling(traffic: dict[str, float], raw: dict[str, float]) -> dict[str, float]:
    """The DMs/s the bus traffic alone allows at raw nats-py speed, and its ratio to raw."""
    seconds_per_dm = (
        traffic["stored_per_dm"] / raw["publish_msgs_per_s"]
        + traffic["delivered_per_dm"] / raw["consume_msgs_per_s"]
    )
    ceiling = 1 / seconds_per_dm
    return {
        "ceiling_dms_per_s": round(ceiling, 1),
        "ceiling_ratio": round(ceiling / raw["msgs_per_s"], 3),
    }


@contextlib.asynccontextmanager
async def scratch_stream(nats_url: str) -> AsyncIterator[tuple[Client, JetStreamContext, str]]:
    """A connection to the server and a scratch file stream on it (subjects ``<name>.>``),
    deleted once the block is done with it; the connection closed whatever happens."""
    client = await nats.connect(nats_url)
    stream = f"{RAW_STREAM_PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        js = client.jetstream(publish_async_max_pending=1024)
        await js.add_stream(
            StreamConfig(name=stream, subjects=[f"{stream}.>"], storage=StorageType.FILE)
        )
        yield client, js, stream
        await js.delete_stream(stream)
    finally:
        await client.close()


async def pull_everything(
    js: JetStreamContext, stream: str, durable: str
) -> JetStreamContext.PullSubscription:
    """A durable pull consumer of every message of ``stream``, each acked explicitly."""
    return await js.pull_subscribe(
        f"{stream}.>",
        durable=durable,
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1),
    )


async def raw_jetstream(
    nats_url: str, count: int, payload_size: int, server_pid: int | None = None
) -> dict[str, Any]:
    """nats-py alone on the same server: publish with PubAck, then pull and ack; with the
    CPU time per message of this process and of the server (``server_pid``)."""
    async with scratch_stream(nats_url) as (client, js, stream):
        cpu = _CpuMeter(server_pid)
        payload = b"x" * payload_size
        started = time.perf_counter()
        futures = [
            await js.publish_async(
                f"{stream}.m", payload, headers={"Nats-Msg-Id": f"raw-{n}"}, stream=stream
            )
            for n in range(count)
        ]
        await asyncio.gather(*futures)
        published = time.perf_counter() - started
        subscription = await pull_everything(js, stream, "raw")
        started = time.perf_counter()
        consumed = 0
        while consumed < count:
            for message in await subscription.fetch(min(500, count - consumed), timeout=5):
                await message.ack()
                consumed += 1
        await client.flush()
        pulled = time.perf_counter() - started
        spent = cpu.us_per(count)
    return {
        "messages": count,
        "publish_msgs_per_s": round(count / published),
        "consume_msgs_per_s": round(count / pulled),
        "msgs_per_s": round(count / (published + pulled)),
        **spent,
    }


async def raw_paced(
    nats_url: str, rate: float, seconds: float, payload_size: int, server_pid: int | None = None
) -> dict[str, Any]:
    """nats-py alone at the offered pace: a message every 1/``rate`` s published with a PubAck
    (as ingest stores a DM) while a pull consumer fetches each as it comes and acks it (as a
    stage takes a DM), nothing batched: what one bus hop costs at that pace, in CPU time (this
    process and the server) and in latency (publish to consumed). Each wake-up of a process
    that sat idle costs far more than a message in a bulk run, so this, not the bulk rate, is
    the baseline of the offered phase's CPU and latency."""
    count = max(1, round(rate * seconds))
    sent: dict[str, float] = {}
    latencies: list[float] = []
    async with scratch_stream(nats_url) as (client, js, stream):
        subscription = await pull_everything(js, stream, "paced")
        payload = b"x" * payload_size

        async def publish() -> None:
            start = time.perf_counter()
            for n in range(count):
                await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
                sent[f"paced-{n}"] = time.perf_counter()
                await js.publish(
                    f"{stream}.m", payload, headers={"Nats-Msg-Id": f"paced-{n}"}, stream=stream
                )

        async def consume() -> None:
            deadline = time.perf_counter() + seconds + 30
            while len(latencies) < count and time.perf_counter() < deadline:
                try:
                    messages = await subscription.fetch(100, timeout=1)
                except TimeoutError:
                    continue
                for message in messages:
                    at = sent.get((message.headers or {}).get("Nats-Msg-Id", ""))
                    if at is not None:
                        latencies.append((time.perf_counter() - at) * 1000)
                    await message.ack()

        cpu = _CpuMeter(server_pid)
        await asyncio.gather(publish(), consume())
        await client.flush()
        spent = cpu.us_per(count)
    return {"rate": rate, "messages": count, **spent, "latency_ms": summary(latencies)}


class _CpuMeter:
    """CPU time spent from its creation: this process's and, when known, the nats-server's."""

    def __init__(self, server_pid: int | None) -> None:
        self.pids = {"server": server_pid} if server_pid is not None else {}
        self.client = time.process_time()
        self.server = cpu_seconds(self.pids).get("server")

    def us_per(self, messages: int) -> dict[str, float | None]:
        """Microseconds per message: the client's, the server's (None if unknown), the sum."""
        client = (time.process_time() - self.client) * 1e6 / messages
        end = cpu_seconds(self.pids).get("server")
        server = None
        if end is not None and self.server is not None:
            server = (end - self.server) * 1e6 / messages
        return {
            "client_cpu_us_per_msg": round(client),
            "server_cpu_us_per_msg": None if server is None else round(server),
            "cpu_us_per_msg": None if server is None else round(client + server),
        }


# --- Profiling -----------------------------------------------------------------------


def py_spy() -> str | None:
    """The py-spy executable, if installed (beside Python or on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.asynccontextmanager
async def profiled(pids: dict[str, int], out_dir: Path | None) -> AsyncIterator[None]:
    """Sample every service with py-spy (raw, collapsed stacks) while the block runs."""
    spy = py_spy() if out_dir is not None else None
    if out_dir is None or spy is None:
        if out_dir is not None:
            print("py-spy not found: pip install py-spy (not a dmdesk dependency)")
        yield
        return
    samplers = start_samplers(spy, pids, out_dir)
    try:
        yield
    finally:
        for sampler in samplers.values():
            sampler.send_signal(signal.SIGINT)
        for sampler in samplers.values():
            try:
                sampler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sampler.kill()


def start_samplers(
    spy: str, pids: dict[str, int], out_dir: Path
) -> dict[str, subprocess.Popen[bytes]]:
    """One ``py-spy record`` per process, writing collapsed stacks to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        name: subprocess.Popen(  # noqa: S603 - py-spy on our own children
            [
                *(spy, "record", "--format", "raw", "--rate", "100", "--nonblocking"),
                *("--pid", str(pid), "--output", str(out_dir / f"{name}.txt")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    }


def hot_spots(collapsed: Path, top: int = 12) -> dict[str, Any]:
    """Share of samples per function, inclusive and self, from py-spy's raw output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        total += count
        for frame in set(frames):
            inclusive[_short(frame)] += count
        if frames:
            own[_short(frames[-1])] += count
    if not total:
        return {"samples": 0}

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "self_pct": shares(own), "inclusive_pct": shares(inclusive)}


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where.split(':')[0]})"


# --- The run -------------------------------------------------------------------------


@dataclass
class Options:
    """What ``dmdesk bench`` was asked to do."""

    rate: float = 200.0
    duration: float = 20.0
    burst: int = 5_000
    burst_batch: int = 10
    connections: int = 32
    bot_share: float = 0.1
    raw_messages: int = 20_000
    raw_paced_seconds: float = 10.0
    database_url: str | None = None
    app_secret: str = APP_SECRET
    use_running: Endpoints | None = None
    profile_dir: Path | None = None
    settle_timeout: float = 90.0
    log_level: str = "WARNING"


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def measure(options: Options, endpoints: Endpoints, stub: SendApiStub) -> dict[str, Any]:
    """Warm up, then the offered-rate and saturation phases, then raw JetStream."""
    run = uuid.uuid4().hex[:6]
    engine = create_engine(endpoints.database_url)
    client = LoopbackClient(endpoints.ingest_url, options.connections)
    scraper = httpx.AsyncClient()  # /metrics, between the phases only
    figures: dict[str, Any] = {"offered_rate": options.rate, "run": run}
    try:
        _log("warm-up: 50 DMs")
        warm = make_dms(f"w{run}", 50)
        await flood(client, warm, 1, Sent(), options.app_secret)
        await wait_routed(engine, warm, len(warm), options.settle_timeout)

        count = int(options.rate * options.duration)
        _log(f"offered rate: {count} DMs at {options.rate}/s")
        offered, sent = make_dms(f"o{run}", count, options.bot_share), Sent()
        calls_before = len(stub.calls)
        measured = _measured_pids(endpoints)
        # Read before the CPU: the services' /metrics answers are not the phase's work.
        gc_before = await full_collections(scraper, endpoints.service_urls)
        cpu_before = cpu_seconds(measured)
        profile_dir = None if options.profile_dir is None else options.profile_dir / "offered"
        async with profiled(endpoints.pids, profile_dir):
            took = await offer(client, offered, options.rate, sent, options.app_secret)
            settled = await wait_routed(
                engine, offered, count - _bot_only(offered), options.settle_timeout
            )
        cpu_after = cpu_seconds(measured)
        gc_after = await full_collections(scraper, endpoints.service_urls)
        await asyncio.sleep(1.0)  # bot replies still on their way to the stub
        queued_at, decided_at = await routing_times(engine, offered)
        queued = latency_ms(sent, queued_at)
        replies = {
            call.recipient or "": call.at
            for call in stub.calls[calls_before:]
            if (call.recipient or "").startswith(f"o{run}-")
        }
        bot = latency_ms(sent, replies)
        figures["offered"] = {
            "dms": count,
            "achieved_rate": round(count / took, 1),
            "accepted": len(sent.at),
            "refused_attempts": dict(sent.refused),
            "routed": settled,
            "kept_up": kept_up(sent, queued_at),
            "webhook_to_queued": summary(queued),
            # The two halves of it: ingest, the classifier and the responder; the api.
            "webhook_to_decided": summary(latency_ms(sent, decided_at)),
            "decided_to_queued": summary(
                [(queued_at[psid] - at) * 1000 for psid, at in decided_at.items()]
            ),
            "webhook_to_bot_reply": summary(bot),
        }
        if measured:
            figures["offered"]["cpu_ms_per_dm"] = cpu_ms_per_dm(cpu_before, cpu_after, count)
        figures["offered"]["gc_full_collections"] = collections_between(gc_before, gc_after)
        figures |= {k: v for k, v in summary(queued).items() if k.startswith("p")}
        figures["bot_reply_p99_ms"] = summary(bot)["p99_ms"]
        figures["bot_replies_measured"] = bool(bot)

        gc_before = await full_collections(scraper, endpoints.service_urls)
        figures |= await saturate(options, endpoints, client, engine, run, offered)
        gc_after = await full_collections(scraper, endpoints.service_urls)
        figures["saturation"]["gc_full_collections"] = collections_between(gc_before, gc_after)
        figures |= await baseline_and_resources(figures, options, endpoints, stub)
    finally:
        await client.close()
        await scraper.aclose()
        await engine.dispose()
    return figures


def _measured_pids(endpoints: Endpoints) -> dict[str, int]:
    """The processes whose CPU time the bench reads: the services and nats-server."""
    nats = {"nats-server": endpoints.nats_pid} if endpoints.nats_pid is not None else {}
    return endpoints.pids | nats


async def saturate(
    options: Options,
    endpoints: Endpoints,
    client: LoopbackClient,
    engine: AsyncEngine,
    run: str,
    offered: Sequence[Dm],
) -> dict[str, Any]:
    """The saturation phase: a burst as fast as ingest takes it; rate, bus traffic, CPU."""
    _log(f"saturation: {options.burst} DMs, {options.burst_batch} per webhook")
    burst, sent = make_dms(f"b{run}", options.burst), Sent()
    traffic_before = await bus_count(endpoints.nats_url)
    measured = _measured_pids(endpoints)
    cpu_before = cpu_seconds(measured)
    database_before = cpu_seconds(await database_backends(engine))
    started = time.time()
    async with profiled(endpoints.pids, options.profile_dir):
        took = await flood(client, burst, options.burst_batch, sent, options.app_secret)
        settled = await wait_routed(engine, burst, len(burst), options.settle_timeout)
        finished = time.time()
    cpu_after = cpu_seconds(measured)
    database_after = cpu_seconds(await database_backends(engine))
    traffic_after = await bus_count(endpoints.nats_url)
    done = await routed(engine, burst)
    if settled >= len(burst):
        finished = max(done.values(), default=finished)
    # Every DM of this run routed while saturated counts, the offered phase's backlog too.
    routed_in_window = sum(
        started <= moment <= finished
        for moment in [*done.values(), *(await routed(engine, offered)).values()]
    )
    figures: dict[str, Any] = {
        "saturation": {
            "dms": len(burst),
            "dms_per_webhook": options.burst_batch,
            "ingest_accept_dms_per_s": round(len(sent.at) / took, 1),
            "routed": settled,
            "seconds_to_last_routed": round(finished - started, 2),
            "webhook_to_queued": summary(latency_ms(sent, done)),
        }
    }
    figures["saturation"]["routed_in_window_all_phases"] = routed_in_window
    if settled >= len(burst):  # otherwise some of the burst's traffic is still to come
        figures["bus"] = traffic_after.per_dm(traffic_before, len(burst))
    figures["e2e_dms_per_s"] = round(routed_in_window / max(finished - started, 1e-9), 1)
    if measured:
        figures["cpu_ms_per_dm"] = cpu_ms_per_dm(cpu_before, cpu_after, max(routed_in_window, 1))
    if database_after:
        figures["database_cpu_ms_per_dm"] = database_cpu_ms(
            database_before, database_after, max(routed_in_window, 1)
        )
    return figures


async def database_backends(engine: AsyncEngine) -> dict[str, int]:
    """The PostgreSQL server processes serving the bench's database, when that server runs
    on this machine (their CPU time is readable here): the api's connections, and the
    bench's own poll (one short query a second). Empty for SQLite or a remote server."""
    url = engine.url
    if engine.dialect.name != "postgresql" or url.host not in (None, "", "localhost", "127.0.0.1"):
        return {}
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        )
        return {str(pid): int(pid) for (pid,) in rows}


def database_cpu_ms(
    before: dict[str, float | None], after: dict[str, float | None], dms: int
) -> float | None:
    """CPU milliseconds per DM of the database's server processes between two readings: a
    process that started in between counts from zero; one that ended in between, not at
    all (the api's pool keeps its connections)."""
    spent = [end - (before.get(pid) or 0.0) for pid, end in after.items() if end is not None]
    return round(sum(spent) * 1000 / dms, 3) if spent else None


async def baseline_and_resources(
    figures: dict[str, Any], options: Options, endpoints: Endpoints, stub: SendApiStub
) -> dict[str, Any]:
    """Raw JetStream on the same server, the ratio, peak memory and the profile summary."""
    _log(f"raw JetStream: {options.raw_messages} messages")
    raw = await raw_jetstream(endpoints.nats_url, options.raw_messages, 600, endpoints.nats_pid)
    _log(f"raw JetStream at the offered pace: {options.rate}/s for {options.raw_paced_seconds} s")
    paced = await raw_paced(
        endpoints.nats_url, options.rate, options.raw_paced_seconds, 600, endpoints.nats_pid
    )
    more: dict[str, Any] = {
        "raw_jetstream": raw,
        "raw_paced": paced,
        "raw_jetstream_msgs_per_s": raw["msgs_per_s"],
        "ratio": round(figures["e2e_dms_per_s"] / raw["msgs_per_s"], 3),
        "max_rss_mb": peak_rss_mb(endpoints.pids),
        "bot_replies_per_recipient_max": max(stub.by_recipient().values(), default=0),
    }
    if "bus" in figures:
        more["bus"] = figures["bus"] | bus_ceiling(figures["bus"], raw)
    if options.profile_dir is not None:
        more["profile"] = {
            name: hot_spots(options.profile_dir / f"{name}.txt")
            for name in endpoints.pids
            if (options.profile_dir / f"{name}.txt").exists()
        }
    return more


def _bot_only(dms: Iterable[Dm]) -> int:
    """DMs a bot rule may answer without a hand-off: not counted as routed."""
    return sum(1 for dm in dms if dm.text in BOT_TEXTS)


async def run(options: Options) -> dict[str, Any]:
    """Start (or use) the stack, measure, stop."""
    stub = SendApiStub()
    await stub.start()
    try:
        if options.use_running is not None:
            return await measure(options, options.use_running, stub)
        with tempfile.TemporaryDirectory(prefix="dmdesk-bench-") as tmp:
            stack = EmbeddedStack(
                Path(tmp), options.database_url, stub.url, options.log_level, options.app_secret
            )
            _log("starting nats-server and the four services")
            try:
                await stack.start()
                figures = await measure(options, stack.endpoints, stub)
            except BaseException:
                for name in SERVICES:
                    print(f"----- {name} -----\n{stack.log_tail(name)}", file=sys.stderr)
                raise
            finally:
                stack.stop()
            figures["database"] = stack.database_url.split(":", 1)[0]
            return figures
    finally:
        await stub.stop()


def report(figures: dict[str, Any]) -> str:
    """A human summary of the figures."""
    offered, saturation = figures["offered"], figures["saturation"]
    queued, bot = offered["webhook_to_queued"], offered["webhook_to_bot_reply"]
    decided, api = offered["webhook_to_decided"], offered["decided_to_queued"]
    lines = [
        f"database: {figures.get('database', 'running stack')}",
        f"offered {figures['offered_rate']:.0f} DMs/s x {offered['dms']} "
        f"(achieved {offered['achieved_rate']}/s, routed {offered['routed']}, "
        f"kept up {offered.get('kept_up')})",
        *(
            [
                "  the stack fell behind the offered rate: the latencies below measure the"
                " backlog it built, not what a DM waits at a rate it can take"
            ]
            if (offered.get("kept_up") or 1.0) < KEPT_UP
            else []
        ),
        f"  webhook -> queued:    p50 {queued['p50_ms']} ms  p95 {queued['p95_ms']} ms  "
        f"p99 {queued['p99_ms']} ms  max {queued['max_ms']} ms",
        f"    webhook -> decided: p50 {decided['p50_ms']} ms  p99 {decided['p99_ms']} ms; "
        f"decided -> queued (the api): p50 {api['p50_ms']} ms  p99 {api['p99_ms']} ms",
        "  webhook -> bot reply: "
        + (
            f"p50 {bot['p50_ms']} ms  p95 {bot['p95_ms']} ms  p99 {bot['p99_ms']} ms "
            f"({bot['samples']} replies)"
            if bot["samples"]
            else "not measured (no bot reply reached the Send API stub)"
        ),
        f"saturation: {saturation['dms']} DMs, {saturation['dms_per_webhook']} per webhook: "
        f"ingest accepted {saturation['ingest_accept_dms_per_s']} DMs/s, "
        f"e2e {figures['e2e_dms_per_s']} DMs/s",
        f"raw JetStream: {figures['raw_jetstream_msgs_per_s']} msgs/s "
        f"(publish {figures['raw_jetstream']['publish_msgs_per_s']}/s, "
        f"consume {figures['raw_jetstream']['consume_msgs_per_s']}/s); "
        f"ratio e2e/raw {figures['ratio']}",
        *(
            [
                f"raw JetStream at the offered pace ({paced['rate']:.0f}/s, one hop, nothing "
                f"batched): publish -> consumed p50 {paced['latency_ms']['p50_ms']} ms  "
                f"p99 {paced['latency_ms']['p99_ms']} ms; CPU per message "
                f"{paced['cpu_us_per_msg']} us (client {paced['client_cpu_us_per_msg']}, "
                f"server {paced['server_cpu_us_per_msg']}) against "
                f"{figures['raw_jetstream']['cpu_us_per_msg']} us in bulk"
            ]
            if (paced := figures.get("raw_paced"))
            else []
        ),
        *(
            [
                f"bus per DM: {bus['stored_per_dm']} messages stored, "
                f"{bus['delivered_per_dm']} delivered; at raw nats-py speed that traffic alone "
                f"allows {bus['ceiling_dms_per_s']} DMs/s (ratio {bus['ceiling_ratio']})",
                "  stored per DM: "
                + ", ".join(f"{k} {v}" for k, v in bus["stored_per_dm_by_subject"].items()),
            ]
            if (bus := figures.get("bus"))
            else []
        ),
        "peak RSS (MB): " + ", ".join(f"{name} {mb}" for name, mb in figures["max_rss_mb"].items()),
        *(
            [
                "CPU per routed DM while saturated (ms): "
                + ", ".join(f"{name} {ms}" for name, ms in cpu.items())
            ]
            if (cpu := figures.get("cpu_ms_per_dm"))
            else []
        ),
        *(
            [f"CPU per routed DM while saturated, PostgreSQL's server processes (ms): {database}"]
            if (database := figures.get("database_cpu_ms_per_dm")) is not None
            else []
        ),
        *(
            [
                "full garbage collections while saturated: "
                + ", ".join(f"{name} {count}" for name, count in collections.items())
            ]
            if (collections := figures["saturation"].get("gc_full_collections"))
            else []
        ),
    ]
    for name, spots in figures.get("profile", {}).items():
        lines.append(f"profile {name} ({spots.get('samples', 0)} samples), self time:")
        lines += [f"    {pct:5.1f}%  {fn}" for fn, pct in spots.get("self_pct", [])]
    return "\n".join(lines)


def _options(args: argparse.Namespace) -> Options:
    running = None
    if args.use_running:
        if not (args.ingest_url and args.api_url and args.nats_url and args.database_url):
            raise SystemExit(
                "--use-running needs --ingest-url, --api-url, --nats-url and --database-url"
            )
        pids = dict(item.split("=", 1) for item in args.pid or [])
        running = Endpoints(
            args.ingest_url,
            args.api_url,
            args.nats_url,
            args.database_url,
            {name: int(pid) for name, pid in pids.items()},
            service_urls={"ingest": args.ingest_url, "api": args.api_url},
        )
    return Options(
        rate=args.rate,
        duration=args.duration,
        burst=args.burst,
        burst_batch=args.burst_batch,
        connections=args.connections,
        bot_share=args.bot_share,
        raw_messages=args.raw_messages,
        raw_paced_seconds=args.raw_paced_seconds,
        database_url=args.database_url,
        app_secret=args.app_secret,
        use_running=running,
        profile_dir=Path(args.profile) if args.profile else None,
    )


def _main(args: argparse.Namespace) -> int:
    figures = asyncio.run(run(_options(args)))
    print(json.dumps(figures) if args.json else report(figures))
    return 0


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``dmdesk bench``."""
    bench = commands.add_parser(
        "bench", help="end-to-end throughput and latency of signed webhooks vs raw JetStream"
    )
    bench.add_argument(
        "--rate", type=positive_float, default=200.0, help="offered DMs/s (default 200)"
    )
    bench.add_argument(
        "--duration", type=positive_float, default=20.0, help="seconds at the offered rate"
    )
    bench.add_argument(
        "--burst", type=positive_int, default=5_000, help="DMs in the saturation phase"
    )
    bench.add_argument(
        "--burst-batch", type=positive_int, default=10, help="DMs per saturation webhook"
    )
    bench.add_argument(
        "--connections", type=positive_int, default=32, help="HTTP connections to ingest"
    )
    bench.add_argument(
        "--bot-share", type=share, default=0.1, help="share of offered DMs asking a bot question"
    )
    bench.add_argument(
        "--raw-messages", type=positive_int, default=20_000, help="raw JetStream messages"
    )
    bench.add_argument(
        "--raw-paced-seconds",
        type=positive_float,
        default=10.0,
        help="seconds of raw JetStream at the offered rate",
    )
    bench.add_argument("--database-url", help="default: a temporary SQLite file")
    bench.add_argument("--use-running", action="store_true", help="measure a running stack")
    bench.add_argument(
        "--app-secret",
        default=os.environ.get("DMDESK_META_APP_SECRET") or APP_SECRET,
        help="the Meta app secret the webhooks are signed with (default: "
        "$DMDESK_META_APP_SECRET, else the embedded stack's own)",
    )
    bench.add_argument("--ingest-url", help="with --use-running")
    bench.add_argument("--api-url", help="with --use-running")
    bench.add_argument("--nats-url", help="with --use-running")
    bench.add_argument(
        "--pid", action="append", help="with --use-running: NAME=PID, for peak memory"
    )
    bench.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy every service (saturation; DIR/offered: offered rate)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=_main)


__all__ = [
    "APP_SECRET",
    "PAGE_ID",
    "Dm",
    "SendApiStub",
    "StubCall",
    "make_dms",
    "messenger_body",
    "register",
    "sign",
]
