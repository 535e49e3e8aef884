"""Peer connection lifecycle: offer -> answer -> connected -> closed, and nothing left behind.

An *avatar* peer sends its microphone and receives its own avatar (video only: no echo; with `voice` in its offer
also its own voice, lip-aligned: the browser extension hands both to another call page as a camera and a
microphone); it owns a streamer session and the broadcast of that session. A *watch* peer receives another
participant's avatar with that participant's voice, lip-aligned. Every peer ends through `close_peer`, whatever
the cause (the browser left, the connection failed, ICE consent expired, the microphone went silent for
`idle_timeout_s`, the session failed, a limit of the session policy was reached, the server shuts down): it closes
the connection, cancels the peer's tasks and closes its session, and a failure in one step never skips the others
or touches another peer.

Session policy (every limit in `ServerConfig`): an answered offer must connect within `connect_timeout_s`; a
connected avatar peer must send microphone audio at least every `idle_timeout_s` and speech at least every
`inactivity_timeout_s` unless somebody else watches it (a peer that takes its voice back forwards the avatar into
another call, so it counts as watched); no call lasts longer than `max_session_s`.

Each peer has a secret, returned only in the answer to its own offer: the `/peers/ID/*` routes need it, so the
peer id that a room lists lets others watch that participant and nothing more.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ideal.avatar.errors import IdealError, InputError
from ideal.server.avatars import AvatarCatalog
from ideal.server import receive_buffer
from ideal.server.broadcast import AvatarBroadcast, Subscription
from ideal.server.config import ServerConfig
from ideal.server.metrics import ServerMetrics
from ideal.server.offers import OfferRequest, with_audio_packet_ms
from ideal.server.latency import hop_table
from ideal.server.ratelimit import OfferLimiter
from ideal.server.rooms import Participant, RoomRegistry
from ideal.server.rtp_hooks import hook_audio_receiver, hook_video_sender

log = logging.getLogger(__name__)


class CapacityError(IdealError):
    """The server holds as many sessions as it can serve in real time (HTTP 503)."""


class NotFoundError(IdealError):
    """No such peer or participant (HTTP 404)."""


class GoneError(IdealError):
    """The peer was closed by the session policy (HTTP 410): a client should not simply rejoin."""


class PeerSecretError(IdealError):
    """A `/peers/ID/*` request without that peer's secret (HTTP 403)."""


class RateLimitError(IdealError):
    """The client made too many offers that did not connect (HTTP 429)."""

    def __init__(self, message: str, hint: str, retry_after_s: float) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s


# Why recently closed peers ended, so that their page learns it was the policy (kept for the last few hundred).
_REMEMBERED_CLOSES = 256
POLICY_TICK_S = 0.5
MAX_SHOWN_PER_REPORT = 200  # displayed frames per report (the page reports every second: 25-60)


@dataclass(eq=False)
class Peer:
    id: str
    kind: str  # "avatar" | "watch"
    pc: RTCPeerConnection
    avatar: str
    room: str | None = None
    name: str = "guest"
    expression: str = "audio"
    session: Any = None  # avatar peers: the streamer session
    broadcast: AvatarBroadcast | None = None  # avatar peers: fan-out of the session's frames
    subscription: Subscription | None = None  # the tracks this peer receives
    publisher: "Peer | None" = None  # watch peers: whose avatar they receive
    tasks: set[asyncio.Task] = field(default_factory=set)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    client_keys: tuple[str, ...] = ()  # the rate-limit buckets its offer was charged to
    created: float = field(default_factory=time.monotonic)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    connected_at: float | None = None
    watched_at: float | None = None  # avatar peers: the last time someone else watched it (session policy)
    closed: bool = False
    close_reason: str | None = None
    audio_frames_in: int = 0
    voice: bool = False  # avatar peers: its own lip-aligned voice comes back too (forwarded into another call)

    def spawn(self, coro: Any, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}:{self.id[:8]}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


