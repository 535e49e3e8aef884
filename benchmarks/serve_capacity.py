"""How many avatar sessions and viewers one machine serves at full frame rate (the default of --max-sessions).

Runs the real server (real StreamerEngine on an avatar) in this process and WebRTC clients in a second one
(`python -m server.client`: speakers send looped speech like a browser microphone, viewers watch the first
speaker). For each load it reports, per session, the *fresh* frame rate (new pictures per second: a frame the
renderer could not make in time repeats the last picture), the tiers used, and what the clients received.
A load "holds 25 fps" when every session's fresh frame rate is >= 24 and every client receives >= 24 fps.

    python benchmarks/serve_capacity.py --avatar /work/avatars/obama_quick --max-sessions 4 --max-viewers 6

Clients decode video on the same machine, which costs a few % of a core per client: the figures are a slightly
pessimistic bound for a server whose clients are remote browsers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from ideal.server.app import start_server  # noqa: E402
from ideal.server.config import DEFAULT_RENDER_BUDGET_MS, ServerConfig, server_streamer  # noqa: E402

log = logging.getLogger("serve_capacity")
HOLD_FPS = 24.0


async def measure(url: str, state, sessions: int, viewers: int, wav: str, duration: float) -> dict:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ideal.server.client", url, "--sessions", str(sessions), "--viewers", str(viewers),
        "--wav", wav, "--duration", str(duration), cwd=str(REPO), stdout=subprocess.PIPE)
    # sample the server's sessions while the clients run
    samples: dict[str, list[tuple[float, int, int, str]]] = collections.defaultdict(list)
    tiers: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    reader = asyncio.ensure_future(proc.stdout.read())
    t_start = time.monotonic()
    while not reader.done():
        now = time.monotonic()
        for peer in list(state.peers.peers.values()):
            if peer.broadcast is not None and now - t_start > 4.0:  # past connection set-up
                b = peer.broadcast
                samples[peer.id].append((now, b.frames, b.pictures, b.last.get("tier")))
                tiers[peer.id][b.last.get("tier")] += 1
        await asyncio.sleep(0.25)
    out = json.loads((await reader).decode().strip().splitlines()[-1])
    await proc.wait()
    fresh = []
    for _, s in samples.items():
        if len(s) < 8:
            continue
        (t0, _, p0, _), (t1, _, p1, _) = s[0], s[-1]
        fresh.append((p1 - p0) / (t1 - t0))
    received = out["speaker_fps"] + out["viewer_fps"]
    holds = bool(fresh) and min(fresh) >= HOLD_FPS and min(received) >= HOLD_FPS
    return {"sessions": sessions, "viewers": viewers, "fresh_fps": [round(x, 1) for x in fresh],
            "received_fps": [round(x, 1) for x in received],
            "tiers": [dict(c) for c in tiers.values()], "holds_25fps": holds}


def encoder_cost_ms(video: str, n: int = 100) -> dict[str, float]:
    """Median ms to encode one frame of a real talking-head clip with aiortc's VP8 and H.264 encoders: every
    viewer (and every preview) costs one encoder, 25 times a second."""
    import fractions

    import av
    import numpy as np
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    frames = []
    with av.open(video) as container:
        for i, f in enumerate(container.decode(video=0)):
            if i >= n:
                break
            frames.append(f.reformat(format="yuv420p"))
    out = {}
    for name, mime in (("vp8", "video/VP8"), ("h264", "video/H264")):
        enc = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90_000))
        times = []
        for i, frame in enumerate(frames):
            frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90_000)
            t = time.perf_counter()
            enc.encode(frame, i == 0)
            times.append(time.perf_counter() - t)
        out[name] = round(1000.0 * float(np.median(times[10:])), 2)
    return out


def render_cpu_ms(engine, repeats: int = 6) -> dict[str, float]:
    """CPU time (all threads of this process) to render + composite one frame per tier. Unlike wall time it hardly
    depends on what else the machine runs, so it gives a load-independent capacity estimate."""
    import numpy as np

    from ideal.avatar.audio.features import silence_value
    from ideal.avatar.expression import EXPRESSION_DIM

    mel = np.full((engine.window.length, engine.mel_config.n_mels), silence_value(engine.mel_config), np.float32)
    expr = np.zeros(EXPRESSION_DIM, np.float32)
    pose = engine.pose_track[0]
    plate = engine.plate_index(pose)
    out = {}
    for tier in engine.ordered_tiers:
        times = []
        for _ in range(repeats):
            t = time.process_time()
            res = engine.backend.render(mel[None], expr[None], pose[None], tier)
            engine.compose(res.rgb[0], res.alpha[0], plate)
            times.append(time.process_time() - t)
        out[tier] = round(1000.0 * float(np.median(times[1:])), 1)
    return out


def encoder_cpu_ms(video: str, n: int = 60) -> dict[str, float]:
    """CPU ms per frame of aiortc's VP8 / H.264 encoders on real frames (plus the RGB -> yuv420p conversion)."""
    import fractions

    import av
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    rgb = []
    with av.open(video) as container:
        for i, f in enumerate(container.decode(video=0)):
            if i >= n:
                break
            rgb.append(f.to_ndarray(format="rgb24"))
    from ideal.server.broadcast import rgb_to_yuv420p

    t = time.process_time()
    yuv = [rgb_to_yuv420p(x) for x in rgb]
    out = {"convert": round(1000.0 * (time.process_time() - t) / len(rgb), 2)}
    frames = [av.VideoFrame.from_ndarray(x, format="yuv420p") for x in yuv]
    for name, mime in (("vp8", "video/VP8"), ("h264", "video/H264")):
        enc = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90_000))
        t = time.process_time()
        for i, frame in enumerate(frames):
            frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90_000)
            enc.encode(frame, i == 0)
        out[name] = round(1000.0 * (time.process_time() - t) / len(frames), 2)
    return out


