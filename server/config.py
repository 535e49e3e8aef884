"""What the operator of `ideal serve` sets: one dataclass, validated once at start-up."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ideal.avatar.errors import InputError
from ideal.streamer.config import StreamerConfig

# Measured with benchmarks/serve_capacity.py on this project's 2-core CPU machine (docs/serve.md): one session
# is served at ~24-25 new pictures/s (85 ms render budget, its client on the same cores); a local viewer beside
# it still receives 25 fps but brings the session down to ~17 new pictures/s, so a second session would not fit.
DEFAULT_MAX_SESSIONS = 1
DEFAULT_RENDER_BUDGET_MS = 85.0
DEFAULT_MAX_VIEWERS = 2

Codec = Literal["auto", "h264", "vp8"]
CODECS: tuple[str, ...] = get_args(Codec)
ROOM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, as in the browser's `RTCIceServer`."""

    urls: str
    username: str | None = None
    credential: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"urls": self.urls}
        if self.username is not None:
            d["username"] = self.username
        if self.credential is not None:
            d["credential"] = self.credential
        return d


def server_streamer() -> StreamerConfig:
    """The streamer settings a server starts from: the streamer's own, but a longer render budget. In the server
    the renderer shares the CPU and the GIL with aiortc, whose bursts made a third of the frames miss the
    streamer's 45 ms; at 85 ms one session gets 23.7-25.1 new pictures/s (docs/serve.md), for 40 ms more delay,
    which the lip-aligned audio track also takes."""
    return StreamerConfig(render_budget_ms=DEFAULT_RENDER_BUDGET_MS)


