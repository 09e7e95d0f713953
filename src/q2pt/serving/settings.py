"""Limits and tuning of the HTTP layer (:class:`ServeSettings`): one place for their
defaults, read by the app and by ``q2pt serve``'s flags. Light to import (no FastAPI)."""

from __future__ import annotations

from dataclasses import dataclass

from q2pt.data.schema import DEFAULT_MAX_QUERY_CHARS
from q2pt.errors import ConfigError

__all__ = ["ServeSettings"]


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

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_query_chars", "max_body_bytes", "default_top_k", "micro_batch_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"serve setting {name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.micro_batch_wait_ms) <= 100.0:
            raise ConfigError(f"micro_batch_wait_ms must be between 0 and 100, got {self.micro_batch_wait_ms}")
