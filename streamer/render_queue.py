"""The engine's render queue: one model thread and one compositing thread shared by every session of an avatar.

Requests are served earliest-deadline-first, base renders before refinements; requests of several sessions for
the same tier are merged into one batched backend call (the backend's batch dimension is dynamic). A request
that can no longer be ready by its deadline (by its tier's typical cost) is skipped when a later base request
waits (its frame is emitted as late), so an overloaded renderer degrades gracefully (`_take_batch`). If a batched
call raises, each request is re-run alone so only the session whose input broke it is failed.

Compositing (crop onto the base plate, badge) is pipelined on its own thread: while frame i is composited the
model already renders frame i + 1, so on two cores the model thread's load is the model alone (on the 2-core
CPU the fast tier's render thread went from ~89% busy, where queueing made one frame in six late, to ~70%).
A request's cost, as the scheduler sees it, is render + compositing (what its deadline waits for).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ideal.avatar.backend import Backend, RenderUnavailable
from ideal.streamer.clock import Clock
from ideal.streamer.scheduler import CostModel

log = logging.getLogger(__name__)

BASE, REFINE = 0, 1


class Expired(Exception):
    """The request's deadline passed before it could start."""


@dataclass
class RenderedFrame:
    image: np.ndarray  # (H, W, 3) uint8, composited and marked
    tier: str
    ready_at: float  # clock time the result was available
    timings_ms: dict[str, float]
    started_at: float = 0.0  # clock time its batch went to the model


@dataclass(eq=False)
class RenderRequest:
    kind: int  # BASE | REFINE
    tier: str
    deadline: float
    audio: np.ndarray  # (W, n_mels)
    expression: np.ndarray  # (20,)
    pose: np.ndarray  # (3, 4)
    compose: Callable[[np.ndarray, np.ndarray], np.ndarray]  # crop rgb (S,S,3), alpha (S,S,1) -> frame
    future: asyncio.Future
    submitted: float = 0.0
    cancelled: bool = False
    seq: int = field(default=0)
    owner: str = ""  # the session it renders for (fair skipping under overload)