class PeerManager:
    def __init__(self, config: ServerConfig, catalog: AvatarCatalog, rooms: RoomRegistry,
                 metrics: ServerMetrics) -> None:
        self.config = config
        self.catalog = catalog
        self.rooms = rooms
        self.metrics = metrics
        self.limiter = OfferLimiter(config.offer_burst, config.offer_refill_s)
        self.peers: dict[str, Peer] = {}
        self.draining = False  # SIGTERM: no new calls, connected ones may end
        self._empty = asyncio.Event()  # set while no peer is connected or closing (drain waits on it)
        self._empty.set()
        self._closing_peers = 0
        self._closing: set[asyncio.Task] = set()
        self._closed_by_policy: OrderedDict[str, str] = OrderedDict()

    # --- counts --------------------------------------------------------------------------------------------
    @property
    def sessions(self) -> int:
        return sum(p.kind == "avatar" for p in self.peers.values())

    @property
    def viewers(self) -> int:
        return sum(p.kind == "watch" for p in self.peers.values())

    def get(self, peer_id: str, secret: str | None) -> Peer:
        """The peer, for a request that shows its secret."""
        peer = self.peers.get(peer_id)
        if peer is None:
            reason = self._closed_by_policy.get(peer_id)
            if reason is not None:
                raise GoneError(f"peer {peer_id}: closed ({reason})", "press Join to start a new call")
            raise NotFoundError(f"peer {peer_id}: not connected", "it left or was closed; join again")
        given = (secret or "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, peer.secret.encode()):
            raise PeerSecretError(f"peer {peer_id}: missing or wrong peer secret",
                                  "send the peer_secret of your offer's answer (X-Peer-Secret or ?secret=)")
        return peer

    # --- offer -> answer -----------------------------------------------------------------------------------
    def _rtc_configuration(self) -> RTCConfiguration:
        return RTCConfiguration(iceServers=[RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                                            for s in self.config.ice_servers])

    def _check_capacity(self, req: OfferRequest) -> None:
        if self.draining:
            raise CapacityError("server is shutting down: it takes no new calls", "connect to another server")
        if req.mode == "avatar" and self.sessions >= self.config.max_sessions:
            raise CapacityError(
                f"server is full: {self.sessions} of {self.config.max_sessions} avatar sessions in use "
                f"(the limit is what this machine renders at full frame rate)", "try again later")
        if req.mode == "watch" and self.viewers >= self.config.max_viewers:
            raise CapacityError(f"server is full: {self.viewers} of {self.config.max_viewers} viewers in use",
                                "try again later")

    async def accept(self, req: OfferRequest, client_keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """Create the peer for `req` and return the answer. Raises InputError/CapacityError/NotFoundError, and
        RateLimitError when a client in `client_keys` (rate-limit buckets) offered too often without connecting."""
        self._check_capacity(req)
        retry_after = self.limiter.take(client_keys)
        if retry_after is not None:
            raise RateLimitError("too many offers that did not connect from this client",
                                 f"try again in {retry_after:.0f} s", retry_after)
        try:
            return await self._accept(req, client_keys)
        except BaseException:
            self.limiter.give_back(client_keys)  # refused before it held anything
            raise

    async def _accept(self, req: OfferRequest, client_keys: tuple[str, ...]) -> dict[str, Any]:
        entry = None  # the avatar a speaker drives, or
        watched = None  # the broadcast a viewer subscribes to
        publisher = None
        if req.mode == "avatar":
            entry = self.catalog.get(req.avatar)
            expression = self.catalog.expression_source(req.expression)
            avatar_name = entry.name
        else:
            publisher = self.peers.get(req.target or "")
            if publisher is None or publisher.kind != "avatar" or publisher.room != req.room or publisher.closed \
                    or publisher.broadcast is None:
                raise NotFoundError(f"participant {req.target} is not in room {req.room}", "refresh the room list")
            expression, avatar_name, watched = publisher.expression, publisher.avatar, publisher.broadcast
        pc = RTCPeerConnection(self._rtc_configuration())
        peer = Peer(id=uuid.uuid4().hex, kind=req.mode, pc=pc, avatar=avatar_name,
                    room=req.room, name=req.name, expression=req.expression or "audio", publisher=publisher,
                    client_keys=client_keys, voice=req.voice)
        self.peers[peer.id] = peer  # counted from here on, so concurrent offers cannot overshoot the limit
        self._empty.clear()
        self.metrics.counters[f"{req.mode}_offers"] += 1
        try:
            if entry is not None:
                peer.session = entry.engine.open_session(expression=expression)
                fps = float(entry.info.get("fps", 25.0))
                peer.broadcast = AvatarBroadcast(peer.session, fps, self.metrics)
                # own preview: no echo, unless the client asks for its voice back (the extension's microphone)
                peer.subscription = peer.broadcast.subscribe(with_audio=req.voice)
                peer.spawn(self._run_broadcast(peer), "broadcast")
            elif watched is not None:
                peer.subscription = watched.subscribe(with_audio=True)
            self._wire(peer)
            # Tracks (and codec preferences) go on before the offer is applied: aiortc matches the offer's
            # m-lines to these transceivers by kind and negotiates codecs right there.
            self._add_tracks(peer)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=req.sdp, type="offer"))
            except Exception as exc:
                hint = "send a browser's offer"
                if self.config.codec != "auto":
                    hint = f"the server only sends {self.config.codec.upper()} (--codec): does the browser offer it?"
                raise InputError(f"invalid SDP offer ({type(exc).__name__}: {exc})", hint) from None
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await self.close_peer(peer, "offer failed")
            raise
        if req.mode == "avatar" and req.room:
            self.rooms.join(req.room, Participant(peer.id, req.name, peer.avatar))
        peer.spawn(self._watchdog(peer), "watchdog")
        log.info("peer %s (%s, avatar %s, room %s) answered", peer.id[:8], peer.kind, peer.avatar, peer.room)
        sdp = pc.localDescription.sdp
        if req.mode == "avatar" and self.config.mic_packet_ms:
            sdp = with_audio_packet_ms(sdp, self.config.mic_packet_ms)
        return {"sdp": sdp, "type": pc.localDescription.type, "peer_id": peer.id,
                "peer_secret": peer.secret, "session_id": getattr(peer.session, "id", None), "avatar": peer.avatar}

    def _wire(self, peer: Peer) -> None:
        pc = peer.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            log.debug("peer %s: connection %s", peer.id[:8], state)
            if state == "connected" and not peer.connected.is_set():
                peer.connected_at = time.monotonic()
                peer.connected.set()
            elif state in ("failed", "closed"):
                await self.close_peer(peer, f"connection {state}")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and peer.kind == "avatar":
                receiver = next((t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None)
                try:  # both only shave latency or measure it: a failure here must never cost the call
                    if receiver is not None and self.config.mic_buffer == "immediate":
                        receive_buffer.install(receiver)
                    if receiver is not None and peer.broadcast is not None:
                        hook_audio_receiver(receiver, peer.broadcast.trace.mic)
                except Exception:
                    log.exception("peer %s: the microphone's receive buffer or latency hooks", peer.id[:8])
                peer.spawn(self._pump_microphone(peer, track), "microphone")

    def _add_tracks(self, peer: Peer) -> None:
        sub = peer.subscription
        assert sub is not None
        sender = peer.pc.addTrack(sub.video)
        if sub.video.trace is not None:
            try:
                hook_video_sender(sender, sub.video.trace)
            except Exception:
                log.exception("peer %s: the video sender's latency hook", peer.id[:8])
        if sub.audio is not None:
            peer.pc.addTrack(sub.audio)
        if self.config.codec != "auto":
            wanted = f"video/{self.config.codec}".lower()
            codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == wanted]
            for transceiver in peer.pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.setCodecPreferences(codecs)

    # --- per-peer tasks ------------------------------------------------------------------------------------
    async def _pump_microphone(self, peer: Peer, track: MediaStreamTrack) -> None:
        """Browser mic (Opus decoded to 48 kHz stereo, 20 ms frames) -> the session, as it comes (the streamer
        resamples at its edge). Silence from the network for `idle_timeout_s` once connected means the browser
        vanished (before that, the watchdog's connect timeout applies)."""
        await peer.connected.wait()
        timeout = self.config.idle_timeout_s
        while not peer.closed:
            try:
                frame = await asyncio.wait_for(track.recv(), timeout)
            except asyncio.TimeoutError:
                self._close_soon(peer, f"no microphone audio for {timeout:g} s (peer vanished)")
                return
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):  # an audio track yields audio frames; this tells mypy
                continue
            pcm = frame.to_ndarray().reshape(-1)  # packed s16: (1, samples * channels) -> interleaved
            try:
                peer.session.push_audio(pcm, frame.sample_rate, len(frame.layout.channels))
            except Exception as exc:
                self._close_soon(peer, f"session rejected audio ({exc})")
                return
            peer.audio_frames_in += 1
            frontend = getattr(peer.session, "frontend", None)
            if peer.broadcast is not None and frame.pts is not None and frontend is not None:
                peer.broadcast.trace.mic.on_pushed(int(frame.pts), frame.samples, frame.sample_rate, time.time(),
                                                   frontend.samples_written,
                                                   peer.session.resampler_holdback_ms / 1000.0)

    async def _run_broadcast(self, peer: Peer) -> None:
        assert peer.broadcast is not None
        await peer.broadcast.run()
        if not peer.closed:
            reason = peer.broadcast.error or getattr(peer.session, "failure", None) or "session ended"
            self._close_soon(peer, f"session ended: {reason}")

    async def _watchdog(self, peer: Peer) -> None:
        """The session policy: connect in time, then keep within the call length and the inactivity limit."""
        try:
            await asyncio.wait_for(peer.connected.wait(), self.config.connect_timeout_s)
        except asyncio.TimeoutError:
            self._close_soon(peer, f"not connected within {self.config.connect_timeout_s:g} s")
            return
        self.limiter.give_back(peer.client_keys)  # a connected offer does not count against its client
        while not peer.closed:
            reason = self._policy_breach(peer, time.monotonic())
            if reason is not None:
                self._closed_by_policy[peer.id] = reason
                while len(self._closed_by_policy) > _REMEMBERED_CLOSES:
                    self._closed_by_policy.popitem(last=False)
                self._close_soon(peer, reason)
                return
            await asyncio.sleep(POLICY_TICK_S)

    def _policy_breach(self, peer: Peer, now: float) -> str | None:
        assert peer.connected_at is not None
        limit = self.config.max_session_s
        if limit and now - peer.connected_at > limit:
            return f"the call reached the server's limit of {limit:g} s"
        limit = self.config.inactivity_timeout_s
        if limit and peer.broadcast is not None:
            if peer.broadcast.subscribers > 1 or peer.voice:  # others watch it: a listener in a call is not idle
                peer.watched_at = now
            last = max(peer.connected_at, peer.watched_at or 0.0, peer.broadcast.last_speech_at or 0.0)
            if now - last > limit:
                return f"no speech and nobody watching for {limit:g} s"
        return None

    def _close_soon(self, peer: Peer, reason: str) -> None:
        """Close from inside one of the peer's own tasks (which `close_peer` cancels) without cancelling itself."""
        task = asyncio.get_running_loop().create_task(self.close_peer(peer, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # --- the one way a peer ends -----------------------------------------------------------------------------
    async def close_peer(self, peer: Peer, reason: str) -> None:
        if peer.closed:
            return
        peer.closed = True
        peer.close_reason = reason
        self._closing_peers += 1
        try:
            await self._close(peer, reason)
        finally:
            self._closing_peers -= 1
            if not self.peers and not self._closing_peers:
                self._empty.set()  # only now: every session is closed too

    async def _close(self, peer: Peer, reason: str) -> None:
        self.peers.pop(peer.id, None)
        self.metrics.counters[f"{peer.kind}_closed"] += 1
        log.info("peer %s (%s) closed: %s", peer.id[:8], peer.kind, reason)
        if peer.kind == "avatar" and peer.room:
            self.rooms.leave(peer.room, peer.id)
        steps: list[tuple[str, Any]] = []
        if peer.kind == "avatar":
            # Its viewers go with it: their connection carries nothing else.
            for other in [p for p in self.peers.values() if p.publisher is peer]:
                steps.append(("viewer", lambda o=other: self.close_peer(o, "the participant left")))
        if peer.subscription is not None:
            source = peer.publisher.broadcast if peer.publisher else peer.broadcast
            if source is not None:
                source.unsubscribe(peer.subscription)
            else:
                peer.subscription.end()
        current = asyncio.current_task()
        tasks = [t for t in peer.tasks if t is not current]
        for task in tasks:
            task.cancel()
        steps.append(("connection", peer.pc.close))
        if peer.session is not None:
            steps.append(("session", peer.session.aclose))
        for what, step in steps:
            try:
                await step()
            except Exception:
                log.exception("peer %s: closing its %s failed", peer.id[:8], what)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Break the peer <-> pc reference cycle (event handlers close over the peer) so memory goes at once.
        peer.pc.remove_all_listeners()
        peer.publisher = None

    async def close_all(self, reason: str = "server shutting down") -> None:
        await asyncio.gather(*(self.close_peer(p, reason) for p in list(self.peers.values())),
                             return_exceptions=True)
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    async def wait_empty(self) -> None:
        """Until no peer is connected."""
        await self._empty.wait()

    # --- what the API reports ------------------------------------------------------------------------------
    def describe(self, peer: Peer) -> dict[str, Any]:
        d: dict[str, Any] = {"id": peer.id, "kind": peer.kind, "avatar": peer.avatar, "room": peer.room,
                             "draining": self.draining,
                             "expression": peer.expression, "state": peer.pc.connectionState,
                             "audio_frames_in": peer.audio_frames_in,
                             "age_s": round(time.monotonic() - peer.created, 1)}
        source = peer.broadcast or (peer.publisher.broadcast if peer.publisher else None)
        if source is not None:
            d["stream"] = source.stats()  # a viewer sees the numbers of the avatar it watches
        if peer.session is not None:
            to_dict = getattr(getattr(peer.session, "stats", None), "to_dict", None)
            d["session"] = to_dict() if callable(to_dict) else None
        if peer.subscription is not None:
            d["video_sent"] = peer.subscription.video.sent
            d["video_dropped"] = peer.subscription.video.dropped
        return d

    def shown(self, peer: Peer, data: dict[str, Any]) -> dict[str, Any]:
        """The page's report of the frames it displayed (`requestVideoFrameCallback`) -> the measured voice-to-lips
        table of the frames it has shown (server/latency.py), with the server's clock for the page's estimate."""
        trace = peer.subscription.video.trace if peer.subscription is not None else None
        frames = data.get("frames")
        offset = data.get("offset_s", 0.0)
        if not isinstance(frames, list) or len(frames) > MAX_SHOWN_PER_REPORT \
                or not isinstance(offset, (int, float)) or not abs(offset) < 3600:
            raise InputError(f"a report of shown frames is a list of at most {MAX_SHOWN_PER_REPORT} frames and an "
                             "offset_s in seconds", "send what web/latency.js sends")
        try:
            rows = [{k: float(f[k]) for k in ("rtp", "received", "presented", "displayed")} for f in frames]
        except (TypeError, KeyError, ValueError):
            raise InputError("a shown frame needs numbers rtp, received, presented, displayed",
                             "send what web/latency.js sends") from None
        if peer.broadcast is not None:  # this page's browser holds the session's microphone
            peer.broadcast.trace.browser_offset_s = float(offset)
        if trace is not None:
            trace.on_shown(rows, float(offset))
        table = hop_table(trace.frames()) if trace is not None else None
        return {"server_time": time.time(), "latency": table}

    def set_expression(self, peer: Peer, spec: str) -> None:
        if peer.kind != "avatar":
            raise InputError("only an avatar peer has an expression source", "send it for your own peer id")
        peer.session.set_expression(self.catalog.expression_source(spec))
        peer.expression = spec

    def live(self) -> dict[str, Any]:
        broadcasts = [(p.id, b) for p in self.peers.values() if p.kind == "avatar" and (b := p.broadcast) is not None]
        fps = [b.picture_rate.value() for _, b in broadcasts]
        return {"sessions": len(broadcasts), "max_sessions": self.config.max_sessions,
                "viewers": self.viewers, "max_viewers": self.config.max_viewers, "rooms": len(self.rooms),
                "fps": {"min": round(min(fps), 2) if fps else None,
                        "mean": round(sum(fps) / len(fps), 2) if fps else None},
                "sessions_detail": [{"id": peer_id[:8], "fps": round(b.frame_rate.value(), 2),
                                     "picture_fps": round(b.picture_rate.value(), 2),
                                     "tier": b.last.get("tier"), "subscribers": b.subscribers}
                                    for peer_id, b in broadcasts]}
