"""One live call: audio in as it arrives, frames out on a steady frame clock.

    push_audio ──► EdgeConverter ──► AudioFrontend (timeline, VAD, feature rings)
                                           │ producer: frame i once its audio + lookahead is in (or at its
                                           │ cutoff, with silence standing in for what is missing)
                                           ▼
                     StreamingDriver (expression, pose) ──► RenderQueue (shared, batched, deadline-ordered)
                                                                 │ base tier, then a finer one if time allows
                                           emitter: at deadline(i) the best frame ready, else the last one again
                                           ▼
                                     frames(): StreamFrame(index, pts = index / fps, image, audio, ...)

Timeline. The session's 16 kHz timeline starts when the session opens (t0); position p is nominally due at
t0 + p / 16000. Audio is appended as it arrives. When audio is missing at a frame's cutoff, silence is
appended instead (the video never waits); when audio resumes after such a gap, silence is first padded up to
the moment the new chunk was captured, so the new speech keeps the normal latency and nothing is lost inside
it. Audio arriving in a burst more than `max_ahead_ms` ahead of real time is dropped (oldest first), which
bounds latency and memory. `StreamFrame.audio` is exactly the timeline's samples of the frame, so a server that
sends it with the frame's pts keeps sound and picture in sync whatever happened on the network.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import AsyncIterator, Callable

import numpy as np

from ideal.avatar.audio.features import AudioWindow, MelConfig
from ideal.avatar.audio.io import level_db
from ideal.avatar.clock import FrameClock, SAMPLE_RATE
from ideal.avatar.drive import DriveFrame
from ideal.avatar.errors import InputError
from ideal.avatar.expression import EXPRESSION_DIM, SLICES
from ideal.streamer.audio_frontend import (AudioFrontend, EdgeConverter, FeatureStreamSpec, resampler_holdback_ms,
                                          validate_pcm)
from ideal.streamer.clock import Clock
from ideal.streamer.config import StreamerConfig
from ideal.streamer.expression_source import FrameInputs, StreamingDriver
from ideal.avatar.backend import RenderUnavailable
from ideal.streamer.render_queue import BASE, REFINE, Expired, RenderedFrame, RenderQueue, RenderRequest
from ideal.streamer.scheduler import CostModel, FrameTiming, TierPolicy
from ideal.streamer.stats import FrameRecord, SessionStats, StatsRecorder

log = logging.getLogger(__name__)

MOUTH_OPEN = SLICES["mouth"].start + SLICES["mouth"].fields.index("mouth_open")
# how far ahead of its cutoff a frame may be prepared when audio is plentiful (bounds queued work)
MAX_LEAD_S = 0.5


@dataclass(frozen=True)
class SessionContext:
    """What a session takes from the engine that opens it, all shared by that engine's sessions (built once by
    `StreamerEngine`): the session sees these and never the engine itself."""

    config: StreamerConfig
    clock: Clock
    fps: float
    tiers: tuple[str, ...]  # coarsest to finest
    lookahead_ms: float  # the longest lookahead of the models it runs: the producer waits for it
    # each frame's audio windows, read from the session's feature rings
    feature_streams: dict[str, FeatureStreamSpec]
    mel_config: MelConfig
    render_window: AudioWindow
    mouth_window: AudioWindow
    mouth_stream: str  # the ring the mouth model reads ("mel" when it shares the renderer's features)
    mouth_mel: MelConfig
    prosody_window: AudioWindow | None
    # shared workers
    render_queue: RenderQueue
    costs: CostModel
    expression_executor: Executor
    make_driver: Callable[[int], StreamingDriver]  # seed -> this session's expression and pose
    composer: Callable[[int], Callable[[np.ndarray, np.ndarray], np.ndarray]]  # pose-track frame -> compositor
    first_pose: np.ndarray  # (3, 4) the pose of the frame shown before any is rendered
    idle_image: np.ndarray  # (H, W, 3) uint8 the picture shown before any is rendered
    release: Callable[[str], None]  # a closed session's id: the engine forgets it


@dataclass
class StreamFrame:
    index: int  # frame number on the session's frame clock (0, 1, 2, ...)
    pts: float  # presentation time in seconds = index / fps
    image: np.ndarray  # (H, W, 3) uint8 RGB, composited, with the "synthetic" mark unless disabled
    audio: np.ndarray  # (640,) float32 16 kHz mono: exactly this frame's samples (silence where none arrived)
    tier: str
    late: bool  # the last frame repeated: nothing was ready at the deadline
    speech: bool  # VAD (with hysteresis) says this frame's audio is speech
    latency_ms: float | None  # arrival of the frame's first audio sample -> emission (None: no audio)
    timings_ms: dict[str, float] = field(default_factory=dict)
    expression: np.ndarray | None = None  # (20,) the expression vector the frame was rendered with
    mouth_open: float | None = None  # its mouth-opening scalar (expression units), for lip-sync checks
    # the sample (16 kHz session timeline) at the frame's centre: the sound its mouth makes (voice-to-lips trace)
    mouth_sample: int | None = None
    # streamer clock times on this frame's way (server/latency.py): audio_complete (its last needed sample arrived),
    # job (features and expression done), render_start / render_end (of the picture it shows), emitted
    trace: dict[str, float] = field(default_factory=dict)


@dataclass(eq=False)
class _FrameJob:
    index: int
    cutoff: float
    deadline: float
    audio: np.ndarray
    speech: bool
    arrival: float | None  # arrival time of the frame's first sample (None if it was filled silence)
    timings_ms: dict[str, float]
    drive: DriveFrame
    render_audio: np.ndarray
    trace: dict[str, float] = field(default_factory=dict)
    results: list[RenderedFrame] = field(default_factory=list)
    requests: list[RenderRequest] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


class Session:
    """A live call on a shared `StreamerEngine`. Create with `engine.open_session()` inside the event loop;
    call `push_audio` from the event loop's thread."""

    def __init__(self, ctx: SessionContext, expression: str = "audio", tier: str | None = None,
                 idle_timeout_s: float | None = None, seed: int | None = None) -> None:
        cfg = ctx.config
        self.id: str = uuid.uuid4().hex[:12]
        self.failure: str | None = None
        self._ctx = ctx
        self._cfg = cfg
        self._clock = ctx.clock
        self._fclock = FrameClock(ctx.fps)
        self._idle_timeout = cfg.idle_timeout_s if idle_timeout_s is None else idle_timeout_s
        if tier is not None and tier not in ctx.tiers:
            raise InputError(f"unknown tier {tier!r}", f"one of {', '.join(ctx.tiers)}")
        self._policy = TierPolicy(list(ctx.tiers), cfg.render_budget_ms / 1000.0, 1.0 / ctx.fps, cap=tier,
                                  step_up_after=cfg.step_up_after, step_down_cost=cfg.step_down_cost,
                                  adaptive=cfg.adaptive_tiers)
        self._timing = FrameTiming(ctx.fps, ctx.lookahead_ms / 1000.0, cfg.jitter_ms / 1000.0,
                                   cfg.render_budget_ms / 1000.0)
        self._lookahead_samples = int(round(ctx.lookahead_ms * SAMPLE_RATE / 1000.0))
        self._frontend = AudioFrontend(ctx.feature_streams, cfg.ring_seconds, cfg.vad_aggressiveness,
                                       cfg.vad_frame_ms, cfg.speech_on_ms, cfg.speech_on_window_ms,
                                       cfg.speech_hangover_ms)
        self._edge = EdgeConverter(cfg.resample_quality)
        # every session blinks and moves on its own schedule unless a seed is given
        self._driver: StreamingDriver = ctx.make_driver(int(self.id[:8], 16) if seed is None else seed)
        if expression != "audio":
            self._driver.set_source(expression, fade=False, wait=False)
        self._t0 = self._clock.now()
        self._last_push = self._t0
        self._jitter_key: tuple[int, int] | None = None
        self._chunk_sizes: deque[int] = deque(maxlen=9)
        self._underrun = True  # nothing buffered: the first chunk is anchored to when it was captured
        self._audio_event = asyncio.Event()
        self._jobs: dict[int, _FrameJob] = {}
        self._job_event = asyncio.Event()
        self._out: deque[StreamFrame] = deque()
        self._out_event = asyncio.Event()
        self._closed = False
        self._close_reason: str | None = None
        self._stats = StatsRecorder(cfg.stats_window)
        self._last_image: np.ndarray = ctx.idle_image
        self._last_tier = self._policy.base
        self._emitted_upto = -1
        self._last_index = -1  # frame index of the picture in _last_image
        self._last_drive = DriveFrame(np.zeros(EXPRESSION_DIM, np.float32), ctx.first_pose.copy())
        self._features_busy_mark = 0.0
        self._audio_received = 0
        self._audio_dropped = 0
        loop = asyncio.get_running_loop()
        self._producer = loop.create_task(self._produce(), name=f"session-{self.id}-producer")
        self._emitter = loop.create_task(self._emit(), name=f"session-{self.id}-emitter")

    # --- input ------------------------------------------------------------------------------------------
    def push_audio(self, pcm: np.ndarray, sample_rate: int, channels: int = 1) -> None:
        """Non-blocking. int16 or float32 PCM, interleaved if channels > 1, any rate 8-192 kHz.
        Raises avatar.errors.InputError on a bad rate, channel count, dtype or shape."""
        pcm = validate_pcm(pcm, sample_rate, channels)
        if self._closed:
            log.debug("session %s: audio pushed after close ignored", self.id)
            return
        now = self._clock.now()
        self._last_push = now
        n_in = pcm.shape[0] if pcm.ndim == 2 else pcm.size // int(channels)
        self._fit_jitter(int(sample_rate), n_in)
        x = self._edge.convert(pcm, int(sample_rate), int(channels))
        if not len(x):
            return
        self._audio_received += len(x)
        w = self._frontend.samples_written
        if self._underrun:
            # place the chunk where it was captured: its last sample left the resampler just now
            captured = now - self._edge.holdback_ms / 1000.0 - len(x) / SAMPLE_RATE
            pad = int(round((captured - (self._t0 + w / SAMPLE_RATE)) * SAMPLE_RATE))
            if pad > 0:
                self._frontend.push(np.zeros(pad, np.float32), now, filled=True)
                w += pad
            self._underrun = False
        if self._cfg.max_ahead_ms is not None:
            ahead = w + len(x) - (now - self._t0) * SAMPLE_RATE  # samples queued beyond real time
            excess = int(ahead - self._cfg.max_ahead_ms * SAMPLE_RATE / 1000.0)
            if excess <= 0 and ahead > self._timing.jitter_s * SAMPLE_RATE and self._quiet(x):
                # a burst left the timeline ahead of real time: win the latency back in a pause
                excess = int(ahead - self._timing.jitter_s * SAMPLE_RATE)
            if excess > 0:
                drop = min(excess, len(x))
                self._audio_dropped += drop
                x = x[drop:]
                log.debug("session %s: dropped %d samples, %.0f ms ahead of real time", self.id, drop,
                          1000.0 * ahead / SAMPLE_RATE)
                if not len(x):
                    return
        self._frontend.push(x, now)
        self._audio_event.set()

    def _quiet(self, x: np.ndarray) -> bool:
        """Whether a chunk is background: no louder than the VAD's running noise floor + 6 dB."""
        floor = self._frontend.vad.floor_db
        return floor is not None and bool(level_db(x) < floor + 6.0)

    def _fit_jitter(self, rate: int, n_in: int) -> None:
        """Grow the jitter allowance to what this sender needs: the oldest sample of a chunk arrives one chunk
        late, plus whatever the resampler holds back at this rate. Only ever grows (a later frame deadline
        moves once; pts never change), capped by `max_jitter_ms`."""
        self._chunk_sizes.append(n_in)
        if len(self._chunk_sizes) < 3:
            return  # judge the sender by its typical chunk, so a single burst does not move the deadlines
        typical = int(np.median(self._chunk_sizes))
        key = (rate, typical)
        if key == self._jitter_key:
            return
        self._jitter_key = key
        need = typical / rate + resampler_holdback_ms(rate, typical, self._cfg.resample_quality) / 1000.0 + 0.002
        need = min(need, self._cfg.max_jitter_ms / 1000.0)
        if need > self._timing.jitter_s:
            log.info("session %s: jitter allowance %.0f -> %.0f ms for %d-sample chunks at %d Hz", self.id,
                     1000.0 * self._timing.jitter_s, 1000.0 * need, n_in, rate)
            self._timing = replace(self._timing, jitter_s=need)

    def set_expression(self, source: str) -> None:
        """"audio" | "neutral" | "clip:PATH"; cross-fades to the new source. Raises InputError on a bad one.
        A clip the engine has not tracked yet is tracked on a worker thread; the current source stays until it
        is ready (`expression` tells which one is in use; `engine.preload_clip` avoids the wait)."""
        self._driver.set_source(source, wait=False)

    @property
    def expression(self) -> dict:
        """{"source": in use, "pending": being prepared or None, "error": why the last choice failed or None}"""
        d = self._driver
        return {"source": d.source, "pending": d.pending, "error": d.error}

    # --- output -----------------------------------------------------------------------------------------
    async def frames(self) -> AsyncIterator[StreamFrame]:
        """Frames paced on the frame clock; ends when the session closes (see `failure` for why, if it failed).
        One consumer per session."""
        while True:
            while self._out:
                yield self._out.popleft()
            if self._closed:
                return
            self._out_event.clear()
            await self._out_event.wait()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    @property
    def t0(self) -> float:
        """Clock time of frame 0's timeline start (frame i is emitted at t0 + i / fps + delay)."""
        return self._t0

    @property
    def stats(self) -> SessionStats:
        s = self._stats
        state = "failed" if self.failure else "closed" if self._closed else (
            "idle" if self._clock.now() - self._last_push > 1.0 else "running")
        real_time_pos = (self._clock.now() - self._t0) * SAMPLE_RATE
        c = self._frontend.counters
        return SessionStats(
            session_id=self.id, state=state, failure=self.failure, frames=s.frames, late_frames=s.late,
            dropped_frames=s.dropped, speech_frames=s.speech, tiers=dict(s.tiers), tier=self._policy.base,
            fps=self._ctx.fps, lookahead_ms=self._ctx.lookahead_ms, delay_ms=1000.0 * self._timing.delay_s,
            latency_ms=s.latency(), stage_ms=s.stages(),
            queues={"render_queue": float(self._ctx.render_queue.pending()), "frame_queue": float(len(self._out)),
                    "frames_in_flight": float(len(self._jobs)),
                    "audio_ahead_ms": 1000.0 * (self._frontend.samples_written - real_time_pos) / SAMPLE_RATE},
            audio={"received_ms": 1000.0 * self._audio_received / SAMPLE_RATE,
                   "filled_ms": 1000.0 * c.filled_samples / SAMPLE_RATE,
                   "dropped_ms": 1000.0 * self._audio_dropped / SAMPLE_RATE,
                   "resampler_ms": self._edge.holdback_ms},
            frontend_bytes=self._frontend.nbytes,
        )

    @property
    def frontend(self) -> AudioFrontend:
        return self._frontend

    @property
    def resampler_holdback_ms(self) -> float:
        """How far the edge resampler's output lags its input: a pushed sample reaches the timeline this late."""
        return self._edge.holdback_ms

    @property
    def timing(self) -> FrameTiming:
        return self._timing

    # --- closing ------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        self._close("closed by caller")
        for task in (self._producer, self._emitter):
            if task is not asyncio.current_task() and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass

    def _close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        for job in self._jobs.values():
            self._cancel_requests(job)
        self._jobs.clear()
        self._out_event.set()
        self._job_event.set()
        self._ctx.release(self.id)
        for task in (self._producer, self._emitter):
            if task is not asyncio.current_task() and not task.done():
                task.cancel()
        log.info("session %s closed: %s", self.id, reason)

    def _fail(self, reason: str) -> None:
        if self._closed:
            return
        self.failure = reason
        log.error("session %s failed: %s", self.id, reason)
        self._close(f"failed: {reason}")

    # --- producer: audio -> render requests ---------------------------------------------------------------
    async def _produce(self) -> None:
        try:
            i = 0
            while not self._closed:
                cutoff = self._timing.cutoff(self._t0, i)
                await self._clock.sleep_until(cutoff - MAX_LEAD_S)
                need = self._fclock.frame_start_sample(i + 1) + self._lookahead_samples
                while self._frontend.samples_written < need and not self._closed:
                    cutoff = self._timing.cutoff(self._t0, i)  # the jitter allowance may grow while waiting
                    if self._clock.now() >= cutoff:
                        break
                    self._audio_event.clear()
                    await self._clock.wait_event(self._audio_event, cutoff)
                if self._closed:
                    return
                if self._idle_timeout is not None and self._clock.now() - self._last_push > self._idle_timeout:
                    self._close(f"idle: no audio for {self._idle_timeout:g} s")
                    return
                missing = need - self._frontend.samples_written
                if missing > 0:
                    self._frontend.push(np.zeros(missing, np.float32), self._clock.now(), filled=True)
                    self._underrun = True
                if i <= self._emitted_upto or self._clock.now() >= self._timing.deadline(self._t0, i):
                    i += 1  # overloaded: the emitter already repeated this frame (or will); do not render it
                    continue
                job = await self._make_job(i, cutoff)
                if i <= self._emitted_upto or self._closed:
                    i += 1  # its deadline passed while the expression was being computed
                    continue
                self._jobs[i] = job
                self._job_event.set()
                self._submit(job, BASE, self._policy.base)
                i += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("session %s: producer failed", self.id)
            self._fail(f"{exc.__class__.__name__}: {exc}")

    async def _make_job(self, i: int, cutoff: float) -> _FrameJob:
        ctx, fe = self._ctx, self._frontend
        start = self._fclock.frame_start_sample(i)
        stop = self._fclock.frame_start_sample(i + 1)
        need = stop + self._lookahead_samples
        busy = fe.counters.busy_s
        timings = {"features": 1000.0 * (busy - self._features_busy_mark)}
        self._features_busy_mark = busy
        t0 = time.perf_counter()
        vad_stop = min(need, fe.vad.blocks * fe.vad.block)
        speech = bool(fe.vad.speech(start, max(vad_stop, start + 1)) or False)
        mouth_end = ctx.mouth_window.end_frame(i, ctx.fps, ctx.mouth_mel)
        prosody_window = None
        if ctx.prosody_window is not None:
            pend = ctx.prosody_window.end_frame(i, ctx.fps, ctx.mel_config)
            prosody_window = fe.features("mel", pend - ctx.prosody_window.length, pend)
        gate_stop = stop + int(round(ctx.mouth_window.lookahead_ms * SAMPLE_RATE / 1000.0))
        inputs = FrameInputs(index=i, gate_samples=fe.audio(start, gate_stop),
                             mouth_window=fe.features(ctx.mouth_stream, mouth_end - ctx.mouth_window.length, mouth_end),
                             prosody_window=prosody_window, speech=speech)
        # the audio-to-mouth and prosody networks run off the event loop (the engine's expression thread), so
        # a loaded CPU slows expressions down but never the pacing of frames
        drive = await self._clock.run_compute(self._driver.frame, inputs, executor=ctx.expression_executor)
        timings["expression"] = 1000.0 * (time.perf_counter() - t0)
        self._last_drive = drive
        rend_end = ctx.render_window.end_frame(i, ctx.fps, ctx.mel_config)
        arrival = fe.arrival(start)
        complete = fe.arrival(need - 1)
        trace = {"job": self._clock.now()}
        if complete is not None and not complete[1]:
            trace["audio_complete"] = complete[0]
        return _FrameJob(index=i, cutoff=cutoff, deadline=self._timing.deadline(self._t0, i),
                         audio=fe.audio(start, stop), speech=speech,
                         arrival=None if arrival is None or arrival[1] else arrival[0], timings_ms=timings,
                         drive=drive, render_audio=fe.features("mel", rend_end - ctx.render_window.length, rend_end),
                         trace=trace)

    def _missed_job(self, i: int, deadline: float) -> _FrameJob:
        """A frame the producer did not prepare in time: its audio as far as it has arrived, nothing rendered."""
        start, stop = self._fclock.frame_start_sample(i), self._fclock.frame_start_sample(i + 1)
        fe = self._frontend
        audio = fe.audio(start, stop) if fe.samples_written >= stop and start >= fe.oldest_sample else \
            np.zeros(stop - start, np.float32)
        last = self._last_drive
        return _FrameJob(index=i, cutoff=deadline, deadline=deadline, audio=audio, speech=False, arrival=None,
                         timings_ms={}, drive=last, render_audio=np.zeros(0, np.float32))

    def _submit(self, job: _FrameJob, kind: int, tier: str) -> None:
        loop = asyncio.get_running_loop()
        req = RenderRequest(kind=kind, tier=tier, deadline=job.deadline, audio=job.render_audio,
                            expression=job.drive.expression, pose=job.drive.pose,
                            compose=self._ctx.composer(track if (track := job.drive.track_index) is not None
                                                       else job.index),
                            future=loop.create_future(), owner=self.id)
        job.requests.append(req)
        self._ctx.render_queue.submit(req)
        req.future.add_done_callback(functools.partial(self._on_rendered, job, req))

    def _on_rendered(self, job: _FrameJob, req: RenderRequest, fut: asyncio.Future) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()  # always retrieved, so asyncio never logs an expired request as an error
        if self._closed or isinstance(exc, (Expired, RenderUnavailable)):
            return  # not rendered in time, or the (remote) renderer cannot answer now: the frame repeats
        if job.done:
            # finished after its deadline (the frame went out late): still the newest picture there is, so the
            # late frames that follow repeat it -- an overloaded CPU gives a slow avatar, not a frozen one
            if exc is None and job.index > self._last_index:
                late: RenderedFrame = fut.result()
                self._last_image, self._last_tier, self._last_index = late.image, late.tier, job.index
            return
        if exc is not None:
            self._fail(f"rendering frame {job.index} ({req.tier}) raised {exc.__class__.__name__}: {exc}")
            return
        res: RenderedFrame = fut.result()
        job.results.append(res)
        if req.kind == BASE and self._cfg.progressive:
            finer = self._policy.plan_refinement(job.deadline - self._clock.now(), self._ctx.costs,
                                                 queue_busy=self._ctx.render_queue.pending(BASE) > 0)
            if finer is not None:
                self._submit(job, REFINE, finer)

    def _cancel_requests(self, job: _FrameJob) -> None:
        job.done = True
        for req in job.requests:
            req.cancelled = True

    # --- emitter: deadlines -> frames ---------------------------------------------------------------------
    async def _emit(self) -> None:
        try:
            i = 0
            order = {name: k for k, name in enumerate(self._ctx.tiers)}
            while not self._closed:
                deadline = self._timing.deadline(self._t0, i)
                await self._clock.sleep_until(deadline)
                if self._closed:
                    return
                deadline = self._timing.deadline(self._t0, i)
                if deadline > self._clock.now():  # the jitter allowance grew while this frame was waiting
                    await self._clock.sleep_until(deadline)
                    if self._closed:
                        return
                job = self._jobs.pop(i, None)
                if job is None:
                    # the producer is behind (overloaded CPU): repeat the last frame now rather than wait
                    job = self._missed_job(i, deadline)
                self._emitted_upto = i
                now = self._clock.now()
                ready = [r for r in job.results if r.ready_at <= deadline + 1e-9]
                self._cancel_requests(job)
                trace = dict(job.trace)
                if ready:
                    best = max(ready, key=lambda r: order[r.tier])
                    image, tier, late = best.image, best.tier, False
                    timings = {**job.timings_ms, **best.timings_ms}
                    trace.update(render_start=best.started_at, render_end=best.ready_at)
                    self._last_image, self._last_tier, self._last_index = image, tier, i
                else:
                    image, tier, late = self._last_image, self._last_tier, True
                    timings = dict(job.timings_ms)
                latency = None if job.arrival is None else 1000.0 * (now - job.arrival)
                frame = StreamFrame(index=i, pts=i / self._ctx.fps, image=image, audio=job.audio, tier=tier,
                                    late=late, speech=job.speech, latency_ms=latency, timings_ms=timings,
                                    expression=job.drive.expression,
                                    mouth_open=float(job.drive.expression[MOUTH_OPEN]),
                                    mouth_sample=(self._fclock.frame_start_sample(i)
                                                  + self._fclock.frame_start_sample(i + 1)) // 2,
                                    trace={**trace, "emitted": now})
                self._stats.record(FrameRecord(i, tier, late, job.speech, latency, timings, now))
                self._policy.after_frame(late, self._ctx.costs)
                if len(self._out) >= self._cfg.frame_queue:
                    self._out.popleft()
                    self._stats.dropped += 1
                self._out.append(frame)
                self._out_event.set()
                i += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("session %s: emitter failed", self.id)
            self._fail(f"{exc.__class__.__name__}: {exc}")
