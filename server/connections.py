"""The listening socket of `ideal serve`, with the limits aiohttp leaves to the operator: how many connections may
be open, how long a connection may take to send a request, and how long a TLS handshake may take.

Without them a client can hold connections open for free (one that sends nothing, or a header a byte at a time,
stayed open 100 s and more), and a few hundred of them exhaust the open-file limit, after which the accept loop
fails on every try and even `/healthz` goes unanswered.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger(__name__)

# What a connection beyond the limit is told before it is closed (the one error contract: JSON with a reason).
_FULL = (b'{"error": "too many connections to this server: try again in a few seconds"}')
FULL_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 b"Retry-After: 5\r\nContent-Length: " + str(len(_FULL)).encode() + b"\r\n\r\n" + _FULL)


def connection_limit(wanted: int) -> int:
    """`wanted`, capped at half the process's open-file limit: the other half is for WebRTC sockets, avatar files,
    the listening socket and answering refused connections, so the limit is reached before the accept loop runs
    out of descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft // 2))


class ConnectionGuard:
    """Counts the open connections, closes the ones that stay without a request for `header_timeout_s` (after
    opening or after their last answer) and, at the limit, the oldest idle one to make room for a new one; only
    when every connection is busy is a new one refused. `request_started`/`request_ended` (called by the app's
    middleware) mark the time a connection is busy; a request's body has its own timeout (`body_timeout_s`, where
    it is read)."""

    def __init__(self, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = connection_limit(max_connections)
        self.header_timeout_s = header_timeout_s
        self.open: dict[asyncio.BaseTransport, "_GuardedProtocol"] = {}
        self.refused = 0
        self.refusing = 0  # refused connections still being answered (each holds a descriptor for up to 1 s)
        self.timed_out = 0
        self.evicted = 0

    def evict_idle(self) -> None:
        """Make room by closing the longest-open connection that is between requests: idle connections must not
        keep out a new one (a health check, a page loading), while a busy one is never cut off."""
        for guarded in self.open.values():
            if not guarded.busy and guarded.transport is not None:
                self.evicted += 1
                guarded.transport.abort()
                self.open.pop(guarded.transport, None)  # now, not when the loop reports the loss
                return

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        guarded = self.open.get(transport) if transport is not None else None
        if guarded is not None:
            guarded.busy += 1
            guarded.cancel_timer()

    def request_ended(self, transport: asyncio.BaseTransport | None) -> None:
        guarded = self.open.get(transport) if transport is not None else None
        if guarded is not None:
            guarded.busy -= 1
            if not guarded.busy:
                guarded.start_timer()


class _JsonErrorsHandler(RequestHandler):
    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (bad request line or header, a line too long), in the
        one error contract (JSON, no traceback), logged as one line rather than a traceback per request."""
        reason = " ".join(str(exc or message or "bad request").split())[:300]
        if status >= 500:  # an error of the server's own, past the app's middleware: the traceback is wanted
            log.error("request from %s failed: %s", request.remote, reason, exc_info=exc)
        else:
            log.info("bad HTTP request from %s: %s", request.remote, reason)
        response = web.json_response({"error": f"malformed HTTP request ({reason})"}, status=status)
        response.force_close()
        return response


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's limit and timer in front of it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = 0
        self.refused = False
        self._timer: asyncio.TimerHandle | None = None

    def start_timer(self) -> None:
        self.cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(self.guard.header_timeout_s, self._expire)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        if not self.busy and self.transport is not None:
            self.guard.timed_out += 1
            self.transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if len(self.guard.open) >= self.guard.max_connections:
            self.guard.evict_idle()
        if len(self.guard.open) >= self.guard.max_connections:
            self.refused = True
            self.guard.refused += 1
            if self.guard.refusing >= self.guard.max_connections // 4:  # a flood: no descriptor to spare on answers
                transport.abort()
                return
            # Answer, stop sending, and read (discarding) until the client closes or a second passes: closing at
            # once with its request unread would reset the connection and lose the answer.
            self.guard.refusing += 1
            transport.write(FULL_RESPONSE)
            if transport.can_write_eof():
                transport.write_eof()
            self._timer = asyncio.get_running_loop().call_later(1.0, transport.abort)
            return
        self.guard.open[transport] = self
        self.start_timer()
        if type(self.inner) is RequestHandler:
            # aiohttp builds its handlers itself and their slots forbid patching one method: the subclass adds no
            # state, only the JSON answer to unparsable requests.
            self.inner.__class__ = _JsonErrorsHandler
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            if self._timer is not None:  # it was answered
                self.guard.refusing -= 1
            self.cancel_timer()
            return
        self.cancel_timer()
        self.guard.open.pop(self.transport, None)  # type: ignore[arg-type]
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.refused:
            return None  # closes the connection
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """`aiohttp.web.TCPSite` whose connections go through `guard`, with a TLS handshake timeout."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard, *,
                 ssl_context: ssl.SSLContext | None = None, tls_handshake_timeout_s: float = 10.0) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.guard = guard
        self.tls_handshake_timeout_s = tls_handshake_timeout_s

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        kwargs: dict[str, Any] = {}
        if self._ssl_context is not None:
            kwargs["ssl_handshake_timeout"] = self.tls_handshake_timeout_s
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _GuardedProtocol(self.guard, server()), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, **kwargs)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
