"""Which browsers may talk to `ideal serve`, and the headers every answer carries.

* **Origin allow-list.** A web page may send requests to any server, the user's local `ideal serve` included; a
  request that changes something (every method but GET/HEAD/OPTIONS) from a browser must come from the server's own
  page or an origin the operator allows (`--allow-origin`, e.g. the browser extension's `chrome-extension://ID`).
  Requests without an `Origin` header come from programs, not pages, and are let through (the token still applies).
  Allowed foreign origins also get CORS headers, so their pages can read the answers.
* **Host check.** A DNS-rebinding page makes its own name resolve to 127.0.0.1 and then reads a token-less local
  server as same-origin; such a server therefore answers only to `localhost`, IP addresses and the names the
  operator allows (`--allow-host`). With a token the page would still need the token, so any name is accepted.
* **Security headers.** A content security policy (scripts, styles and connections from the server only, no
  framing), no MIME sniffing, no referrer (the page's URL may carry `?token=`), and HSTS under TLS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

from ideal.avatar.errors import IdealError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
CORS_HEADERS = "Authorization, Content-Type, X-Peer-Secret"


class ForbiddenError(IdealError):
    """A request from somewhere the server does not answer (HTTP 403)."""


def _host_name(host: str) -> str:
    """`Host` header -> the name without port ("[::1]:8080" -> "::1")."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str | None, allowed: Iterable[str]) -> bool:
    name = _host_name(host or "").lower().rstrip(".")
    allowed = {a.lower() for a in allowed}
    if "*" in allowed or name in allowed or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HttpPolicy:
    def __init__(self, allow_origins: Iterable[str], allow_hosts: Iterable[str], token_required: bool,
                 tls: bool) -> None:
        self.allow_origins = {o.lower().rstrip("/") for o in allow_origins}
        self.allow_hosts = list(allow_hosts)
        self.token_required = token_required
        self.tls = tls

    def _own_origin(self, request: web.Request, origin: str) -> bool:
        # Host only, not the scheme: behind a TLS-terminating proxy the page is https and the request http.
        return origin.split("://", 1)[-1] == (request.host or "").lower()

    def foreign_origin(self, request: web.Request) -> str | None:
        """The request's Origin when it is an allowed origin other than the server's own page (CORS applies)."""
        origin = request.headers.get("Origin", "").lower().rstrip("/")
        if origin and origin in self.allow_origins and not self._own_origin(request, origin):
            return origin
        return None

    def check(self, request: web.Request) -> None:
        """Raise ForbiddenError for a request from a host or origin this server does not answer."""
        if not self.token_required and not host_allowed(request.host, self.allow_hosts):
            raise ForbiddenError(f"Host {request.host!r}: this server answers only to localhost, IP addresses and "
                                 "--allow-host names", "open the server by its address, or start it with "
                                 "--allow-host NAME (or --token)")
        if request.method in SAFE_METHODS:
            return
        origin = request.headers.get("Origin")
        if origin is None:
            return
        origin = origin.lower().rstrip("/")
        if origin not in self.allow_origins and not self._own_origin(request, origin):
            raise ForbiddenError(f"Origin {origin!r} may not call this server",
                                 "use the server's own page, or start it with --allow-origin ORIGIN")

    def preflight(self, request: web.Request) -> web.Response:
        """The answer to a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`)."""
        origin = self.foreign_origin(request)
        if origin is None:
            raise ForbiddenError(f"Origin {request.headers.get('Origin')!r} may not call this server",
                                 "start the server with --allow-origin ORIGIN")
        return web.Response(status=204, headers={"Access-Control-Allow-Methods": "GET, POST",
                                                 "Access-Control-Allow-Headers": CORS_HEADERS,
                                                 "Access-Control-Max-Age": "600"})

    def add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        h.setdefault("Content-Security-Policy", CSP)
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        if self.tls:
            h.setdefault("Strict-Transport-Security", "max-age=31536000")
        origin = self.foreign_origin(request)
        if origin is not None:
            h["Access-Control-Allow-Origin"] = request.headers["Origin"]
            h["Vary"] = "Origin"
