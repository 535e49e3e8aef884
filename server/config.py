"""What the operator of `ideal serve` sets: one dataclass, validated once at start-up."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ideal.avatar.errors import InputError

# Measured with benchmarks/serve_capacity.py on this project's 2-core CPU machine (docs/serve.md): one session
# is served at ~24-25 new pictures/s (85 ms render budget, its client on the same cores); a local viewer beside
# it still receives 25 fps but brings the session down to ~17 new pictures/s, so a second session would not fit.
DEFAULT_MAX_SESSIONS = 1
DEFAULT_RENDER_BUDGET_MS = 85.0
DEFAULT_MAX_VIEWERS = 2

CODECS = ("auto", "h264", "vp8")
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


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Avatar dirs the server offers; "default" is the built-in one. The first is the one a client gets by default.
    avatars: list[str] = field(default_factory=lambda: ["default"])
    backend: str = "auto"
    device: str = "cpu"
    mouth_model: str | None = None  # audio-to-mouth model dir; None: the shipped one
    # CPU threads for rendering (torch intra-op). 1 leaves the other core to encoders, audio and the network;
    # on a loaded 2-core box 2 threads were measured pathological (spinning), see docs/serve.md.
    threads: int = 1
    # export each avatar's ONNX graphs at start when they are missing or stale (backend auto / onnxruntime), so the
    # faster ONNX Runtime path is there without a separate `ideal export` (`ideal serve` turns it on)
    export: bool = False
    int8: bool = True  # ONNX Runtime on CPU: the INT8 refine graphs when exported (export/quantize.py)
    # Driver clips a client may pick as expression source, by name (clips are server-side paths, never uploads).
    drivers: dict[str, str] = field(default_factory=dict)
    ice_servers: list[IceServer] = field(default_factory=list)
    cert: str | None = None  # TLS: browsers allow the microphone only on https or localhost
    key: str | None = None
    max_sessions: int = DEFAULT_MAX_SESSIONS  # avatar sessions (a renderer each)
    max_viewers: int = DEFAULT_MAX_VIEWERS  # extra receivers of someone's avatar (an encoder each)
    token: str | None = None  # when set, every API call needs it (?token= or Authorization: Bearer)
    synthetic_mark: bool = True  # the visible "synthetic" mark on every served frame (responsible use)
    # Time from a frame's audio cutoff to its emission (streamer.config.StreamerConfig.render_budget_ms). Larger
    # than the streamer's 45 ms: in the server the renderer shares the CPU and the GIL with aiortc, whose bursts
    # made a third of the frames miss 45 ms; at 85 ms one session gets 23.7-25.1 new pictures/s (docs/serve.md), for
    # 40 ms more delay, which the lip-aligned audio track also takes.
    render_budget_ms: float = DEFAULT_RENDER_BUDGET_MS
    codec: str = "auto"  # video codec preference: h264, vp8 or auto (the browser's order)
    max_offer_bytes: int = 64 * 1024
    connect_timeout_s: float = 20.0  # an answered offer that never connects is dropped after this
    idle_timeout_s: float = 10.0  # an avatar peer whose microphone sends nothing this long has vanished
    stats_interval_s: float = 1.0

    def validate(self) -> "ServerConfig":
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port {self.port}: not a TCP port", "use 1-65535 (0 picks a free one)")
        if not self.avatars:
            raise InputError("no avatar to serve", "pass --avatar DIR or leave it out for the built-in avatar")
        if self.codec not in CODECS:
            raise InputError(f"--codec {self.codec}: unknown video codec", f"use one of {', '.join(CODECS)}")
        if self.max_sessions < 1:
            raise InputError(f"--max-sessions {self.max_sessions}: must be at least 1", "use a positive number")
        if not 20.0 <= self.render_budget_ms <= 1000.0:
            raise InputError(f"--render-budget-ms {self.render_budget_ms:g}: out of range",
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
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.cert else "http"

    def url(self, port: int | None = None) -> str:
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::", "") else self.host
        return f"{self.scheme}://{host}:{port if port is not None else self.port}/"