@dataclass
class ServerConfig:
    """The fields with a help text are `ideal serve`'s options (ideal/configcli.py derives them), and so are the
    streamer's (`streamer`)."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on (0.0.0.0: every interface)"})
    port: int = field(default=8080, metadata={"help": "TCP port (0: a free one)"})
    # Avatar dirs the server offers; "default" is the built-in one. The first is the one a client gets by default.
    avatars: list[str] = field(default_factory=lambda: ["default"])
    backend: str = field(default="auto", metadata={
        "help": "renderer backend: auto (an exported one when it runs here: TensorRT, then ONNX Runtime; else "
                "PyTorch), torch, onnxruntime, tensorrt"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda[:N]"})
    render_url: str | None = field(default=None, metadata={
        "help": "render on a Triton Inference Server (grpc://HOST:PORT) serving the avatars' models "
                "(`ideal export AVATAR --target triton`, or `ideal triton` locally) instead of in this process"})
    render_timeout_s: float = field(default=5.0, metadata={
        "help": "with --render-url: a reply later than this is dropped and the server treated as lost (frames never "
                "wait for it: they repeat when a render misses its deadline)"})
    render_fallback: Literal["none", "local"] = field(default="none", metadata={
        "help": "when --render-url is unreachable at start: none (stop with the reason) or local (render in this "
                "process with --backend)"})
    mouth_model: str | None = field(default=None, metadata={
        "help": "audio-to-mouth model dir (none: the shipped one)"})
    # 1 leaves the other core to encoders, audio and the network; on a loaded 2-core box 2 threads were measured
    # pathological (spinning), see docs/serve.md.
    threads: int = field(default=1, metadata={"help": "CPU threads for rendering (torch intra-op)"})
    # `ideal serve` turns it on (its --no-export turns it off): the faster ONNX Runtime path is then there without
    # a separate `ideal export`
    export: bool = field(default=False, metadata={
        "help": "export missing or stale ONNX graphs at start (with --backend auto or onnxruntime; ~18 s once)"})
    # Driver clips a client may pick as expression source, by name (clips are server-side paths, never uploads).
    drivers: dict[str, str] = field(default_factory=dict)
    ice_servers: list[IceServer] = field(default_factory=list)
    cert: str | None = field(default=None, metadata={
        "help": "TLS certificate (PEM): serve https so remote browsers allow the microphone"})
    key: str | None = field(default=None, metadata={"help": "TLS private key (PEM)"})
    max_sessions: int = field(default=DEFAULT_MAX_SESSIONS, metadata={
        "help": "avatar sessions at once (a renderer each; 1 is what a 2-core CPU renders at 25 fps, see "
                "docs/serve.md); more are refused with 503"})
    max_viewers: int = field(default=DEFAULT_MAX_VIEWERS, metadata={
        "help": "room viewers at once (an encoder each)"})
    token: str | None = field(default=None, metadata={
        "help": "access token clients must present (?token= or Authorization: Bearer); visible in `ps`: "
                "prefer --token-file or IDEAL_SERVE_TOKEN"})
    codec: Codec = field(default="auto", metadata={
        "help": "video codec preference (auto: the browser's order)"})
    jitter_buffer_target_ms: float | None = field(default=None, metadata={
        "help": "the page asks its browser to hold received video this long (RTCRtpReceiver.jitterBufferTarget; "
                "none: the browser decides)"})
    # 0 by default: at 10 (a=ptime:10) aiortc's per-packet work doubled and the microphone fell 330 ms behind in
    # the browser bench (benchmarks/voice_to_lips.py, "10 ms packets")
    mic_packet_ms: int = field(default=0, metadata={
        "help": "Opus packet length the answer asks of a browser microphone (a=ptime: 10, 20, 40 or 60; 0: "
                "say nothing)"})
    mic_buffer: Literal["immediate", "aiortc"] = field(default="immediate", metadata={
        "help": "microphone receive buffer: immediate (each packet to the streamer on arrival) or aiortc (its "
                "4-packet, 80 ms prefetch; server/receive_buffer.py)"})
    streamer: StreamerConfig = field(default_factory=server_streamer)
    # --- who may call, and with what (docs/serve.md "Security") ----------------------------------------------
    allow_origins: list[str] = field(default_factory=list, metadata={
        "help": "browser origins besides the server's own page that may call the API, e.g. "
                "chrome-extension://ID for the browser extension"})
    allow_hosts: list[str] = field(default_factory=list, metadata={
        "help": "host names a token-less server answers to besides localhost and IP addresses (DNS-rebinding "
                "guard; '*': any)"})
    # The TURN REST scheme (coturn's `use-auth-secret` + `static-auth-secret`): clients get credentials that expire
    # after turn_ttl_s instead of a long-lived password. From --turn-secret-file or IDEAL_TURN_SECRET, never argv.
    turn_secret: str | None = None
    turn_ttl_s: float = field(default=6 * 3600.0, metadata={
        "help": "lifetime of the TURN credentials handed to a client (with a TURN secret)"})
    # --- abuse limits --------------------------------------------------------------------------------------------
    offer_burst: int = field(default=10, metadata={
        "help": "offers a client (IP address, and token) may make that do not connect, before it must wait"})
    offer_refill_s: float = field(default=30.0, metadata={
        "help": "seconds until a client may make one more offer that does not connect (connected ones are free)"})
    max_connections: int = field(default=256, metadata={
        "help": "open HTTP connections at once (capped at half the open-file limit); at the limit the oldest idle "
                "one makes room, and only when all are busy does a new one get 503"})
    header_timeout_s: float = field(default=10.0, metadata={
        "help": "a connection that has not sent a whole request this long after opening or its last answer is "
                "closed"})
    body_timeout_s: float = field(default=10.0, metadata={"help": "time a client has to send a request's body"})
    tls_handshake_timeout_s: float = field(default=10.0, metadata={"help": "time a client has to complete TLS"})
    max_session_s: float = field(default=4 * 3600.0, metadata={
        "help": "longest call (avatar sessions and viewers); 0: no limit"})
    inactivity_timeout_s: float = field(default=600.0, metadata={
        "help": "an avatar session whose microphone carried no speech this long, with nobody else watching it, "
                "is closed; 0: never"})
    drain_timeout_s: float = field(default=30.0, metadata={
        "help": "on SIGTERM: how long connected calls may go on (new ones get 503) before the server exits"})
    max_offer_bytes: int = 64 * 1024
    max_body_bytes: int = 4096  # every other request body (expression changes)
    # An answered offer that never connects holds a session slot: a browser connects within a second or two (ICE
    # gathering is done before it offers), so a few seconds bound what a client that never connects can hold.
    connect_timeout_s: float = 5.0
    idle_timeout_s: float = 10.0  # a connected avatar peer whose microphone sends nothing this long has vanished
    stats_interval_s: float = 1.0

    def validate(self) -> "ServerConfig":
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port {self.port}: not a TCP port", "use 1-65535 (0 picks a free one)")
        if not self.avatars:
            raise InputError("no avatar to serve", "pass --avatar DIR or leave it out for the built-in avatar")
        if self.codec not in CODECS:
            raise InputError(f"--codec {self.codec}: unknown video codec", f"use one of {', '.join(CODECS)}")
        if self.mic_packet_ms not in (0, 10, 20, 40, 60):
            raise InputError(f"--mic-packet-ms {self.mic_packet_ms}: not an Opus packet length",
                             "use 10, 20, 40 or 60 (or 0 to leave it to the browser)")
        if self.jitter_buffer_target_ms is not None and not 0.0 <= self.jitter_buffer_target_ms <= 4000.0:
            raise InputError(f"--jitter-buffer-target-ms {self.jitter_buffer_target_ms:g}: out of range",
                             "use 0-4000 ms (what browsers accept), or leave it out")
        if self.render_url is not None:
            from ideal.export.triton_backend import parse_render_url  # stdlib only; the client is imported later

            parse_render_url(self.render_url)
        if not self.render_timeout_s > 0:
            raise InputError(f"--render-timeout-s {self.render_timeout_s:g}: must be positive", "use seconds above 0")
        if self.render_fallback not in ("none", "local"):
            raise InputError(f"--render-fallback {self.render_fallback}", "use none or local")
        if self.max_sessions < 1:
            raise InputError(f"--max-sessions {self.max_sessions}: must be at least 1", "use a positive number")
        if not 20.0 <= self.streamer.render_budget_ms <= 1000.0:
            raise InputError(f"--render-budget-ms {self.streamer.render_budget_ms:g}: out of range",
                             "use 20..1000 ms (45 is the streamer's, 85 the server's default)")
        if self.threads < 1:
            raise InputError(f"--threads {self.threads}: must be at least 1", "use a positive number")
        if self.max_viewers < 0:
            raise InputError(f"--max-viewers {self.max_viewers}: must be 0 or more", "use a non-negative number")
        if bool(self.cert) != bool(self.key):
            raise InputError("TLS needs both --cert and --key", "pass both PEM files, or neither for plain http")
        for name, path in (("--cert", self.cert), ("--key", self.key)):
            if path and not Path(path).is_file():
                raise InputError(f"{name} {path}: no such file", "give the PEM file's path")
        for name, path in self.drivers.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                raise InputError(f"--driver {name}={path}: bad name", "use letters, digits, '_', '.', '-'")
            if not Path(path).is_file():
                raise InputError(f"--driver {name}={path}: no such file", "give the path of a driver video clip")
        for server in self.ice_servers:
            if not re.match(r"^(stun|stuns|turn|turns):", server.urls):
                raise InputError(f"--ice-server {server.urls}: not a STUN/TURN URL", "e.g. stun:stun.example.org:3478")
        if self.mouth_model is not None and not Path(self.mouth_model).is_dir():
            raise InputError(f"--mouth-model {self.mouth_model}: no such directory",
                             "give a dir written by `ideal mouth train`, or leave it out for the shipped model")
        if self.token is not None and not self.token:
            raise InputError("--token is empty", "give a non-empty token or leave it out")
        if self.turn_secret is not None and not self.turn_secret:
            raise InputError("the TURN secret is empty", "give coturn's static-auth-secret or leave it out")
        for origin in self.allow_origins:
            if not re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/\s]+", origin):
                raise InputError(f"--allow-origin {origin}: not an origin", "e.g. chrome-extension://ID or "
                                 "https://call.example.org (scheme://host[:port], no path)")
        for name, count in (("--offer-burst", self.offer_burst), ("--max-connections", self.max_connections)):
            if count < 1:
                raise InputError(f"{name} {count}: must be at least 1", "use a positive number")
        for name, seconds in (("--offer-refill-s", self.offer_refill_s), ("--header-timeout-s", self.header_timeout_s),
                              ("--body-timeout-s", self.body_timeout_s), ("--turn-ttl-s", self.turn_ttl_s),
                              ("--tls-handshake-timeout-s", self.tls_handshake_timeout_s)):
            if not seconds > 0:
                raise InputError(f"{name} {seconds:g}: must be positive", "use a number of seconds above 0")
        for name, seconds in (("--max-session-s", self.max_session_s),
                              ("--inactivity-timeout-s", self.inactivity_timeout_s),
                              ("--drain-timeout-s", self.drain_timeout_s)):
            if seconds < 0:
                raise InputError(f"{name} {seconds:g}: must be 0 or more", "use a number of seconds (0: no limit)")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.cert else "http"

    def url(self, port: int | None = None) -> str:
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::", "") else self.host
        return f"{self.scheme}://{host}:{port if port is not None else self.port}/"
