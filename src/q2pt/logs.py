"""q2pt's log lines on stderr: the one handler that the CLI and ``q2pt serve``'s worker
processes set up (``setup_logging``)."""

from __future__ import annotations

import logging
import sys

__all__ = ["StderrHandler", "setup_logging"]


class StderrHandler(logging.StreamHandler):
    """Writes each record to whatever ``sys.stderr`` is at that moment (so a captured or
    replaced stderr, as in tests or under a supervisor, never gets a closed stream)."""

    _q2pt_cli = True

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: int | bool = logging.INFO) -> None:
    """Send q2pt's log lines (progress notes, warnings) to stderr, once per process.

    ``level`` is a logging level, or a bool meaning "quiet" (warnings and errors only)."""
    if isinstance(level, bool):
        level = logging.WARNING if level else logging.INFO
    logger = logging.getLogger("q2pt")
    if not any(getattr(h, "_q2pt_cli", False) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
