"""The `airlock` command.

A user's mistake (a bad option, a bad config, a port in use, a reader that closes the
pipe) gets one line on stderr and an exit status, never a traceback. docs/cli.md has
the table of exit statuses: 0 done, 1 the command ran and failed (a transcript that
does not verify, an API refusal, a config that check-config finds invalid, a gateway
that cannot start), 2 usage (bad option, bad or missing config), 3 the API could not
be reached, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sys
from collections.abc import Coroutine, Sequence
from importlib import metadata
from typing import Any, NoReturn, cast

from proxy import logs
from proxy.cli import approvals as approvals_cli
from proxy.cli import audit as audit_cli
from proxy.cli import classify as classify_cli
from proxy.cli import demo
from proxy.config import ConfigError, Settings, load_settings

DISTRIBUTION = "airlock-gateway"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse that says what is wrong in one line (and where --help is), not a usage
    block; exit 2, as argparse does."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def version() -> str:
    """ "airlock 0.1.0 (compiled)": the installed version, and whether the relay's hot
    path runs compiled or as pure Python (an install without a C compiler)."""
    try:
        number = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        number = "(not installed)"
    from proxy.recording import event_chain

    compiled = not (event_chain.__file__ or "").endswith(".py")
    return f"airlock {number} ({'compiled' if compiled else 'pure Python'})"


def _settings(args: argparse.Namespace) -> Settings | None:
    """The --config file's settings, or None after saying what is wrong with it."""
    try:
        return load_settings(args.config)
    except ConfigError as error:
        print(f"airlock: bad config: {error}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from proxy.server import Gateway
    from proxy.workers import Supervisor, check_workers, worker_command

    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    worker: int | None = args.worker
    log_format = getattr(args, "log_format", None)
    if log_format is None or worker is not None:
        logs.configure(_log_level(args), log_format or settings.log_format, worker=worker)
    workers = (os.cpu_count() or 1) if args.workers == "auto" else int(args.workers)
    if worker is None:
        problem = check_workers(settings, workers)
        if problem is not None:
            print(f"airlock: bad config: {problem}", file=sys.stderr)
            return EXIT_USAGE
        if workers > 1:
            extra = [f"--log-level={_log_level(args)}"]
            if log_format is not None:
                extra.append(f"--log-format={log_format}")
            command = worker_command(args.config, extra)
            return Supervisor(settings, command, workers).run()
    gateway = Gateway(settings, reuse_port=worker is not None)

    async def serve() -> None:
        try:
            await gateway.serve_forever()
        except OSError:
            await gateway.close()  # what started before the failure
            raise

    try:
        run_async(serve())
    except OSError as error:
        print(f"airlock: cannot start: {_start_failure(settings, gateway.bound, error)}",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return EXIT_OK


def _start_failure(settings: Settings, bound: dict[str, tuple[str, int]], error: OSError) -> str:
    """What went wrong starting, in a line. A listener that cannot bind is the first one
    configured that is not bound yet (they start in this order: api, postgres, mysql)."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
        listen = settings.listen
        for name, endpoint in (("api", listen.api), ("postgres", listen.postgres),
                               ("mysql", listen.mysql)):  # fmt: skip
            if endpoint is not None and name not in bound:
                return f"cannot listen for {name} on {endpoint}: {reason.lower()}"
    where = f": {error.filename}" if error.filename else ""
    return f"{reason}{where}"


def _check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as error:
        print(f"airlock: bad config: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{settings.source}: OK")
    return EXIT_OK


def _dev_token(args: argparse.Namespace) -> int:
    from proxy.config import dev_issuer_url
    from proxy.http.dev_issuer import DevIssuer

    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    if not settings.dev_issuer or settings.listen.api is None:
        print(
            f"airlock: {settings.source}: dev_issuer is off; dev-token mints only for a "
            "config with `dev_issuer: true`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if settings.listen.api.port == 0:
        print("airlock: dev-token needs a fixed listen.api port", file=sys.stderr)
        return EXIT_USAGE
    issuer = DevIssuer(
        settings.data_dir, dev_issuer_url(settings.listen), settings.identity.audience
    )
    groups = [g for item in args.groups for g in item.split(",") if g]
    print(issuer.mint(args.sub, groups, ttl_s=args.ttl, email=args.email))
    return EXIT_OK


def _choice(parse: Any) -> Any:
    """An argparse type from a parse function that raises ValueError."""

    def checked(text: str) -> str:
        try:
            return str(parse(text))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return checked


def _workers(text: str) -> str:
    """--workers: a positive number, or "auto" (one per core)."""
    if text == "auto" or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"--workers takes a number from 1 up, or auto, not {text!r}")


def _log_level(args: argparse.Namespace) -> str:
    return str(getattr(args, "log_level", None) or "INFO")


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    """--log-level and --log-format, before the command or after it (`airlock serve
    --log-level debug`). Not given: the default, and for serve the config's log_format."""
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-level",
        type=_choice(logs.parse_level),
        default=argparse.SUPPRESS,
        metavar="LEVEL",
        help="DEBUG, INFO (default), WARNING or ERROR",
    )
    group.add_argument(
        "--log-format",
        type=_choice(logs.parse_format),
        default=argparse.SUPPRESS,
        metavar="FORMAT",
        help="text (default) or json: one JSON object per line (serve: overrides log_format)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):
                _add_log_options(command)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="airlock", description="Access gateway between AI agents and databases.")
    parser.add_argument("--version", action="version", version=version())
    # Its commands are Parsers too (add_subparsers makes them of the parser's class).
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="path to airlock.yaml")
    serve.add_argument(
        "--workers",
        type=_workers,
        default="1",
        metavar="N",
        help="worker processes sharing the ports (default 1; 'auto': one per core;"
        " more than 1 needs store: postgresql://...)",
    )
    serve.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)
    check = commands.add_parser(
        "check-config", help="validate a config file as serve would, and say OK or what is wrong"
    )
    check.add_argument("file", metavar="FILE", help="path to airlock.yaml")
    check.set_defaults(handler=_check_config)
    token = commands.add_parser("dev-token", help="mint a token from the development issuer")
    token.add_argument(
        "--config", required=True, help="path to airlock.yaml (with dev_issuer: true)"
    )
    token.add_argument("--sub", required=True, help="the subject (agent or person)")
    token.add_argument(
        "--groups", action="append", default=[], help="group(s), comma-separated or repeated"
    )
    token.add_argument("--email", default=None)
    token.add_argument(
        "--ttl",
        type=approvals_cli.positive_duration,
        default=3600.0,
        metavar="DURATION",
        help="lifetime, e.g. 15m, 1h (default 1h)",
    )
    token.set_defaults(handler=_dev_token)
    classify_cli.add_parser(commands)
    approvals_cli.add_parsers(commands)
    audit_cli.add_parsers(commands)
    demo.add_parser(commands)
    _add_log_options(parser)
    return parser


def _stdout_gone() -> None:
    """The reader closed the pipe (`airlock dev-token | head -c 20`): Python would flush
    stdout again at exit and fail once more, so what is left goes nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None, *, configure_logging: bool = True) -> int:
    """Run one `airlock` command; its exit status. `configure_logging=False` leaves the
    log as the caller set it up (the demo runs commands in its own process)."""
    try:
        args = build_parser().parse_args(argv)
        if configure_logging:
            logs.configure(_log_level(args), getattr(args, "log_format", None) or "text")
        code: int = args.handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_OK
    except KeyboardInterrupt:
        print("airlock: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
