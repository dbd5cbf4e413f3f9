"""The ``dmdesk`` command line."""

import argparse
import asyncio
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dmdesk.natsserver import NatsServer
from dmdesk.supervisor import SERVICES, Supervisor
from shared.settings import Settings, get_settings


def _run_service(name: str) -> int:
    module = __import__(f"services.{name}.app", fromlist=["main"])
    module.main()
    return 0


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _up(args: argparse.Namespace) -> int:
    settings = get_settings()
    data_dir = Path(args.data_dir or settings.data_dir).resolve()
    env = {"DMDESK_DATA_DIR": str(data_dir)}
    external_nats = "DMDESK_NATS_URL" in os.environ
    nats: NatsServer | None = None
    if not external_nats:
        nats = NatsServer(
            data_dir / "nats",
            host=settings.host,
            port=args.nats_port or settings.nats_port,
            log_file=data_dir / "nats-server.log",
        )
        nats.start()
        env["DMDESK_NATS_URL"] = nats.url
    if is_loopback(settings.host) and "DMDESK_INGEST_OPEN" not in os.environ:
        env["DMDESK_INGEST_OPEN"] = "true"
        print(
            f"dmdesk: POST /v1/messages is open without an ingest key on {settings.host}"
            " (loopback only; set DMDESK_INGEST_OPEN=false to close it)"
        )
    child_settings = Settings(**{**settings.model_dump(), "data_dir": data_dir})
    print(f"dmdesk: data in {data_dir}")
    print(
        f"dmdesk: NATS at {env.get('DMDESK_NATS_URL', settings.nats_url)}"
        f"{'' if external_nats else ' (embedded)'}"
    )
    print(f"dmdesk: database {child_settings.sqlalchemy_url}")
    try:
        asyncio.run(Supervisor(child_settings, env).run())
    finally:
        if nats is not None:
            print("dmdesk: stopping NATS", flush=True)
            nats.stop()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from dmdesk.apikeys import temporary_key
    from dmdesk.demo import run_demo

    settings = get_settings()
    ingest = args.ingest_url or f"http://{settings.host}:{settings.ingest_port}"
    api = args.api_url or f"http://{settings.host}:{settings.api_port}"
    if args.api_key:
        return run_demo(ingest, api, args.api_key, ingest_key=args.ingest_key)
    with temporary_key("demo") as key:
        return run_demo(ingest, api, key, ingest_key=args.ingest_key)


def _asyncapi(args: argparse.Namespace) -> int:
    from dmdesk.asyncapi import asyncapi_document

    document = json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n"
    if args.output == "-":
        sys.stdout.write(document)
    else:
        Path(args.output).write_text(document)
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    root = argparse.ArgumentParser(prog="dmdesk", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SERVICES:
        sub = commands.add_parser(name, help=f"run the {name} service alone")
        sub.set_defaults(handler=lambda _args, name=name: _run_service(name))
    up = commands.add_parser("up", help="run everything: embedded NATS, SQLite, four services")
    up.add_argument("--data-dir", help="where NATS and SQLite keep data (DMDESK_DATA_DIR)")
    up.add_argument("--nats-port", type=int, default=0, help="embedded NATS port (0: free)")
    up.set_defaults(handler=_up)
    demo = commands.add_parser("demo", help="post sample DMs and print the queue")
    demo.add_argument("--ingest-url", help="default: http://DMDESK_HOST:DMDESK_INGEST_PORT")
    demo.add_argument("--api-url", help="default: http://DMDESK_HOST:DMDESK_API_PORT")
    demo.add_argument(
        "--ingest-key",
        default=os.environ.get("DMDESK_INGEST_KEY"),
        help="an ingest key (DMDESK_INGEST_KEY); default: none, for an open ingest (dmdesk up)",
    )
    demo.add_argument(
        "--api-key",
        default=os.environ.get("DMDESK_API_KEY"),
        help="a read key (DMDESK_API_KEY); default: a temporary key in the local database",
    )
    demo.set_defaults(handler=_demo)
    asyncapi = commands.add_parser("asyncapi", help="print the AsyncAPI document of dm.>")
    asyncapi.add_argument("--output", default="-", help="file to write (default: stdout)")
    asyncapi.set_defaults(handler=_asyncapi)
    for register in _command_modules():
        register(commands)
    return root


def _command_modules() -> list[
    Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
]:
    from dmdesk import (
        apikeys,
        bench,
        bench_api,
        bench_decisions,
        bench_ingest,
        bench_projections,
        classifier_commands,
        faq_commands,
    )

    return [
        apikeys.register,
        bench.register,
        bench_api.register,
        bench_decisions.register,
        bench_ingest.register,
        bench_projections.register,
        classifier_commands.register,
        faq_commands.register,
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``dmdesk`` console script."""
    args = parser().parse_args(argv)
    raise SystemExit(args.handler(args))
