"""HTTP side of `ideal serve` (aiohttp): the static client, the SDP exchange and the JSON API.

    GET  /                    the browser client (web/)
    GET  /healthz             liveness + load
    GET  /config              what the client needs: ICE servers, whether a token is required, limits
    GET  /avatars             avatars (name, fps, size, tiers, mouth box) and expression sources
    POST /offer               {"sdp", "type": "offer", "mode": "avatar"|"watch", "avatar", "expression",
                              "room", "name", "target"} -> {"sdp", "type": "answer", "peer_id", ...}
    GET  /peers/{id}          one peer's live stats (fps, tier, speech, latency, session stats)
    POST /peers/{id}/expression {"expression": "audio"|"neutral"|"driver:NAME"}
    POST /peers/{id}/leave    close it now (the client also calls this from `pagehide`)
    GET  /rooms/{name}        participants and a version number
    GET  /metrics             sessions, viewers, fps, latency percentiles (?format=prometheus for text)

Errors are JSON `{"error": "..."}`: 400 bad input, 401 missing/wrong token, 404 unknown peer, 503 full.
No module-level state: everything lives on the `Application` (`app[STATE]`), so several servers (tests,
benchmarks) can run in one process.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
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
from ideal.server.metrics import ServerMetrics, to_prometheus
from ideal.server.offers import parse_offer
from ideal.server.peers import CapacityError, NotFoundError, PeerManager
from ideal.server.rooms import RoomRegistry

log = logging.getLogger(__name__)

WEB_DIR = Path(web_client.__file__).resolve().parent  # the client ships as package data of the `web` package
OPEN_PATHS = ("/", "/healthz", "/config", "/favicon.ico")  # no token needed: the page must load to ask for one


@dataclass
class ServerState:
    config: ServerConfig
    catalog: AvatarCatalog
    rooms: RoomRegistry
    metrics: ServerMetrics
    peers: PeerManager


STATE = web.AppKey("state", ServerState)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    return request.query.get("token")


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    state = request.app[STATE]
    token = state.config.token
    if token and request.path not in OPEN_PATHS and not request.path.startswith("/web/"):
        given = _token_of(request)
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            state.metrics.rejected["401"] += 1
            return _error(401, "missing or wrong access token: open the page with ?token=... as given by the host")
    try:
        return await handler(request)
    except CapacityError as exc:
        return _error(503, str(exc))
    except NotFoundError as exc:
        return _error(404, str(exc))
    except InputError as exc:
        state.metrics.rejected["400"] += 1
        return _error(400, str(exc))
    except IdealError as exc:  # e.g. an avatar/backend problem while opening a session: the server's fault
        log.error("%s %s: %s", request.method, request.path, exc)
        return _error(500, str(exc))


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The body, refusing (400) anything over `limit` without reading it all into memory."""
    if request.content_length is not None and request.content_length > limit:
        raise InputError(f"offer too large: {request.content_length} bytes (limit {limit})", "send one SDP offer")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise InputError(f"offer too large: more than {limit} bytes (limit {limit})", "send one SDP offer")
    return body


async def _json_body(request: web.Request, limit: int = 4096) -> dict[str, Any]:
    try:
        data = json.loads(await _read_limited(request, limit) or b"{}")
    except json.JSONDecodeError as exc:
        raise InputError(f"request body is not JSON ({exc.msg})", "send a JSON object") from None
    if not isinstance(data, dict):
        raise InputError("request body is not a JSON object", "send a JSON object")
    return data


# --- handlers --------------------------------------------------------------------------------------------------
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    peers = request.app[STATE].peers
    return web.json_response({"status": "ok", "sessions": peers.sessions, "viewers": peers.viewers})


async def client_config(request: web.Request) -> web.Response:
    c = request.app[STATE].config
    return web.json_response({"ice_servers": [s.to_dict() for s in c.ice_servers], "token_required": bool(c.token),
                              "max_sessions": c.max_sessions, "max_viewers": c.max_viewers, "codec": c.codec})


async def avatars(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].catalog.describe())


async def offer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = parse_offer(await _read_limited(request, state.config.max_offer_bytes), state.config.max_offer_bytes)
    return web.json_response(await state.peers.accept(req))


async def peer_stats(request: web.Request) -> web.Response:
    peers = request.app[STATE].peers
    return web.json_response(peers.describe(peers.get(request.match_info["peer_id"])))


async def peer_expression(request: web.Request) -> web.Response:
    peers = request.app[STATE].peers
    peer = peers.get(request.match_info["peer_id"])
    data = await _json_body(request)
    peers.set_expression(peer, str(data.get("expression", "")))
    return web.json_response({"expression": peer.expression})


async def peer_leave(request: web.Request) -> web.Response:
    peers = request.app[STATE].peers
    peer = peers.peers.get(request.match_info["peer_id"])
    if peer is not None:
        await peers.close_peer(peer, "left")
    return web.json_response({"left": peer is not None})


async def room(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].rooms.get(request.match_info["name"]).to_dict())


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    snap = state.metrics.snapshot(state.peers.live())
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
    app[STATE] = ServerState(config, catalog, rooms, metrics_, PeerManager(config, catalog, rooms, metrics_))

    async def on_startup(app: web.Application) -> None:
        # Loading a model blocks; at start-up nothing else is waiting on the loop.
        catalog.load()

    async def on_shutdown(app: web.Application) -> None:
        await app[STATE].peers.close_all()
        await catalog.aclose()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/config", client_config)
    app.router.add_get("/avatars", avatars)
    app.router.add_post("/offer", offer)
    app.router.add_get("/peers/{peer_id}", peer_stats)
    app.router.add_post("/peers/{peer_id}/expression", peer_expression)
    app.router.add_post("/peers/{peer_id}/leave", peer_leave)
    app.router.add_get("/rooms/{name}", room)
    app.router.add_get("/metrics", metrics)
    app.router.add_static("/web/", WEB_DIR, show_index=False)
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
    """A started server (tests, benchmarks, the CLI): `url`, `app`, and `await stop()`."""

    app: web.Application
    runner: web.AppRunner
    url: str
    port: int

    @property
    def state(self) -> ServerState:
        return self.app[STATE]

    async def stop(self) -> None:
        await self.runner.cleanup()  # runs on_shutdown: every peer, session and engine closed


async def start_server(config: ServerConfig, engine_factory: EngineFactory | None = None) -> RunningServer:
    """Start serving on `config.host:config.port` (port 0: a free one) in the running event loop."""
    app = create_app(config, engine_factory)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context(config))
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise InputError(f"cannot listen on {config.host}:{config.port} ({exc.strerror})",
                         "choose another --port or stop what uses it") from None
    port = runner.addresses[0][1] if runner.addresses else config.port
    return RunningServer(app, runner, config.url(port), port)


async def serve_forever(config: ServerConfig, ready: Callable[[RunningServer], None] | None = None) -> None:
    """Run until cancelled (Ctrl-C / SIGTERM), then shut down gracefully."""
    server = await start_server(config)
    if ready:
        ready(server)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
