"""The `airlock` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from proxy import approvals_cli, audit_cli, classify_cli, demo
from proxy.config import ConfigError, Settings, load_settings, parse_duration


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _settings(args: argparse.Namespace) -> Settings | None:
    """The --config file's settings, or None after saying what is wrong with it."""
    try:
        return load_settings(args.config)
    except ConfigError as error:
        print(f"airlock: bad config: {error}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from proxy.server import Gateway

    settings = _settings(args)
    if settings is None:
        return 2
    run_async(Gateway(settings).serve_forever())
    return 0


def _dev_token(args: argparse.Namespace) -> int:
    from proxy.config import dev_issuer_url
    from proxy.dev_issuer import DevIssuer

    settings = _settings(args)
    if settings is None:
        return 2
    if not settings.dev_issuer or settings.listen.api is None:
        print(
            f"airlock: {settings.source}: dev_issuer is off; dev-token mints only for a "
            "config with `dev_issuer: true`",
            file=sys.stderr,
        )
        return 2
    if settings.listen.api.port == 0:
        print("airlock: dev-token needs a fixed listen.api port", file=sys.stderr)
        return 2
    issuer = DevIssuer(
        settings.data_dir, dev_issuer_url(settings.listen), settings.identity.audience
    )
    groups = [g for item in args.groups for g in item.split(",") if g]
    print(issuer.mint(args.sub, groups, ttl_s=parse_duration(args.ttl), email=args.email))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airlock", description="Access gateway between AI agents and databases."
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="path to airlock.yaml")
    serve.set_defaults(handler=_serve)
    token = commands.add_parser("dev-token", help="mint a token from the development issuer")
    token.add_argument(
        "--config", required=True, help="path to airlock.yaml (with dev_issuer: true)"
    )
    token.add_argument("--sub", required=True, help="the subject (agent or person)")
    token.add_argument(
        "--groups", action="append", default=[], help="group(s), comma-separated or repeated"
    )
    token.add_argument("--email", default=None)
    token.add_argument("--ttl", default="1h", help="lifetime, e.g. 15m, 1h (default 1h)")
    token.set_defaults(handler=_dev_token)
    classify_cli.add_parser(commands)
    approvals_cli.add_parsers(commands)
    audit_cli.add_parsers(commands)
    demo.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
