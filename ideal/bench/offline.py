"""`ideal bench --mode offline`: frames as fast as possible, per backend and tier.

Each frame goes through every per-frame stage a live stream runs, timed separately:

    features   causal log-mel of the frame's 640 new samples + the avatar's audio window
    mouth      the audio-to-mouth model on its window (the expression's mouth slice)
    eaa        encoders + EAA-Module                     (backend stage)
    field      field + GA-Module + volume rendering      (backend stage)
    upsampling refinement / upsampler to the output crop (backend stage "refine")
    compose    the crop composited onto the base plate
    encode     VP8 encoding of the composed frame (aiortc's encoder, as `ideal serve` sends it)

`--sessions N` renders N frames per backend call (N sessions sharing the renderer); fps is frames per second
over all sessions. Peak memory is the process's peak resident set during the run (Linux VmHWM, reset before
each run) and, on a GPU, torch's peak allocated CUDA memory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ideal.avatar.backend import Backend
from ideal.bench.report import distribution

log = logging.getLogger(__name__)

STAGES = ("features", "mouth", "eaa", "field", "upsampling", "compose", "encode")
BACKEND_STAGE = {"eaa": "eaa", "field": "field", "refine": "upsampling"}  # backend stage -> bench stage


@dataclass
class OfflineSettings:
    tiers: list[str] | None = None  # None: every tier
    sessions: int = 1
    duration_s: float = 4.0  # measured frames per (backend, tier) = duration * fps (per session)
    warmup_frames: int = 3
    encode: bool = True
    interleave: bool = False  # take turns frame by frame (fair comparison on a shared, loaded machine)


@dataclass
class OfflineResult:
    backend: str
    device: str
    tier: str
    batch: int
    frames: int
    seconds: float
    fps: float
    stage_ms: dict[str, float]  # mean ms per frame by stage (a batch call's time divided by the batch)
    stage_p95_ms: dict[str, float]
    peak_rss_mb: float | None
    peak_cuda_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


class Vp8Encoder:
    """One VP8 encoder per session: aiortc's own (`aiortc.codecs.vpx.Vp8Encoder`), as `ideal serve` sends video."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        from fractions import Fraction

        from aiortc.codecs.vpx import Vp8Encoder as AiortcVp8

        self._encoder = AiortcVp8()
        self._time_base = Fraction(1, 90_000)
        self._step = int(round(90_000 / fps))
        self.pts = 0

    def encode(self, image: np.ndarray) -> int:
        """(H, W, 3) uint8 RGB -> size of the encoded RTP payloads in bytes."""
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = self.pts, self._time_base
        self.pts += self._step
        payloads, _ = self._encoder.encode(frame)
        return sum(len(p) for p in payloads)


def run_offline(backends: dict[str, Backend], scene: Any, settings: OfflineSettings,
                progress: Callable[[int], None] | None = None) -> list[OfflineResult]:
    """Time every (backend, tier). `scene` (`ideal.bench.scene.BenchScene`) supplies per-frame inputs and the
    compositor, so every backend renders exactly the same frames. With `settings.interleave` the runs take turns
    frame by frame, so load changes on a shared machine hit them alike (peak memory is then the process's)."""
    runs = []
    for name, backend in backends.items():
        for tier in settings.tiers or list(backend.tiers):
            if tier not in backend.tiers:
                log.warning("%s has no tier %s", name, tier)
                continue
            runs.append(_Run(name, backend, tier, scene, settings))
    n_calls = max(1, int(round(settings.duration_s * scene.fps)))
    if settings.interleave:
        for run in runs:
            run.warm_up(n_calls)
        reset_peak_rss()
        for _ in range(n_calls):
            for run in runs:
                run.step()
                if progress:
                    progress(settings.sessions)
        return [run.result() for run in runs]
    results = []
    for run in runs:
        run.warm_up(n_calls)
        reset_peak_rss()
        run.reset_cuda_peak()
        for _ in range(n_calls):
            run.step()
            if progress:
                progress(settings.sessions)
        results.append(run.result())
    return results


