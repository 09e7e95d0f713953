"""The ``q2pt`` command line. Thin: each command group lives in its own module
(``q2pt.cli.<group>``) with a ``register(subparsers)`` function; logic lives in the
library. Every q2pt error is turned into a clean message and exit code here, once."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from q2pt import __version__
from q2pt.errors import ConfigError, DataError, Q2PTError
from q2pt.logs import StderrHandler, setup_logging  # noqa: F401 - the CLI's one handler, re-exported

# command-group modules, each exposing register(subparsers)
_GROUPS = ["data", "train", "review", "serve", "experiment"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="q2pt",
        description="Predict the product types a shopper means by a search query, in every locale.",
    )
    parser.add_argument("--version", action="version", version=f"q2pt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in _GROUPS:
        importlib.import_module(f"q2pt.cli.{group}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return int(args.func(args) or 0)
    except Q2PTError as exc:
        if not (isinstance(exc, (ConfigError, DataError)) and _other_rank()):
            print(f"q2pt: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if not _other_rank():
            print("q2pt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    except OSError as exc:  # a file or folder the user named cannot be read or written
        where = f" {exc.filename}" if exc.filename else ""
        print(f"q2pt: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _other_rank() -> bool:
    """Whether this process is a torchrun worker other than rank 0: a config or data error (the
    same on every rank, which all read the same options and data) and an interruption are said by
    rank 0 alone, not once per process."""
    from q2pt.distributed import torchrun_world

    world = torchrun_world()
    return world is not None and world[1] > 1 and world[0] != 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
