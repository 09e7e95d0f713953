"""The server's HTTP protocol: uvicorn's httptools protocol with bounds on slow clients.

Uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but keeps a connection
whose request headers never finish, or whose body trickles in, for as long as the client
likes: a few hundred such connections hold the server's file descriptors (a slowloris). The
:class:`GuardedProtocol` adds, from :class:`~q2pt.serving.settings.ServeSettings`:

* ``header_timeout_s``: a connection must complete its request headers this long after it
  opened or after its previous response, else it is closed;
* ``body_timeout_s``: a request body must arrive in full this long after its headers;
* ``max_connections``: beyond this many open connections (or running requests) a request is
  answered ``503`` with ``Retry-After`` instead of being run.

``q2pt serve`` passes the class to uvicorn (``http=GuardedProtocol``); worker processes read
the settings from the environment that ``q2pt serve`` set (see :mod:`q2pt.serving.app`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from q2pt.serving.problems import PROBLEM_TYPES
from q2pt.serving.settings import ENV_OPTIONS, ServeSettings

__all__ = ["GuardedProtocol", "configure"]

_SETTINGS: ServeSettings | None = None


def configure(settings: ServeSettings) -> None:
    """The settings the protocol uses in this process."""
    global _SETTINGS
    _SETTINGS = settings


def _settings() -> ServeSettings:
    if _SETTINGS is not None:
        return _SETTINGS
    raw = os.environ.get(ENV_OPTIONS)
    if raw:
        return ServeSettings(**(json.loads(raw).get("settings") or {}))
    return ServeSettings()


async def _busy(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """503 with Retry-After, as an RFC 9457 problem document."""
    body = json.dumps({"type": PROBLEM_TYPES["busy"].uri, "title": PROBLEM_TYPES["busy"].title, "status": 503,
                       "detail": "too many open connections; retry shortly"}).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close"), (b"x-content-type-options", b"nosniff"),
    ]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header and body read timeouts and a 503 + Retry-After beyond
    ``max_connections`` (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = _settings()
        self._header_timeout, self._body_timeout, self._limit = s.header_timeout_s, s.body_timeout_s, s.max_connections
        self.limit_concurrency = None  # checked here, answered with Retry-After
        self._deadline: Any = None

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm(self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._arm(self._body_timeout)  # until the body is in (on_message_complete)
        if len(self.connections) > self._limit or len(self.tasks) >= self._limit:
            app, self.app = self.app, _busy
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timeout for an idle connection
        if not self.transport.is_closing():
            self._arm(self._header_timeout)  # and the next request's headers get this long
