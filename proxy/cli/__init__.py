"""The command line: `airlock` and its subcommands."""

from proxy.cli.main import main

__all__ = ["main"]
