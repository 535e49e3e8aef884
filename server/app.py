"""HTTP side of `ideal serve` (aiohttp): the static client, the SDP exchange and the JSON API.

    GET  /                    the browser client (web/)
    GET  /healthz             liveness + load (503 while draining)
    GET  /config              what the client needs: ICE servers (TURN only with the token), token required, limits
    GET  /avatars             avatars (name, fps, size, tiers, mouth box) and expression sources
    POST /offer               {"sdp", "type": "offer", "mode": "avatar"|"watch", "avatar", "expression",
                              "room", "name", "target", "voice"} (application/json) -> {"sdp", "type": "answer",
                              "peer_id", "peer_secret", ...}
    GET  /peers/{id}          one peer's live stats (fps, tier, speech, latency, session stats)
    POST /peers/{id}/expression {"expression": "audio"|"neutral"|"driver:NAME"}
    POST /peers/{id}/leave    close it now (the client also calls this from `pagehide`)
    GET  /rooms/{name}        participants (id, display name, avatar) and a version number
    GET  /metrics             sessions, viewers, fps, latency percentiles (?format=prometheus for text)

The `/peers/{id}` routes need that peer's secret (`X-Peer-Secret` or `?secret=`). Every error is JSON
`{"error": "..."}`: 400 bad input, 401 missing/wrong token, 403 origin, host or peer secret refused, 404 no such
peer or route, 405 wrong method, 408 body too slow, 410 peer closed by the session policy, 415 offer not JSON,
429 too many unconnected offers, 500 the server's fault (no traceback), 503 full or draining.
No module-level state: everything lives on the `Application` (`app[STATE]`), so several servers (tests,
benchmarks) can run in one process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ideal import web as web_client  # the static client package (see WEB_DIR)
from ideal.avatar.errors import IdealError, InputError
from ideal.server.avatars import AvatarCatalog, EngineFactory
from ideal.server.config import ServerConfig
from ideal.server.connections import ConnectionGuard, GuardedSite
from ideal.server.credentials import client_ice_servers
from ideal.server.http_policy import ForbiddenError, HttpPolicy
from ideal.server.metrics import ServerMetrics, to_prometheus
from ideal.server.offers import parse_offer
from ideal.server.peers import (CapacityError, GoneError, NotFoundError, PeerManager, PeerSecretError,
                                RateLimitError)
from ideal.server.rooms import RoomRegistry

log = logging.getLogger(__name__)

WEB_DIR = Path(web_client.__file__).resolve().parent  # the client ships as package data of the `web` package
WEB_SUFFIXES = {".html", ".js", ".css", ".png", ".svg", ".ico"}  # the client's files; never its Python
OPEN_PATHS = ("/", "/healthz", "/config", "/favicon.ico")  # no token needed: the page must load to ask for one


class MediaTypeError(InputError):
    """A body in another format than the route takes (HTTP 415)."""


class BodyTimeoutError(InputError):
    """A request body that did not arrive within `body_timeout_s` (HTTP 408)."""


@dataclass
class ServerState:
    config: ServerConfig
    catalog: AvatarCatalog
    rooms: RoomRegistry
    metrics: ServerMetrics
    peers: PeerManager
    policy: HttpPolicy
    connections: ConnectionGuard


STATE = web.AppKey("state", ServerState)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    return request.query.get("token")


def _token_ok(request: web.Request, token: str) -> bool:
    given = _token_of(request)
    # Header bytes that are not UTF-8 arrive as surrogates: compare them as the bytes they were.
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


def _client_keys(request: web.Request, token: str | None) -> tuple[str, ...]:
    """The rate-limit buckets of a request: its IP address, and the token it showed."""
    keys = [f"ip:{request.remote}"]
    if token:
        keys.append("token:" + hashlib.sha256(token.encode()).hexdigest()[:16])
    return tuple(keys)


def _http_error_message(exc: web.HTTPException, request: web.Request) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"no such route: {request.method} {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"{request.method} is not allowed on {request.path} (use {', '.join(sorted(exc.allowed_methods))})"
    return f"{exc.status} {exc.reason}"


# Where each error of the one contract maps (the first matching class wins).
_STATUS: tuple[tuple[type[IdealError], int], ...] = (
    (CapacityError, 503), (RateLimitError, 429), (ForbiddenError, 403), (PeerSecretError, 403), (GoneError, 410),
    (NotFoundError, 404), (MediaTypeError, 415), (BodyTimeoutError, 408), (InputError, 400), (IdealError, 500))


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    """Origin, host and token checks, then the handler; every error becomes JSON `{"error": ...}`."""
    state = request.app[STATE]
    state.connections.request_started(request.transport)
    try:
        return await _checked(request, handler, state)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, _http_error_message(exc, request), headers={
            k: v for k, v in exc.headers.items() if k in ("Allow",)})
    except IdealError as exc:
        status = next(code for cls, code in _STATUS if isinstance(exc, cls))
        state.metrics.rejected[str(status)] += 1
        if status == 500:  # e.g. an avatar/backend problem while opening a session: the server's fault
            log.error("%s %s: %s", request.method, request.path, exc)
        headers = {"Retry-After": f"{exc.retry_after_s:.0f}"} if isinstance(exc, RateLimitError) else None
        return _error(status, str(exc), headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)  # the traceback goes to the log only
        return _error(500, "internal server error (the server's log says more)")
    finally:
        state.connections.request_ended(request.transport)


async def _checked(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                   state: ServerState) -> web.StreamResponse:
    state.policy.check(request)
    # CORS preflights of allowed origins are answered here, before routing would answer 405
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return state.policy.preflight(request)
    token = state.config.token
    if token and request.path not in OPEN_PATHS and not request.path.startswith("/web/"):
        if not _token_ok(request, token):
            state.metrics.rejected["401"] += 1
            return _error(401, "missing or wrong access token: open the page with ?token=... as given by the host")
    return await handler(request)


async def _read_limited(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, however many TCP writes it came in, refusing (400) anything over `limit` without reading
    it all into memory and (408) a body slower than `timeout_s`."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":  # bodies are not decompressed (start_server): no false or bomb-sized gzip
        raise MediaTypeError(f"Content-Encoding {encoding!r}: request bodies are taken uncompressed",
                             "send the body as it is, without Content-Encoding")
    if request.content_length is not None and request.content_length > limit:
        raise InputError(f"body too large: {request.content_length} bytes (limit {limit})", "send one SDP offer")
    try:
        return await asyncio.wait_for(_read_body(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise BodyTimeoutError(f"request body not received within {timeout_s:g} s", "send it at once") from None


async def _read_body(request: web.Request, limit: int) -> bytes:
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise InputError(f"body too large: more than {limit} bytes (limit {limit})", "send one SDP offer")
    return bytes(body)


def _require_json(request: web.Request) -> None:
    # A page on another site can send text/plain without asking the server first (a CORS "simple" request);
    # application/json it cannot, so JSON-only bodies are one more wall against cross-site calls.
    if request.content_type != "application/json":
        raise MediaTypeError(f"Content-Type {request.content_type!r}: {request.path} takes application/json",
                             "send the body as JSON with Content-Type: application/json")


async def _json_body(request: web.Request) -> dict[str, Any]:
    _require_json(request)
    config = request.app[STATE].config
    try:
        data = json.loads(await _read_limited(request, config.max_body_bytes, config.body_timeout_s) or b"{}")
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep, a number too long
        raise InputError(f"request body is not JSON ({type(exc).__name__})", "send a JSON object") from None
    if not isinstance(data, dict):
        raise InputError("request body is not a JSON object", "send a JSON object")
    return data


def _peer_secret(request: web.Request) -> str | None:
    return request.headers.get("X-Peer-Secret") or request.query.get("secret")


# --- handlers --------------------------------------------------------------------------------------------------
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def web_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    path = WEB_DIR / name
    if Path(name).suffix not in WEB_SUFFIXES or not path.is_file():
        raise NotFoundError(f"no such file of the client: /web/{name}", "the page loads /web/app.js and style.css")
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    peers = request.app[STATE].peers
    if peers.draining:  # a load balancer sends new calls elsewhere
        return web.json_response({"status": "draining", "error": "server is shutting down", "sessions": peers.sessions,
                                  "viewers": peers.viewers}, status=503)
    return web.json_response({"status": "ok", "sessions": peers.sessions, "viewers": peers.viewers})


async def client_config(request: web.Request) -> web.Response:
    c = request.app[STATE].config
    authorized = not c.token or _token_ok(request, c.token)
    return web.json_response({"ice_servers": client_ice_servers(c, authorized), "token_required": bool(c.token),
                              "max_sessions": c.max_sessions, "max_viewers": c.max_viewers, "codec": c.codec,
                              "jitter_buffer_target_ms": c.jitter_buffer_target_ms})


async def avatars(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].catalog.describe())


async def offer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    _require_json(request)
    body = await _read_limited(request, state.config.max_offer_bytes, state.config.body_timeout_s)
    req = parse_offer(body, state.config.max_offer_bytes)
    keys = _client_keys(request, _token_of(request) if state.config.token else None)
    return web.json_response(await state.peers.accept(req, keys))


async def peer_stats(request: web.Request) -> web.Response:
    peers = request.app[STATE].peers
    return web.json_response(peers.describe(peers.get(request.match_info["peer_id"], _peer_secret(request))))


async def peer_expression(request: web.Request) -> web.Response:
    peers = request.app[STATE].peers
    peer = peers.get(request.match_info["peer_id"], _peer_secret(request))
    data = await _json_body(request)
    peers.set_expression(peer, str(data.get("expression", "")))
    return web.json_response({"expression": peer.expression})


async def peer_shown(request: web.Request) -> web.Response:
    peers = request.app[STATE].peers
    peer = peers.get(request.match_info["peer_id"], _peer_secret(request))
    return web.json_response(peers.shown(peer, await _json_body(request)))


async def peer_leave(request: web.Request) -> web.Response:
    peers = request.app[STATE].peers
    peer = peers.get(request.match_info["peer_id"], _peer_secret(request))
    await peers.close_peer(peer, "left")
    return web.json_response({"left": True})


async def room(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].rooms.get(request.match_info["name"]).to_dict())


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    guard = state.connections
    snap = state.metrics.snapshot({**state.peers.live(), "connections": {
        "open": len(guard.open), "max": guard.max_connections, "refused": guard.refused,
        "timed_out": guard.timed_out, "evicted": guard.evicted}})
    if request.query.get("format") == "prometheus":
        return web.Response(body=to_prometheus(snap), headers={"Content-Type": CONTENT_TYPE_LATEST})
    return web.json_response(snap)


# --- the application -------------------------------------------------------------------------------------------
def create_app(config: ServerConfig, engine_factory: EngineFactory | None = None) -> web.Application:
    """The server as an aiohttp `Application`. Engines load in `on_startup`; `on_shutdown` closes every peer and
    engine (graceful shutdown). `engine_factory(avatar_path, config)` replaces `streamer.engine.StreamerEngine`."""
    config.validate()
    app = web.Application(middlewares=[error_middleware], client_max_size=max(config.max_offer_bytes, 1 << 16) * 2)
    metrics_ = ServerMetrics()
    rooms = RoomRegistry()
    catalog = AvatarCatalog(config, engine_factory)
    # The name the server listens on (--host) is one of its own names.
    policy = HttpPolicy(config.allow_origins, [*config.allow_hosts, config.host], token_required=bool(config.token),
                        tls=bool(config.cert))
    app[STATE] = ServerState(config, catalog, rooms, metrics_, PeerManager(config, catalog, rooms, metrics_),
                             policy, ConnectionGuard(config.max_connections, config.header_timeout_s))

    async def on_startup(app: web.Application) -> None:
        # Loading a model blocks; at start-up nothing else is waiting on the loop.
        catalog.load()

    async def on_shutdown(app: web.Application) -> None:
        await app[STATE].peers.close_all()
        await catalog.aclose()

    async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
        policy.add_headers(request, response)

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_response_prepare.append(on_response_prepare)
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/config", client_config)
    app.router.add_get("/avatars", avatars)
    app.router.add_post("/offer", offer)
    app.router.add_get("/peers/{peer_id}", peer_stats)
    app.router.add_post("/peers/{peer_id}/expression", peer_expression)
    app.router.add_post("/peers/{peer_id}/leave", peer_leave)
    app.router.add_post("/peers/{peer_id}/shown", peer_shown)
    app.router.add_get("/rooms/{name}", room)
    app.router.add_get("/metrics", metrics)
    # Only the client's own files, by name (no subfolders): the package's Python stays unserved.
    app.router.add_get(r"/web/{name:[A-Za-z0-9_.-]+}", web_file)
    return app


def ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if not config.cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(config.cert, config.key)
    except (ssl.SSLError, OSError) as exc:
        raise InputError(f"--cert {config.cert} / --key {config.key}: unusable ({exc})",
                         "give a PEM certificate and its private key") from None
    return ctx


@dataclass
class RunningServer:
    """A started server (tests, benchmarks, the CLI): `url`, `app`, `await drain()` and `await stop()`."""

    app: web.Application
    runner: web.AppRunner
    url: str
    port: int
    stopped: bool = False

    @property
    def state(self) -> ServerState:
        return self.app[STATE]

    async def drain(self, timeout_s: float | None = None) -> None:
        """Take no new calls (offers get 503, /healthz 503, connected pages see `draining` in their stats and
        reconnect elsewhere), let the connected ones end for up to `timeout_s` (default `drain_timeout_s`), then
        stop."""
        peers = self.state.peers
        peers.draining = True
        timeout_s = self.state.config.drain_timeout_s if timeout_s is None else timeout_s
        log.info("draining: %d peers connected, waiting up to %.0f s", len(peers.peers), timeout_s)
        try:
            await asyncio.wait_for(peers.wait_empty(), timeout_s)
        except asyncio.TimeoutError:
            log.info("draining: %d peers still connected, closing them", len(peers.peers))
        await self.stop()

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        await self.runner.cleanup()  # runs on_shutdown: every peer, session and engine closed


async def start_server(config: ServerConfig, engine_factory: EngineFactory | None = None) -> RunningServer:
    """Start serving on `config.host:config.port` (port 0: a free one) in the running event loop."""
    app = create_app(config, engine_factory)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0, auto_decompress=False)
    await runner.setup()
    site = GuardedSite(runner, config.host, config.port, app[STATE].connections, ssl_context=ssl_context(config),
                       tls_handshake_timeout_s=config.tls_handshake_timeout_s)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise InputError(f"cannot listen on {config.host}:{config.port} ({exc.strerror})",
                         "choose another --port or stop what uses it") from None
    port = runner.addresses[0][1] if runner.addresses else config.port
    return RunningServer(app, runner, config.url(port), port)


async def serve_forever(config: ServerConfig, ready: Callable[[RunningServer], None] | None = None,
                        engine_factory: EngineFactory | None = None) -> None:
    """Run until SIGTERM (drain, then stop) or cancellation (Ctrl-C: stop at once, still closing every peer)."""
    server = await start_server(config, engine_factory)
    if ready:
        ready(server)
    loop = asyncio.get_running_loop()
    terminated = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, terminated.set)
    try:
        await terminated.wait()
        await server.drain()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await server.stop()
