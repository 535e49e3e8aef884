"""The live engine: microphone audio in (any chunking, rate, gaps), lip-synced avatar frames out on a steady
frame clock, with deadlines, quality tiers and per-frame stats. See docs/streamer.md.

    from ideal.streamer import StreamerEngine
    engine = StreamerEngine(avatar_dir)                 # one loaded avatar + backend, shared by sessions
    session = engine.open_session("audio")              # in the event loop
    session.push_audio(pcm, 48000, 2)
    async for frame in session.frames(): ...            # StreamFrame(index, pts, image, audio, tier, ...)

Names are imported lazily so `import streamer` stays light (no torch, no onnxruntime).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "StreamerEngine": "ideal.streamer.engine",
    "Session": "ideal.streamer.session",
    "StreamFrame": "ideal.streamer.session",
    "StreamerConfig": "ideal.streamer.config",
    "SessionStats": "ideal.streamer.stats",
    "Clock": "ideal.streamer.clock",
    "MonotonicClock": "ideal.streamer.clock",
    "VirtualClock": "ideal.streamer.clock",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'streamer' has no attribute {name!r}")
