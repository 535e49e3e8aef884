"""Clocks for the streamer: the real monotonic clock, and a virtual clock for tests and simulations.

Everything in `streamer` that waits or computes goes through a `Clock`:

- `now()`                      seconds on the clock (monotonic; only differences mean anything);
- `await sleep_until(t)`       wait until the clock reads `t`;
- `await wait_event(ev, t)`    wait for an `asyncio.Event` or until the clock reads `t`, whichever is first;
- `await run_compute(fn, ...)` run blocking work (a render) off the event loop.

`VirtualClock` makes waiting free while compute still costs what it really costs: time jumps to the next
sleeper as soon as every task is waiting on the clock (as trio's autojump clock does), and a computation that
really took `e` seconds completes `e * compute_scale` virtual seconds after it started (plus whatever it
declared with `charge`, which is how tests simulate a slow device without sleeping). A 60 s call therefore
runs in the time its renders take, with the same deadlines, late frames and ordering a real run would see.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from concurrent.futures import Executor
from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...

    async def sleep(self, dt: float) -> None: ...

    async def wait_event(self, event: asyncio.Event, until: float) -> bool: ...

    async def run_compute(self, fn: Callable[..., T], *args: Any, executor: Executor | None = None) -> T: ...

    def measure(self, fn: Callable[..., T], *args: Any) -> tuple[T, float]: ...


class MonotonicClock:
    """Wall time (`time.monotonic`); compute runs in `executor` (a thread) so the event loop stays free."""

    def measure(self, fn: Callable[..., T], *args: Any) -> tuple[T, float]:
        """Run `fn` here and now (blocking, e.g. at start-up): its result and its cost in clock seconds."""
        t0 = time.perf_counter()
        result = fn(*args)
        return result, time.perf_counter() - t0

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - time.monotonic()))

    async def sleep(self, dt: float) -> None:
        await asyncio.sleep(max(0.0, dt))

    async def wait_event(self, event: asyncio.Event, until: float) -> bool:
        if event.is_set():
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, until - time.monotonic()))
            return True
        except asyncio.TimeoutError:
            return event.is_set()

    async def run_compute(self, fn: Callable[..., T], *args: Any, executor: Executor | None = None) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


class VirtualClock:
    """A clock that jumps to the next deadline whenever nothing else can run.

    `compute_scale` multiplies the real duration of `run_compute` work (1.0: compute costs real time; 0.0:
    compute is free). `settle_iterations` event-loop turns without activity count as "nothing else can run";
    work that runs on a thread outside `run_compute` is invisible to the clock, so route it through there.
    """

    def __init__(self, start: float = 0.0, compute_scale: float = 1.0, settle_iterations: int = 20) -> None:
        self._now = float(start)
        self.compute_scale = compute_scale
        self.settle_iterations = settle_iterations
        self._heap: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()
        self._busy = 0
        self._activity = 0
        self._changed: asyncio.Event | None = None
        self._jumper: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local = threading.local()

    def now(self) -> float:
        return self._now

    # --- waiting ------------------------------------------------------------------------------------------
    async def sleep_until(self, t: float) -> None:
        if t <= self._now:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (float(t), next(self._seq), fut))
        self._touch()
        await fut  # cancelled futures stay in the heap and are skipped when popped

    async def sleep(self, dt: float) -> None:
        await self.sleep_until(self._now + max(0.0, dt))

    async def wait_event(self, event: asyncio.Event, until: float) -> bool:
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.sleep_until(until))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                if not task.done():
                    task.cancel()
            self._touch()
        return event.is_set()

    # --- compute ------------------------------------------------------------------------------------------
    async def run_compute(self, fn: Callable[..., T], *args: Any, executor: Executor | None = None) -> T:
        start = self._now
        self._busy += 1
        self._touch()
        t0 = time.perf_counter()
        error: BaseException | None = None
        result: Any = None
        charged = [0.0]

        def call() -> Any:
            self._local.charged = charged
            try:
                return fn(*args)
            finally:
                self._local.charged = None

        try:
            result = await asyncio.get_running_loop().run_in_executor(executor, call)
        except Exception as exc:  # charged like a result, then re-raised
            error = exc
        finally:
            elapsed = time.perf_counter() - t0
            self._busy -= 1
            self._touch()
        await self.sleep_until(start + elapsed * self.compute_scale + charged[0])
        if error is not None:
            raise error
        return result

    def measure(self, fn: Callable[..., T], *args: Any) -> tuple[T, float]:
        """Run `fn` here and now (blocking): its result and what it would cost on this clock."""
        charged = [0.0]
        self._local.charged = charged
        t0 = time.perf_counter()
        try:
            result = fn(*args)
        finally:
            self._local.charged = None
        return result, (time.perf_counter() - t0) * self.compute_scale + charged[0]

    def charge(self, seconds: float) -> bool:
        """Called from inside `run_compute` work: make it cost `seconds` more of virtual time (a simulated slow
        device). Returns False outside compute, where there is nothing to charge."""
        acc = getattr(self._local, "charged", None)
        if acc is None:
            return False
        acc[0] += seconds
        return True

    # --- the jumper ---------------------------------------------------------------------------------------
    def _touch(self) -> None:
        self._activity += 1
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a clock reused across event loops (e.g. one per test)
            self._loop, self._changed, self._jumper = loop, asyncio.Event(), None
            self._heap = [item for item in self._heap if item[2].get_loop() is loop]
            heapq.heapify(self._heap)
        assert self._changed is not None
        self._changed.set()
        if self._jumper is None or self._jumper.done():
            self._jumper = loop.create_task(self._jump_loop())

    async def _jump_loop(self) -> None:
        assert self._changed is not None
        while True:
            mark = self._activity
            for _ in range(self.settle_iterations):
                await asyncio.sleep(0)
            if self._activity != mark:
                continue
            if self._busy:
                self._changed.clear()
                await self._changed.wait()
                continue
            while self._heap and self._heap[0][2].done():
                heapq.heappop(self._heap)
            if not self._heap:
                return  # restarted by the next sleeper
            self._now = max(self._now, self._heap[0][0])
            while self._heap and self._heap[0][0] <= self._now:
                _, _, fut = heapq.heappop(self._heap)
                if not fut.done():
                    fut.set_result(None)
            self._activity += 1
