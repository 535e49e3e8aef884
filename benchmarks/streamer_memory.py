"""Memory of one streaming session over a long call (default 10 minutes of speech), fast.

Runs the real engine on a virtual clock (waiting is free) with every real per-frame step of the streamer --
edge conversion, VAD, feature rings, the audio-to-mouth and prosody networks, idle motion, scheduling, stats --
but the backend's first render of each tier and the idle frame's compositing are reused for every frame, so
what is measured is the streamer's own memory, not the renderer's arenas. Prints RSS (MiB) and the traced
Python heap (MiB) every simulated minute.

    python benchmarks/streamer_memory.py --avatar /work/avatars/obama_quick --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ReusedRender:
    """The real backend's first output per tier, returned again for every call (batch-sized)."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self._out = inner, f"reused-{getattr(inner, 'name', 'backend')}", {}

    @property
    def tiers(self):
        return self.inner.tiers

    def render(self, audio, expression, pose, tier):
        import numpy as np

        from ideal.avatar.backend import RenderOutput

        if tier not in self._out:
            self._out[tier] = self.inner.render(audio[:1], expression[:1], pose[:1], tier)
        r = self._out[tier]
        return RenderOutput(np.repeat(r.rgb, len(audio), 0), np.repeat(r.alpha, len(audio), 0), dict(r.timings_ms))


async def run(avatar: str | None, minutes: int, audio_path: str) -> list[tuple[float, float, float]]:
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.loading import load_avatar
    from ideal.bench.realtime import feed
    from ideal.streamer.clock import VirtualClock
    from ideal.streamer.config import StreamerConfig
    from ideal.streamer.engine import StreamerEngine
    from ideal.streamer.stats import rss_mb

    clock = VirtualClock(compute_scale=0.0)
    engine = StreamerEngine(avatar, backend=ReusedRender(load_avatar(avatar).backend), clock=clock,
                            config=StreamerConfig(adaptive_tiers=False, warmup_repeats=1))
    image = engine.idle_image
    engine.compose = lambda rgb, alpha, plate: image.copy()  # compositing is the avatar's; a frame-sized copy
    audio = load_audio(audio_path)
    session = engine.open_session(tier=engine.ordered_tiers[0])
    marks: list[tuple[float, float, float]] = []
    per_minute = int(round(60 * engine.fps))

    async def consume() -> None:
        n = 0
        async for _ in session.frames():
            n += 1
            if n % per_minute == 0:
                gc.collect()
                marks.append((round(clock.now() - session.t0), round(rss_mb(), 1),
                              round(tracemalloc.get_traced_memory()[0] / 2**20, 3)))
                print(f"{marks[-1][0]:5.0f} s   RSS {marks[-1][1]:8.1f} MiB   traced heap {marks[-1][2]:7.3f} MiB",
                      flush=True)

    tracemalloc.start()
    consumer = asyncio.ensure_future(consume())
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for k in range(int(minutes * 60 * 16000 / len(audio)) + 1):
        await feed(session, clock, audio, 20.0, session.t0 + k * len(audio) / 16000)
    stats = session.stats.to_dict()
    await session.aclose()
    await consumer
    await engine.aclose()
    cpu = time.process_time() - cpu0
    print(f"{stats['frames']} frames, {stats['late_frames']} late, front-end buffers {stats['frontend_bytes']} B, "
          f"{time.perf_counter() - t0:.0f} s wall, streamer CPU {1000 * cpu / max(stats['frames'], 1):.2f} ms/frame "
          f"(all threads; tracemalloc on; renders and compositing reused)")
    return marks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--avatar", default=None)
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--audio", default=str(REPO.parent / "shared/data/speech/eng_60s.wav"))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    asyncio.run(run(args.avatar, args.minutes, args.audio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