class _Run:
    """One (backend, tier) measurement: `sessions` streams rendered together, stage by stage."""

    def __init__(self, name: str, backend: Backend, tier: str, scene: Any, settings: OfflineSettings) -> None:
        self.name, self.backend, self.tier, self.scene = name, backend, tier, scene
        self.b = settings.sessions
        self.encoders = [Vp8Encoder(scene.frame_width, scene.frame_height, scene.fps) for _ in range(self.b)] \
            if settings.encode else []
        self.warmup_frames = settings.warmup_frames
        self.cuda = _cuda_device(backend)
        self.per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
        self.busy = 0.0  # seconds spent in this run's frames
        self.calls = 0

    def warm_up(self, n_calls: int) -> None:
        """First calls allocate, pick kernels and fill caches; then the streams restart from frame 0."""
        streams = [self.scene.new_stream(session=i) for i in range(self.b)]
        for _ in range(min(self.warmup_frames, n_calls)):
            self.backend.render(*_stack([s.next_inputs() for s in streams]), self.tier)
        self.streams = [self.scene.new_stream(session=i) for i in range(self.b)]

    def reset_cuda_peak(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def step(self) -> None:
        b, streams = self.b, self.streams
        t0 = time.perf_counter()
        feats = [s.next_features() for s in streams]
        t1 = time.perf_counter()
        inputs = [s.mouth_and_pose(f) for s, f in zip(streams, feats)]
        t2 = time.perf_counter()
        out = self.backend.render(*_stack(inputs), self.tier)
        t3 = time.perf_counter()
        frames = [self.scene.compose(out.rgb[i], out.alpha[i], streams[i].frame_index - 1) for i in range(b)]
        t4 = time.perf_counter()
        for enc, image in zip(self.encoders, frames):
            enc.encode(image)
        t5 = time.perf_counter()
        self.busy += t5 - t0
        self.calls += 1
        ps = self.per_stage
        ps["features"].append((t1 - t0) * 1e3 / b)
        ps["mouth"].append((t2 - t1) * 1e3 / b)
        for key, stage in BACKEND_STAGE.items():
            if key in out.timings_ms:
                ps[stage].append(out.timings_ms[key] / b)
        ps["compose"].append((t4 - t3) * 1e3 / b)
        if self.encoders:
            ps["encode"].append((t5 - t4) * 1e3 / b)

    def result(self) -> OfflineResult:
        peak_cuda = None
        if self.cuda:
            import torch

            peak_cuda = torch.cuda.max_memory_allocated() / 2**20
        ps = self.per_stage
        frames_done = self.calls * self.b
        render = sum(float(np.mean(ps[s])) for s in ("eaa", "field", "upsampling") if ps[s])
        return OfflineResult(
            backend=self.name, device=str(getattr(self.backend, "device", "cpu")), tier=self.tier, batch=self.b,
            frames=frames_done, seconds=round(self.busy, 3), fps=round(frames_done / max(self.busy, 1e-9), 2),
            stage_ms={s: round(float(np.mean(v)), 3) for s, v in ps.items() if v},
            stage_p95_ms={s: distribution(v)["p95"] for s, v in ps.items() if v},
            peak_rss_mb=peak_rss_mb(), peak_cuda_mb=peak_cuda,
            extra={"render_fps": round(1e3 / max(render, 1e-6), 2),
                   "refiner": (getattr(self.backend, "precision", None) or {}).get(self.tier, "fp32")})


def _stack(inputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    audio, expression, pose = zip(*inputs)
    return np.stack(audio), np.stack(expression), np.stack(pose)


def _cuda_device(backend: Backend) -> bool:
    return str(getattr(backend, "device", "cpu")).startswith(("cuda", "tensorrt"))


# --- the `ideal bench --mode offline` entry ------------------------------------------------------------------
class DelayedBackend:
    """A backend whose every call takes `delay_s` longer (a sleep after rendering): checks that latency and
    throughput figures really see the backend's time (`--inject-delay-ms`, and the tests). Under the
    streamer's `VirtualClock` the delay is charged to the virtual clock instead of slept."""

    def __init__(self, inner: Backend, delay_s: float, clock: Any | None = None) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.clock = clock
        self.name = f"{inner.name}+{delay_s * 1e3:.0f}ms"
        self.device = getattr(inner, "device", "cpu")

    @property
    def tiers(self):
        return self.inner.tiers

    def render(self, audio, expression, pose, tier):
        out = self.inner.render(audio, expression, pose, tier)
        charge = getattr(self.clock, "charge", None)
        if charge is None or not charge(self.delay_s):
            time.sleep(self.delay_s)
        out.timings_ms["injected_delay"] = self.delay_s * 1e3
        return out

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)


def open_backends(avatar: str | None, name: str, device: str, tiers: list[str] | None, fp16: bool,
                  threads: int | None, inject_delay_ms: float = 0.0,
                  int8: bool = True, render_url: str | None = None) -> tuple[dict[str, Backend], dict[str, str]]:
    """{label: backend} to measure, and {backend: why not} for those that cannot run here (`render_url`: the
    Triton backend, alone, or beside every local one with `all`)."""
    from ideal.export.backends import available_backends, choose_backend

    if name == "all":
        found, why = available_backends(avatar, device, tiers, fp16, threads, int8=int8)
        if render_url:
            found["triton"] = choose_backend(avatar, "triton", device, tiers, render_url=render_url).backend
    elif render_url:
        found, why = {"triton": choose_backend(avatar, name, device, tiers, render_url=render_url).backend}, {}
    else:
        choice = choose_backend(avatar, name, device, tiers, fp16, threads, int8=int8)
        found, why = {choice.name: choice.backend}, dict(choice.passed_over)
        if name == "auto":
            log.info("auto: %s", choice.describe())
            why["auto"] = f"picked {choice.name}"
    if inject_delay_ms:
        found = {k: DelayedBackend(b, inject_delay_ms / 1e3) for k, b in found.items()}
    return found, why


COLUMNS = [("backend", "backend"), ("device", "device"), ("refiner", "refiner"), ("tier", "tier"), ("batch", "batch"),
           ("fps", "fps"),
           *[(f"ms_{s}", s) for s in STAGES], ("peak_rss_mb", "peak MB")]


def run_offline_mode(args: Any) -> dict[str, Any]:
    from ideal.avatar.progress import progress_bar

    from ideal.avatar.errors import BackendError
    from ideal.bench.report import table
    from ideal.bench.scene import load_scene
    from ideal.bench.signals import bench_audio

    audio = bench_audio(args.audio, silence_s=0.5)
    backends, unavailable = open_backends(args.avatar, args.backend, args.device, args.tier, args.fp16, args.threads,
                                          args.inject_delay_ms, int8=getattr(args, "int8", True),
                                          render_url=getattr(args, "render_url", None))
    if not backends:
        raise BackendError("no backend can run here: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
    scene = load_scene(args.avatar, audio.audio)
    settings = OfflineSettings(tiers=args.tier, sessions=args.sessions,
                               duration_s=args.duration if args.duration else 4.0,
                               interleave=getattr(args, "interleave", False))
    n_tiers = sum(len(settings.tiers or b.tiers) for b in backends.values())
    total = n_tiers * max(1, int(round(settings.duration_s * scene.fps))) * settings.sessions
    with progress_bar(total=total, desc="bench offline", unit="frame") as bar:
        results = run_offline(backends, scene, settings, progress=bar.update)
    rows = []
    for r in results:
        rows.append({"backend": r.backend, "device": r.device, "refiner": r.extra.get("refiner"), "tier": r.tier,
                     "batch": r.batch, "fps": r.fps,
                     **{f"ms_{s}": r.stage_ms.get(s) for s in STAGES}, "peak_rss_mb": r.peak_rss_mb})
    text = table(rows, COLUMNS)
    if unavailable:
        text += "\n" + "\n".join(f"{k}: {v}" if k == "auto" else f"not measured: {k}: {v}"
                                  for k, v in unavailable.items())
    return {"mode": "offline", "stages": list(STAGES), "results": [r.to_dict() for r in results],
            "unavailable": unavailable, "audio": {"source": audio.source, "seconds": round(audio.duration_s, 2)},
            "interleaved": settings.interleave,
            "peak_rss_scope": "process, all runs" if settings.interleave else "per run (VmHWM reset before each)",
            "frame_size": list(scene.frame_shape), "_table": text}