def cpu_estimate(render_ms: float, enc: dict[str, float], cores: int, fps: float = 25.0) -> dict[str, int]:
    """Sessions (render + convert + the owner's preview encoder) and, beside one session, viewers (an encoder
    each) that `cores` CPUs sustain at `fps`, from CPU time per frame. Leaves 20% for audio, network, Python."""
    budget = 0.8 * cores * 1000.0 / fps  # CPU ms per frame period
    per_session = render_ms + enc["convert"] + enc["vp8"]
    sessions = int(budget // per_session)
    viewers = int(max(0.0, budget - per_session) // enc["vp8"])
    return {"sessions": sessions, "viewers_beside_one_session": viewers}


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--avatar", default="default")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for rendering")
    p.add_argument("--mouth-model", default=None, help="audio-to-mouth model dir (default: the shipped one)")
    p.add_argument("--max-sessions", type=int, default=4, help="try 1..N avatar sessions")
    p.add_argument("--max-viewers", type=int, default=6, help="try 1..M viewers of one session")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per load")
    p.add_argument("--render-budget-ms", type=float, default=DEFAULT_RENDER_BUDGET_MS,
                   help="the server's render budget (ideal serve --render-budget-ms)")
    p.add_argument("--wav", default=str(REPO.parent / "shared" / "data" / "speech" / "test_13s.wav"))
    p.add_argument("--video", default=str(REPO.parent / "shared" / "data" / "train" / "obama_20s.mp4"),
                   help="real frames for the encoder cost")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    encoders = encoder_cost_ms(args.video)
    print(f"encoder ms/frame: {encoders} (one encoder per viewer at 25 fps: {encoders['vp8'] * 25 / 10:.1f}% of a "
          f"core for VP8)", flush=True)
    config = ServerConfig(host="127.0.0.1", port=0, avatars=[args.avatar], backend=args.backend, device=args.device,
                          mouth_model=args.mouth_model, threads=args.threads,
                          max_sessions=args.max_sessions + 1, max_viewers=args.max_viewers + 1,
                          streamer=replace(server_streamer(), render_budget_ms=args.render_budget_ms))
    server = await start_server(config)
    info = server.state.catalog.default.info
    engine = server.state.catalog.default.engine
    render_cpu = render_cpu_ms(engine)
    enc_cpu = encoder_cpu_ms(args.video)
    base = engine.ordered_tiers[0]
    estimate = cpu_estimate(render_cpu[base], enc_cpu, os.cpu_count() or 1, float(info.get("fps", 25.0)))
    print(f"CPU ms per frame: render {render_cpu}, encode {enc_cpu} -> estimate at 25 fps on {os.cpu_count()} "
          f"cores (base tier {base}): {estimate}", flush=True)
    load = os.getloadavg()
    print(f"avatar {info.get('avatar')} backend {info.get('backend')} output {info.get('output_size')} "
          f"tier cost ms {[t.get('cost_ms') for t in info.get('tiers', {}).values()]} load {load}", flush=True)
    results = []
    try:
        for n in range(1, args.max_sessions + 1):
            r = await measure(server.url, server.state, n, 0, args.wav, args.duration)
            print(json.dumps(r), flush=True)
            results.append(r)
            if not r["holds_25fps"]:
                break
        # Viewers cost encoders, not renders: a viewer load "holds" when every client still receives >= 24 fps and
        # the session's own picture rate has not dropped by more than 20% from its rate without viewers.
        alone = min(results[0]["fresh_fps"] or [0.0])
        for m in range(1, args.max_viewers + 1):
            r = await measure(server.url, server.state, 1, m, args.wav, args.duration)
            r["viewers_hold"] = bool(r["received_fps"]) and min(r["received_fps"]) >= HOLD_FPS and \
                min(r["fresh_fps"] or [0.0]) >= 0.8 * alone
            print(json.dumps(r), flush=True)
            results.append(r)
            if not r["viewers_hold"]:
                break
    finally:
        await server.stop()
    max_sessions = max([r["sessions"] for r in results if r["viewers"] == 0 and r["holds_25fps"]], default=0)
    max_viewers = max([r["viewers"] for r in results if r["viewers"] > 0 and r.get("viewers_hold")], default=0)
    summary = {"avatar": info.get("avatar"), "backend": info.get("backend"), "tiers": list(info.get("tiers", {})),
               "cpu_count": os.cpu_count(), "load_avg_at_start": load, "load_avg_at_end": os.getloadavg(),
               "max_sessions_at_25fps": max_sessions,
               "max_viewers_of_one_session_receiving_25fps": max_viewers, "encoder_ms_per_frame": encoders,
               "cpu_ms_per_frame": {"render": render_cpu, "encode": enc_cpu}, "cpu_time_estimate": estimate,
               "runs": results}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}), flush=True)
    if args.out:
        await asyncio.to_thread(Path(args.out).write_text, json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
