"""The streaming engine: one loaded avatar and backend, shared by any number of live sessions.

    engine = StreamerEngine("avatars/obama", backend="auto")      # loads, picks a backend, times every tier
    session = engine.open_session(expression="audio")            # inside the event loop
    session.push_audio(pcm, 48000, 2)                            # as the network delivers it
    async for frame in session.frames(): ...                     # StreamFrame at 25 fps, pts = index / fps

The engine owns what sessions share: the backend and its render thread (`RenderQueue`: batched across
sessions, earliest deadline first), the tier cost model, the audio-to-mouth model and prosody predictor, the
avatar's pose track and base plate, and the tracked driver clips. Sessions own everything per call.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ideal.avatar.audio.features import AudioWindow, MelConfig, silence_value
from ideal.avatar.backend import Backend
from ideal.avatar.errors import BackendError, InputError
from ideal.avatar.expression import EXPRESSION_DIM
from ideal.avatar.idle import IdleConfig, IdleMotion, blink_depth_from_expressions
from ideal.avatar.manifest import resolve_avatar
from ideal.streamer.audio_frontend import FeatureStreamSpec
from ideal.streamer.clock import Clock, MonotonicClock
from ideal.streamer.config import StreamerConfig
from ideal.streamer.expression_source import ClipLibrary, StreamingDriver, parse_expression
from ideal.streamer.render_queue import RenderQueue, warm_up
from ideal.streamer.scheduler import CostModel, order_tiers
from ideal.streamer.session import Session, SessionContext

log = logging.getLogger(__name__)


def _make_backend(avatar_dir: Path, loaded: Any, backend: str, device: str,
                  threads: int | None = None, int8: bool = True) -> tuple[Backend, str]:
    """The backend named (`auto`: the first exported one that runs, else the avatar's own PyTorch backend)."""
    from ideal.export.backends import choose_backend  # imports onnxruntime / tensorrt only for a backend it makes

    if backend == "torch":
        return loaded.backend, "torch"
    if backend == "auto":
        try:
            # Live, the first exported backend that runs wins over PyTorch rather than the fastest single frame:
            # PyTorch renders one frame as fast (23 vs 29 ms here) but shares the GIL with the event loop and the
            # compositing thread, and in 60 s live runs on the 2-vCPU machines it repeated far more frames (fast
            # tier 38 vs 0, coarse 623 vs 20-104 of 1498; docs/performance.md).
            choice = choose_backend(avatar_dir, "auto", device, threads=threads, measure=False, int8=int8)
        except BackendError as exc:
            log.info("no exported backend (%s); using PyTorch", exc)
            return loaded.backend, "torch"
        if choice.name == "torch":
            return loaded.backend, "torch"  # the already-loaded one, not a second copy
        return choice.backend, choice.name
    choice = choose_backend(avatar_dir, backend, device, threads=threads, int8=int8)
    return choice.backend, choice.name


def _torch_for_expression_networks_only() -> int:
    """With an exported backend, PyTorch runs only the per-frame audio-to-mouth and prosody networks (well under
    a millisecond of arithmetic each): one thread. More threads cannot split such small work, and their OpenMP
    workers spin-wait after each parallel op on the cores the backend's own threads need (expression step
    2.2-2.6 -> 2.0 ms mean, p95 3.0-4.7 -> 2.6-3.1 ms in live coarse-tier runs). Returns the previous count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    return previous


class StreamerEngine:
    """One loaded avatar + backend, shared by sessions (render calls of several sessions may be batched).

    `backend` is a name ("auto" | "torch" | "onnxruntime" | "tensorrt") or an already-made `Backend` (e.g. a
    wrapper that injects delay in tests). Raises AvatarError / BackendError / InputError with what to do."""

    def __init__(self, avatar: str | Path | None = None, backend: str | Backend = "auto", device: str = "cpu",
                 clock: Clock | None = None, config: StreamerConfig | None = None, *,
                 mouth_model: Any | None = None) -> None:
        from ideal.avatar.loading import load_avatar
        from ideal.avatar.mouth import LIVE_MOUTH_MODEL_DIR, load_mouth_model

        self.config = config or StreamerConfig()
        if self.config.silence_mouth not in ("closed", "rest"):
            raise InputError(f"silence_mouth {self.config.silence_mouth!r}: unknown", "use 'closed' or 'rest'")
        self.clock: Clock = clock or MonotonicClock()
        import cv2

        from ideal.avatar.allocator import keep_freed_memory

        keep_freed_memory()  # per-frame temporaries: no page faults in bursts (avatar/allocator.py)
        # compositing runs on the render thread next to the model; OpenCV's own worker pool only fights the
        # other threads for the same cores (5.5 ms per 450 px composite with 1 thread vs 6.4-8.6 ms with 2 here)
        cv2.setNumThreads(1)
        self.avatar_dir = resolve_avatar(avatar)
        self.avatar = load_avatar(self.avatar_dir, device=device if device != "auto" else "cpu")
        if isinstance(backend, str):
            self.backend, self.backend_name = _make_backend(self.avatar_dir, self.avatar, backend, device,
                                                            self.config.backend_threads, self.config.int8)
        elif isinstance(backend, Backend):
            self.backend, self.backend_name = backend, getattr(backend, "name", type(backend).__name__)
        else:
            raise InputError(f"backend {backend!r} is neither a name nor a Backend", "pass e.g. backend='auto'")
        # torch's thread count is process-wide: restored by aclose()
        self._torch_threads = _torch_for_expression_networks_only() \
            if self.backend_name in ("onnxruntime", "tensorrt", "triton") else None
        self.tiers = dict(self.backend.tiers)
        self.ordered_tiers = order_tiers(self.tiers)
        self.fps: float = float(self.avatar.fps)
        self.window: AudioWindow = self.avatar.window
        self.mel_config: MelConfig = self.avatar.mel_config
        # live default: the 40 ms-lookahead mouth model. Lookahead is latency; it costs 0.07 of LOSO r against
        # the 120 ms model that offline dubbing uses (docs/mouth.md), and keeps p95 latency reachable <= 150 ms.
        self.mouth = mouth_model if mouth_model is not None else load_mouth_model(LIVE_MOUTH_MODEL_DIR)
        self.mouth_window: AudioWindow = self.mouth.window
        self.prosody = self.avatar.prosody_predictor
        self.prosody_window: AudioWindow = self.prosody.window
        # the streamer waits for the longest lookahead of the models it runs: that wait is latency
        self.lookahead_ms = max(self.window.lookahead_ms, self.mouth_window.lookahead_ms,
                                self.prosody_window.lookahead_ms)
        self.feature_streams, self.mouth_stream, self.mouth_mel = self._feature_streams()
        self.pose_track = np.asarray(self.avatar.pose_track, dtype=np.float32)
        self._plate_poses = self.pose_track.reshape(len(self.pose_track), -1)
        self.clips = ClipLibrary(self.fps)
        # blinks as deep as this person's lids were seen to close in training (as `ideal dub` does)
        self.blink_depth = blink_depth_from_expressions(self.avatar.expression_track)
        self.costs = CostModel()
        self.render_queue = RenderQueue(self.backend, self.clock, self.costs, self.config.max_batch,
                                        self.config.compose_nice)
        # per-frame expression work (audio-to-mouth, prosody) of every session, off the event loop
        self.expression_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ideal-expression")
        self.sessions: dict[str, Session] = {}
        self._closed = False
        self.warmup = self._warm_up()
        self.idle_image: np.ndarray = self.warmup[self.ordered_tiers[0]]["image"]
        self._session_context = SessionContext(
            config=self.config, clock=self.clock, fps=self.fps, tiers=tuple(self.ordered_tiers),
            lookahead_ms=self.lookahead_ms, feature_streams=self.feature_streams, mel_config=self.mel_config,
            render_window=self.window, mouth_window=self.mouth_window, mouth_stream=self.mouth_stream,
            mouth_mel=self.mouth_mel, prosody_window=self.prosody_window, render_queue=self.render_queue,
            costs=self.costs, expression_executor=self.expression_executor, make_driver=self.make_driver,
            composer=self.composer, first_pose=self.pose_track[0], idle_image=self.idle_image,
            release=self._forget)
        log.info("streamer engine: %s", self.info)

    # --- what sessions share ------------------------------------------------------------------------------
    def _feature_streams(self) -> tuple[dict[str, FeatureStreamSpec], str, MelConfig]:
        from ideal.avatar.audio.features import StreamingMelFeatures
        from ideal.avatar.mouth.features import StreamingMouthFeatures, padding_value

        mel_cfg = self.mel_config
        streams = {"mel": FeatureStreamSpec(lambda: StreamingMelFeatures(mel_cfg), mel_cfg.n_mels,
                                            silence_value(mel_cfg))}
        spec = self.mouth.spec
        if spec.kind in ("logmel", "cepstral") and spec.mel == mel_cfg:
            return streams, "mel", spec.mel  # the mouth model reads the same log-mel: compute it once
        streams["mouth"] = FeatureStreamSpec(lambda: StreamingMouthFeatures(spec), spec.input_dim,
                                             padding_value(spec))
        return streams, "mouth", spec.mel

    def _live_mouth_calibration(self) -> Any:
        """The avatar's mouth calibration, with its rest mouth unless the config closes the mouth in silence."""
        cal = self.avatar.mouth_calibration
        if self.config.silence_mouth == "closed":
            return cal.without_rest()
        return cal

    def make_driver(self, seed: int) -> StreamingDriver:
        idle = IdleMotion(self.pose_track, self.fps, seed=seed, cfg=IdleConfig(blink_depth=self.blink_depth))
        return StreamingDriver(self.mouth, idle, self.fps, self.prosody, self.clips, self.blink_depth,
                               mouth_calibration=self._live_mouth_calibration(),
                               listening_pose_speed=self.config.listening_pose_speed)

    def plate_index(self, pose: np.ndarray) -> int:
        """The base-plate frame whose tracked head pose is nearest `pose` (3, 4), so torso and head agree."""
        d = self._plate_poses - np.asarray(pose, np.float32).reshape(1, -1)
        return int(np.argmin(np.einsum("ij,ij->i", d, d)))

    def compose(self, rgb: np.ndarray, alpha: np.ndarray, plate: int) -> np.ndarray:
        """Crop rgb (S,S,3), alpha (S,S,1) -> the full (H, W, 3) uint8 frame, marked unless disabled."""
        from ideal.avatar.compose import add_synthetic_mark

        frame = self.avatar.composite(rgb, alpha, plate)
        return add_synthetic_mark(frame) if self.config.synthetic_mark else frame

    def composer(self, track_index: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """What the compositing thread calls to turn a frame's crop into the full frame: the base plate frame is
        the pose-track frame the head shows (`DriveFrame.track_index`), so torso and head move together."""
        return lambda rgb, alpha: self.compose(rgb, alpha, int(track_index))

    def _warm_up(self) -> dict[str, Any]:
        mel = np.full((self.window.length, self.mel_config.n_mels), silence_value(self.mel_config), np.float32)
        expr = np.zeros(EXPRESSION_DIM, np.float32)
        pose = self.pose_track[0]
        plate = self.plate_index(pose)
        return warm_up(self.backend, self.ordered_tiers, mel, expr, pose, self.costs, self.clock,
                       lambda rgb, alpha: self.compose(rgb, alpha, plate), repeats=self.config.warmup_repeats)

    # --- API ------------------------------------------------------------------------------------------------
    @property
    def info(self) -> dict:
        h, w = self.idle_image.shape[:2]
        return {
            "avatar": getattr(self.avatar, "name", None) or self.avatar_dir.name,
            "avatar_dir": str(self.avatar_dir),
            "backend": self.backend_name,
            # per tier, the precision of its refine graph (ONNX Runtime on CPU runs INT8 ones when exported)
            "refiner": {n: (getattr(self.backend, "precision", None) or {}).get(n, "fp32") for n in self.ordered_tiers},
            "tiers": {n: {**self.tiers[n].to_dict(), "cost_ms": round(1000.0 * (self.costs.estimate(n) or 0.0), 2)}
                      for n in self.ordered_tiers},
            "fps": self.fps,
            "output_size": [w, h],
            "lookahead_ms": self.lookahead_ms,
            "delay_ms": 1000.0 / self.fps + self.lookahead_ms + self.config.jitter_ms + self.config.render_budget_ms,
            # the fixed playout delay, part by part (latency = delay minus where in its chunk a frame starts)
            "delay_parts_ms": {"frame": 1000.0 / self.fps, "lookahead": self.lookahead_ms,
                               "jitter": self.config.jitter_ms, "render_budget": self.config.render_budget_ms},
            "sessions": len(self.sessions),
        }

    def open_session(self, expression: str = "audio", tier: str | None = None,
                     idle_timeout_s: float | None = None, seed: int | None = None) -> Session:
        """A new live call; must be called inside the running event loop. expression: "audio" | "neutral" |
        "clip:PATH"; tier: the finest tier this session may use (default: all, adaptively); seed: of the idle
        motion (blinks, gaze, where on the pose track it starts; default: different for every session)."""
        if self._closed:
            raise InputError("the streamer engine is closed", "create a new StreamerEngine")
        parse_expression(expression)  # InputError before anything is started
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise InputError("open_session() was called outside a running asyncio event loop",
                             "call it from async code (the session runs tasks on the loop)") from None
        session = Session(self._session_context, expression, tier, idle_timeout_s, seed)
        self.sessions[session.id] = session
        return session

    def preload_clip(self, path: str | Path) -> int:
        """Track a driver clip now (seconds), so sessions can switch to "clip:PATH" at once. Returns its frame
        count. Raises InputError for a missing file or a clip without a usable face."""
        _, clip = parse_expression(f"clip:{path}")  # checks the file; a clip source always names a path
        return len(self.clips.expressions(clip if clip is not None else Path(path)))

    def _forget(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

    async def aclose(self) -> None:
        self._closed = True
        for session in list(self.sessions.values()):
            await session.aclose()
        await self.render_queue.aclose()
        self.expression_executor.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.backend, "close", None)  # a backend holding connections (Triton's client)
        if callable(close):
            close()
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)
            self._torch_threads = None
