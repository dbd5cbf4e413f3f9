"""``dmdesk apikey``: create, list and revoke API keys in the api's database."""

import argparse
import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from services.api.auth import create_key, list_keys, register_agent, revoke_key
from shared.db import create_engine, prepare, session_factory, transaction
from shared.models import Scope
from shared.settings import get_settings


async def _run(args: argparse.Namespace) -> int:
    engine = create_engine(get_settings().sqlalchemy_url)
    try:
        await prepare(engine)
        sessions = session_factory(engine)
        async with transaction(sessions) as session:
            if args.action == "create":
                scope = Scope(args.scope)
                if args.agent is not None and scope != Scope.AGENT:
                    print("--agent binds a key with --scope agent only")
                    return 2
                if args.agent is not None and await register_agent(session, args.agent):
                    print(f"registered agent '{args.agent}' (offline, no team: PUT /v1/agents/...)")
                issued = await create_key(session, args.name, scope, agent=args.agent)
                bound = f", acting as agent '{issued.agent}'" if issued.agent else ""
                print(f"created key {issued.id} '{issued.name}' with scope {scope.value}{bound}")
                print("the secret (shown once, store it now):")
                print(issued.secret)
            elif args.action == "revoke":
                if not await revoke_key(session, args.id):
                    print(f"no active key {args.id}")
                    return 1
                print(f"revoked key {args.id}")
            else:
                for row in await list_keys(session):
                    state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                    agent = f"  (agent {row.agent})" if row.agent else ""
                    print(
                        f"{row.id:>4}  {row.prefix}...  {row.scope:<6}  {state:<18}  {row.name}"
                        f"{agent}"
                    )
    finally:
        await engine.dispose()
    return 0


@contextmanager
def temporary_key(name: str) -> Iterator[str]:
    """A read key in the local database, revoked on exit (for `dmdesk demo`)."""

    async def issue() -> tuple[int, str]:
        engine = create_engine(get_settings().sqlalchemy_url)
        try:
            async with transaction(session_factory(engine)) as session:
                issued = await create_key(session, name, Scope.READ)
                return issued.id, issued.secret
        finally:
            await engine.dispose()

    async def revoke(key_id: int) -> None:
        engine = create_engine(get_settings().sqlalchemy_url)
        try:
            async with transaction(session_factory(engine)) as session:
                await revoke_key(session, key_id)
        finally:
            await engine.dispose()

    key_id, secret = asyncio.run(issue())
    try:
        yield secret
    finally:
        asyncio.run(revoke(key_id))


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``dmdesk apikey create|list|revoke``."""
    apikey = commands.add_parser("apikey", help="create, list and revoke API keys")
    actions = apikey.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="issue a key (the secret is printed once)")
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument(
        "--scope",
        choices=[s.value for s in Scope],
        default=Scope.READ.value,
        help="read < agent < admin (default: read)",
    )
    create.add_argument(
        "--agent",
        help="bind an agent-scope key to this agent (registered if new): it acts only as them",
    )
    actions.add_parser("list", help="list keys (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a key")
    revoke.add_argument("id", type=int)
    apikey.set_defaults(handler=lambda args: asyncio.run(_run(args)))