class RenderQueue:
    def __init__(self, backend: Backend, clock: Clock, costs: CostModel, max_batch: int = 8,
                 compose_nice: int = 0) -> None:
        self.backend = backend
        self.clock = clock
        self.costs = costs
        self.max_batch = max_batch
        self._heap: list[tuple[int, float, int, RenderRequest]] = []
        self._seq = itertools.count()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ideal-render")
        self._compose_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ideal-compose",
                                                    initializer=lower_thread_priority, initargs=(compose_nice,))
        self._composing: set[asyncio.Task] = set()
        self._skipped: dict[str, int] = {}  # per session, base renders skipped as hopeless and not yet made up
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self.busy = False
        self.calls = 0
        self.batched_frames = 0

    # --- submitting -------------------------------------------------------------------------------------
    def submit(self, req: RenderRequest) -> asyncio.Future:
        req.seq = next(self._seq)
        req.submitted = self.clock.now()
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._wake is None:  # an engine made before (or reused across) event loops
            self._loop, self._wake, self._task = loop, asyncio.Event(), None
        heapq.heappush(self._heap, (req.kind, req.deadline, req.seq, req))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="ideal-render-queue")
        return req.future

    def pending(self, kind: int | None = None) -> int:
        return sum(1 for k, _, _, r in self._heap if not r.cancelled and (kind is None or k == kind))

    # --- the worker -------------------------------------------------------------------------------------
    def _take_batch(self) -> list[RenderRequest]:
        now = self.clock.now()
        while self._heap:
            _, _, _, first = heapq.heappop(self._heap)
            if first.cancelled or first.future.done():
                continue
            est = self.costs.estimate(first.tier) or 0.0
            # A request that cannot be ready by its deadline (by the tier's typical cost) is skipped -- a base
            # render too, when a later base request is waiting: under overload, rendering it anyway would finish it
            # late and start the next one late as well, until every frame misses (earliest-deadline-first's domino
            # effect); skipping it keeps the later ones on time, so an overloaded renderer degrades to fewer fresh
            # frames, not to none. The newest base request is rendered even when hopeless: its picture is still
            # the newest (a slow avatar, not a frozen one), and its cost is how the estimate learns of a recovery.
            if first.kind == BASE:
                first = self._fairest(first, est)
            if now + est > first.deadline and (first.kind != BASE or self.pending(BASE) > 0):
                if first.kind == BASE:
                    self._skipped[first.owner] = self._skipped.get(first.owner, 0) + 1
                first.future.set_exception(Expired())
                continue
            if first.kind == BASE and self._skipped.get(first.owner):
                self._skipped[first.owner] -= 1  # made up for; at 0 the entry goes (sessions come and go)
                if not self._skipped[first.owner]:
                    del self._skipped[first.owner]
            batch = [first]
            rest = []
            while self._heap and len(batch) < self.max_batch:
                item = heapq.heappop(self._heap)
                r = item[3]
                if r.cancelled or r.future.done():
                    continue
                if r.tier == first.tier and r.kind == first.kind and now <= r.deadline:
                    batch.append(r)
                else:
                    rest.append(item)
            for item in rest:
                heapq.heappush(self._heap, item)
            return batch
        return []

    def _fairest(self, first: RenderRequest, est: float) -> RenderRequest:
        """Among base requests whose deadlines tie with `first`'s (within one render), the one of the session that
        had the most renders skipped: sessions opened together have equal deadlines, and without this the one
        opened first would win every tie and the other would absorb every skip of an overload."""
        owed = self._skipped.get(first.owner, 0)
        best = None
        for item in self._heap:
            r = item[3]
            if (item[0] == BASE and not r.cancelled and not r.future.done() and r.owner != first.owner
                    and r.tier == first.tier and r.deadline <= first.deadline + est
                    and self._skipped.get(r.owner, 0) > owed):
                if best is None or self._skipped.get(r.owner, 0) > self._skipped.get(best[3].owner, 0):
                    best = item
        if best is None:
            return first
        self._heap.remove(best)
        heapq.heapify(self._heap)
        heapq.heappush(self._heap, (first.kind, first.deadline, first.seq, first))
        return best[3]

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            batch = self._take_batch()
            if not batch:
                if not self._heap:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=5.0)
                    except asyncio.TimeoutError:
                        return  # restarted by the next submit
                continue
            await self._serve(batch)

    async def _serve(self, batch: list[RenderRequest]) -> None:
        start = self.clock.now()
        self.busy = True
        try:
            out, model_ms = await self.clock.run_compute(self._render, batch, executor=self._executor)
        except RenderUnavailable as exc:
            # a remote renderer that cannot answer now fails the whole call alike: re-running the requests one
            # by one would only wait for it once per request; their frames repeat until it is back
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            log.warning("batched render of %d frames failed (%s); re-running them one by one", len(batch), exc)
            for req in batch:
                await self._serve([req])
            return
        finally:
            self.busy = False
        self.calls += 1
        self.batched_frames += len(batch)
        # compositing overlaps the next render; the task is kept so it is neither collected nor left behind
        task = asyncio.ensure_future(self._finish(batch, out, model_ms, start))
        self._composing.add(task)
        task.add_done_callback(self._composing.discard)

    async def _finish(self, batch: list[RenderRequest], out: Any, model_ms: float, start: float) -> None:
        try:
            results = await self.clock.run_compute(self._compose, batch, out, model_ms,
                                                   executor=self._compose_executor)
        except Exception as exc:
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        end = self.clock.now()
        # cost on the session clock (what deadlines are measured in), per call: a batch costs about one call
        self.costs.observe(batch[0].tier, max(end - start, 1e-6))
        for req, res in zip(batch, results):
            res.ready_at = end
            res.started_at = start
            res.timings_ms["queue"] = 1000.0 * (start - req.submitted)
            res.timings_ms["batch"] = float(len(batch))
            if not req.future.done():
                req.future.set_result(res)

    def _render(self, batch: list[RenderRequest]) -> tuple[Any, float]:
        """Runs on the model thread: one backend call for the whole batch."""
        tier = batch[0].tier
        audio = np.stack([r.audio for r in batch]).astype(np.float32)
        expr = np.stack([r.expression for r in batch]).astype(np.float32)
        pose = np.stack([r.pose for r in batch]).astype(np.float32)
        t0 = time.perf_counter()
        out = self.backend.render(audio, expr, pose, tier)
        return out, 1000.0 * (time.perf_counter() - t0)

    def _compose(self, batch: list[RenderRequest], out: Any, model_ms: float) -> list[RenderedFrame]:
        """Runs on the compositing thread: each frame's crop onto its base frame."""
        frames = []
        for j, req in enumerate(batch):
            t1 = time.perf_counter()
            image = req.compose(out.rgb[j], out.alpha[j])
            timings = {"model": model_ms, "compose": 1000.0 * (time.perf_counter() - t1)}
            timings.update({f"model.{k}": float(v) for k, v in (out.timings_ms or {}).items()})
            frames.append(RenderedFrame(image=image, tier=batch[0].tier, ready_at=0.0, timings_ms=timings))
        return frames

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for task in list(self._composing):
            task.cancel()
        for _, _, _, r in self._heap:
            if not r.future.done():
                r.future.cancel()
        self._heap.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._compose_executor.shutdown(wait=False, cancel_futures=True)


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's nice value by `nice` (Linux: per thread; elsewhere, or without permission, a
    no-op). The compositing thread takes this: a frame's compositing has slack until its deadline, while the model
    thread's render of the next frame is the critical path, and with both on two cores ONNX Runtime's parallel
    loops wait for whichever of their threads the compositor preempted."""
    import os
    import threading

    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:
        log.debug("could not lower the compositing thread's priority (%s)", exc)


def warm_up(backend: Backend, tiers: list[str], audio: np.ndarray, expression: np.ndarray, pose: np.ndarray,
            costs: CostModel, clock: Clock, compose: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
            repeats: int = 2) -> dict[str, Any]:
    """Render every tier `repeats` times (the first call pays lazy initialisation) and seed the cost model with
    the last call's cost on `clock`, so the scheduler never has to gamble a deadline on an unmeasured tier."""
    out: dict[str, Any] = {}

    def once(tier: str) -> tuple[Any, Any]:
        res = backend.render(audio[None], expression[None], pose[None], tier)
        return res, (compose(res.rgb[0], res.alpha[0]) if compose is not None else None)

    for tier in tiers:
        for _ in range(repeats):
            (res, image), cost = clock.measure(once, tier)
        costs.observe(tier, cost)
        out[tier] = {"cost_ms": 1000.0 * cost, "crop": tuple(res.rgb.shape[1:3]), "image": image}
    return out
