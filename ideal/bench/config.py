"""What `ideal bench` measures and how: one dataclass, from which ideal/configcli.py derives the command's
options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["offline", "realtime", "webrtc", "browser", "render-tier"]


@dataclass
class BenchConfig:
    avatar: str = field(default="default", metadata={"help": "avatar dir (default: the built-in avatar)"})
    backend: Literal["auto", "torch", "onnxruntime", "tensorrt", "all"] = field(default="auto", metadata={
        "help": "backend to measure; all = every backend that runs here (offline mode)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda[:N]"})
    render_url: str | None = field(default=None, metadata={
        "help": "render on a Triton Inference Server (grpc://HOST:PORT) instead of in this process; render-tier "
                "mode: the server compared with in-process"})
    metrics_url: str | None = field(default=None, metadata={
        "help": "render-tier mode: Triton's metrics endpoint (default http://HOST:8002/metrics of --render-url)"})
    tier: list[str] | None = field(default=None, metadata={
        "help": "tiers to measure (offline; none: all) or the highest tier the streamer may use (realtime/webrtc)"})
    pin_tier: bool = field(default=False, metadata={
        "help": "realtime: render every frame at --tier (no adaptation), to measure that tier"})
    audio: str | None = field(default=None, metadata={
        "help": "speech file to feed (none: espeak-ng speech, else synthetic)"})
    sessions: int = field(default=1, metadata={
        "help": "concurrent sessions (batch in offline mode; render-tier mode: 1, 2, 4 ... up to this many)"})
    duration: float | None = field(default=None, metadata={
        "help": "seconds of stream per run (none: offline 4, realtime 10, webrtc: the audio)"})
    mode: Mode = field(default="offline", metadata={"help": "what to measure"})
    threads: int | None = field(default=None, metadata={"help": "CPU threads for torch and onnxruntime"})
    fp16: bool = field(default=False, metadata={"help": "FP16 engines (TensorRT)"})
    int8: bool = field(default=True, metadata={
        "help": "ONNX Runtime on CPU: run the INT8 refine graphs (off: the FP32 ones, for an A/B)"})
    trials: int = field(default=3, metadata={"help": "webrtc: speech onsets measured (one peer each)"})
    interleave: bool = field(default=False, metadata={
        "help": "offline: backends and tiers take turns frame by frame (fair on a loaded machine)"})
    max_sessions: bool = field(default=False, metadata={
        "help": "realtime: also find how many sessions hold 25 fps (adds runs)"})
    inject_delay_ms: float = field(default=0.0, metadata={
        "help": "add a fixed sleep to every backend call (checks that latency figures see it)"})
    render_budget_ms: float | None = field(default=None, metadata={
        "help": "browser: the server's render budget; realtime: the streamer's (none: their defaults, 85 and 45 ms)"})
    mic_buffer: Literal["immediate", "aiortc"] = field(default="immediate", metadata={
        "help": "browser: the server's microphone receive buffer (ideal serve --mic-buffer)"})
    jitter_ms: float | None = field(default=None, metadata={
        "help": "browser: the streamer's jitter allowance (none: its default)"})
    codec: Literal["auto", "h264", "vp8"] = field(default="auto", metadata={
        "help": "browser: the video codec the server sends"})
    jitter_buffer_target_ms: float | None = field(default=None, metadata={
        "help": "browser: RTCRtpReceiver.jitterBufferTarget the page asks for (none: the browser decides)"})
    screenshot: str | None = field(default=None, metadata={"help": "browser: save the viewer's page as PNG"})
    json: str | None = field(default=None, metadata={"help": "write the full figures as JSON"})
    plot: str | None = field(default=None, metadata={"help": "write a plot"})
