"""q2pt's log lines on stderr: the one handler that the CLI and ``q2pt serve``'s worker
processes set up (``setup_logging``)."""

from __future__ import annotations

import logging
import sys

__all__ = ["SERVER_FORMAT", "StderrHandler", "setup_logging", "uvicorn_log_config"]


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


#: a server's lines: when and how bad, to line up with its access log and a client's errors
SERVER_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int | bool = logging.INFO, *, timestamps: bool = False) -> None:
    """Send q2pt's log lines (progress notes, warnings) to stderr, once per process.

    ``level`` is a logging level, or a bool meaning "quiet" (warnings and errors only);
    ``timestamps``: each line with its time, level and logger (:data:`SERVER_FORMAT`, for
    ``q2pt serve``), else the message alone."""
    if isinstance(level, bool):
        level = logging.WARNING if level else logging.INFO
    logger = logging.getLogger("q2pt")
    handler = next((h for h in logger.handlers if getattr(h, "_q2pt_cli", False)), None)
    if handler is None:
        handler = StderrHandler()
        logger.addHandler(handler)
    handler.setFormatter(logging.Formatter(SERVER_FORMAT if timestamps else "%(message)s"))
    logger.setLevel(level)


def uvicorn_log_config() -> dict:
    """uvicorn's own logging config with the time on each of its lines (its default has none),
    as q2pt's server lines have it."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = "%(asctime)s " + formatter["fmt"]
    return config
