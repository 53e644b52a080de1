"""xdream-ts: the command line. `xdream-ts COMMAND --help` is the full reference.

Argument parsing -> a spec -> a library call. run, show and optimizers live here, a module each; the
workflows (inspect, demo, sweep, ...) keep their parser beside the code they drive. Every user error
(bad flag, bad config, missing file, wrong shape) prints ONE line on stderr and exits with code 2, no
traceback; recorded data is never touched by an error. Nothing imports this package but its entry points.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import UserError
from . import optimizers, run, show


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; we want one line and exit code 2
        raise UserError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="xdream-ts", description="Find the time series that drive a unit hardest (XDream for time series).")
    parser.add_argument("--version", action="version", version=f"xdream-ts {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    for command in (run, show, optimizers):
        command.add_cli(sub)
    import importlib
    import importlib.util
    for module in EXTRA_COMMANDS:
        if importlib.util.find_spec(f"xdream_ts.{module}") is None:
            continue  # not part of this installation
        importlib.import_module(f"xdream_ts.{module}").add_cli(sub)
    return parser


# Subcommands that live beside the code they drive: each module has add_cli(subparsers), which adds
# its parser and sets `func` (called with the parsed args; returns the exit code). Modules must import
# their heavy dependencies inside `func`, so `xdream-ts --help` stays fast.
EXTRA_COMMANDS = ("inspect", "demo", "train_decoder", "compare", "inverse_set", "rig", "sweep", "report", "watch")


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"xdream-ts: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xdream-ts: interrupted; the run store keeps every completed generation (--resume continues it)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
