"""Settings of the streamer, one dataclass. Latency figures in docs/streamer.md follow from these. The fields with
a help text are the ones `ideal serve` offers (ideal/configcli.py derives its options)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal


@dataclass
class StreamerConfig:
    # --- timing (latency = frame duration + model lookahead + jitter_ms + render_budget_ms - chunk phase) ---
    jitter_ms: float = field(default=22.0, metadata={
        "help": "how late the audio a frame needs may arrive, in ms (at least the sender's chunk duration)"})
    max_jitter_ms: float = 250.0  # the jitter allowance grows to chunk duration + resampler holdback, up to this
    render_budget_ms: float = field(default=45.0, metadata={
        "help": "time a frame may take from its audio to its emission, in ms; lower cuts latency, but frames that "
                "miss it repeat the last picture"})
    max_ahead_ms: float | None = 200.0  # audio buffered beyond real time (bursts) above this is dropped
    idle_timeout_s: float | None = 30.0  # close a session that has received no audio for this long
    # --- front end ---
    vad_aggressiveness: int = field(default=2, metadata={
        "help": "voice activity detection: webrtcvad mode 0 (lenient) .. 3 (strict)"})
    vad_frame_ms: int = 20  # 10, 20 or 30 (webrtcvad)
    speech_on_ms: float = 60.0  # voiced audio needed within `speech_on_window_ms` to enter speech
    speech_on_window_ms: float = 100.0
    speech_hangover_ms: float = 240.0  # stay in speech this long after the last voiced block
    # "FIR": a linear-phase decimator where the rate is a whole multiple of 16 kHz (48 and 32 kHz browsers), 5 ms
    # holdback against soxr HQ's 37 ms in 20 ms chunks, and equal to the offline `load_audio` (soxr HQ) within
    # 61 dB SNR; soxr HQ for other rates. A soxr quality ("HQ", "LQ", ...) uses soxr for every rate
    resample_quality: str = "FIR"
    ring_seconds: float = 4.0  # history kept by the feature and audio ring buffers
    # --- rendering ---
    backend_threads: int | None = None  # intra-op threads of an exported backend (None: its default)
    int8: bool = field(default=True, metadata={
        "help": "ONNX Runtime on CPU: the INT8 refine graphs when exported (export/quantize.py), else the FP32 ones"})
    warmup_repeats: int = 2  # renders per tier at start-up to measure its cost (the first pays lazy init)
    max_batch: int = 8  # render requests of several sessions (same tier) merged into one backend call
    # nice value added to the compositing thread, so the model thread (the critical path) wins the cores; live
    # coarse tier on 2 vCPUs, 40 s runs: 0/0/0 late frames at 5 vs 11/0/1 at 0 (docs/performance.md)
    compose_nice: int = 5
    adaptive_tiers: bool = field(default=True, metadata={
        "help": "step quality tiers down and up with the render cost (off: every frame at one tier)"})
    progressive: bool = field(default=True, metadata={
        "help": "render a finer tier after the base one when the deadline allows"})
    step_up_after: int = 50  # frames in a row with room to spare before the base tier steps up
    step_down_cost: float = 0.9  # step down when the base tier's typical cost exceeds this share of budget
    synthetic_mark: bool = field(default=True, metadata={
        "help": "the visible 'synthetic' mark on every frame (turn off only where viewers are told otherwise)"})
    # --- idle behaviour ---
    listening_pose_speed: float = field(default=0.5, metadata={
        "help": "head-motion playback speed while silent (1: as while speaking)"})
    # the mouth in silence: "closed" (lips touching) or "rest" (the avatar's calibrated rest mouth, lips a little
    # apart, as `ideal dub` renders pauses). Live defaults to closed, an idle listener's look: in the browser test
    # the tracked lip gap changed 0.0041 face heights per picture in silence when closed and 0.0052 at rest
    # (speech 0.0085-0.0096), so parted lips at rest read less steady
    silence_mouth: Literal["closed", "rest"] = field(default="closed", metadata={
        "help": "the mouth in silence: closed (lips touching) or rest (the avatar's own rest mouth)"})
    frame_queue: int = 8  # emitted frames waiting for the consumer; the oldest is dropped beyond this
    stats_window: int = 1500  # frames kept for percentiles (bounded memory)

    def to_dict(self) -> dict:
        return asdict(self)
