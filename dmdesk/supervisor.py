"""The local supervisor behind ``dmdesk up``: four services as child processes.

Each child is ``python -m services.<name>``. Its JSON log lines are rendered
readable and prefixed with the service's name; a child that dies is reported
and restarted with back-off; SIGINT/SIGTERM stops every child gracefully.
"""

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

import httpx

from shared.settings import Settings

# api first: it runs the database migrations.
SERVICES = ("api", "ingest", "classifier", "responder")
RESTART_DELAYS_SECONDS = (0.5, 1, 2, 5, 10)
STOP_TIMEOUT_SECONDS = 20.0
_COLOURS = {"api": 36, "ingest": 32, "classifier": 35, "responder": 33, "dmdesk": 1}
_LOG_KEYS_SHOWN_ELSEWHERE = {
    "ts",
    "level",
    "logger",
    "message",
    "service",
    "taskName",
    "color_message",
}


def service_port(settings: Settings, service: str) -> int:
    """The HTTP port a service listens on."""
    ports = {
        "api": settings.api_port,
        "ingest": settings.ingest_port,
        "classifier": settings.classifier_port,
        "responder": settings.responder_port,
    }
    return ports[service]


def render_log_line(service: str, line: str, *, colour: bool) -> str:
    """One child's log line, JSON made readable, prefixed by the service's name."""
    prefix = f"{service:<10}|"
    if colour:
        prefix = f"\x1b[{_COLOURS.get(service, 0)}m{prefix}\x1b[0m"
    try:
        record = json.loads(line)
    except ValueError:
        return f"{prefix} {line}"
    if not isinstance(record, dict):
        return f"{prefix} {line}"
    time = str(record.get("ts", ""))[11:19]
    extras = " ".join(
        f"{key}={value}" for key, value in record.items() if key not in _LOG_KEYS_SHOWN_ELSEWHERE
    )
    level = str(record.get("level", ""))
    return f"{prefix} {time} {level:<7} {record.get('message', '')} {extras}".rstrip()


class Supervisor:
    """Runs the services until told to stop; restarts any that die."""

    def __init__(
        self,
        settings: Settings,
        env: Mapping[str, str],
        services: Sequence[str] = SERVICES,
        out: TextIO = sys.stdout,
    ) -> None:
        self.settings = settings
        self.env = dict(env)
        self.services = services
        self.out = out
        self.colour = out.isatty()
        self.stopping = asyncio.Event()
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    def say(self, message: str) -> None:
        """A line from the supervisor itself."""
        print(render_log_line("dmdesk", message, colour=self.colour), file=self.out, flush=True)

    async def run(self) -> None:
        """Start every service, report where they listen, and supervise until stopped."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stopping.set)
        tasks = [asyncio.create_task(self._supervise(name)) for name in self.services]
        ready = asyncio.create_task(self._announce_when_ready())
        await self.stopping.wait()
        self.say("stopping every service...")
        ready.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.say("stopped")

    async def _announce_when_ready(self) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            for name in self.services:
                url = f"http://{self.settings.host}:{service_port(self.settings, name)}/readyz"
                while not self.stopping.is_set():
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(url)).status_code == 200:
                            break
                    await asyncio.sleep(0.25)
        host = self.settings.host
        self.say(f"ready: API http://{host}:{self.settings.api_port}/docs")
        self.say(f"ready: ingest http://{host}:{self.settings.ingest_port}/v1/messages")
        self.say("try `dmdesk demo` in another terminal; Ctrl-C stops everything")

    async def _supervise(self, name: str) -> None:
        restarts = 0
        while not self.stopping.is_set():
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"services.{name}",
                env={**os.environ, **self.env},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            self.processes[name] = process
            pump = asyncio.create_task(self._pump(name, process))
            waiter = asyncio.create_task(process.wait())
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            if self.stopping.is_set():
                await self._stop(name, process)
                await pump
                return
            stop.cancel()
            await pump
            delay = RESTART_DELAYS_SECONDS[min(restarts, len(RESTART_DELAYS_SECONDS) - 1)]
            restarts += 1
            self.say(f"{name} exited with code {process.returncode}; restarting in {delay}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def _stop(self, name: str, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            self.say(f"{name} did not stop in {STOP_TIMEOUT_SECONDS}s; killing it")
            process.kill()
            await process.wait()

    async def _pump(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                print(render_log_line(name, line, colour=self.colour), file=self.out, flush=True)
