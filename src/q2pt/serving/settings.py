"""Limits and tuning of the HTTP layer (:class:`ServeSettings`): one place for their
defaults, read by the app and by ``q2pt serve``'s flags. Light to import (no FastAPI)."""

from __future__ import annotations

from dataclasses import dataclass

from q2pt.data.schema import DEFAULT_MAX_QUERY_CHARS
from q2pt.errors import ConfigError

__all__ = ["ENV_OPTIONS", "ServeSettings"]

#: JSON options of the worker processes of a multi-worker server (runtime, settings)
ENV_OPTIONS = "Q2PT_SERVE_OPTIONS"


@dataclass
class ServeSettings:
    """Limits and tuning of the HTTP layer (the model options live in the runtime)."""

    max_batch: int = 256
    """Most queries in one /v1/predict/batch request."""
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    """Longest query (characters, after trimming surrounding whitespace): the limit training
    data is validated with (``q2pt.data.schema.DEFAULT_MAX_QUERY_CHARS``)."""
    max_body_bytes: int = 1 << 20
    """Largest request body (bytes); larger bodies get 413."""
    default_top_k: int = 10
    """Product types returned per query when the request gives no top_k."""
    micro_batch: bool = True
    """Gather concurrent single-query requests into one model call."""
    micro_batch_max: int = 64
    micro_batch_wait_ms: float = 0.0
    """Extra wait for more requests after the first one (0: only what is already queued)."""
    header_timeout_s: float = 10.0
    """A connection must send its request headers within this many seconds of opening (or of
    its previous response), else it is closed: slow or half-open clients do not pile up."""
    body_timeout_s: float = 30.0
    """A request body must arrive in full within this many seconds of its headers."""
    keep_alive_s: float = 5.0
    """An idle keep-alive connection is closed after this many seconds (uvicorn's default)."""
    max_connections: int = 256
    """Beyond this many open connections (or running requests) a request gets 503 with
    Retry-After: 1 (the probe held 1,000 idle connections open before this limit existed)."""
    admin_token_env: str | None = None
    """The environment variable holding the admin bearer token: when it is set (non-empty),
    ``POST /v1/admin/reload`` is on and needs ``Authorization: Bearer <token>``; otherwise
    there is no admin route. The token itself is never stored in the settings."""
    reload_on_sighup: bool = False
    """SIGHUP reloads the model folder the server was started with (``q2pt serve`` with one
    worker turns it on; it needs the server's event loop in the main thread)."""
    workers: int = 1
    """Worker processes of the server (``q2pt serve --workers``). With more than one,
    ``POST /v1/admin/reload`` checks the start folder in the worker that got the request and
    then has the supervisor restart every worker (each re-reads that folder); a reload to
    another folder is refused (409), since it would reach one worker only."""

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 3600.0:
                raise ConfigError(f"serve setting {name} must be between 0 and 3600 seconds, got {value!r}")
        for name in ("max_batch", "max_query_chars", "max_body_bytes", "default_top_k", "micro_batch_max",
                     "max_connections", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"serve setting {name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.micro_batch_wait_ms) <= 100.0:
            raise ConfigError(f"micro_batch_wait_ms must be between 0 and 100, got {self.micro_batch_wait_ms}")
