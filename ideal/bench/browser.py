"""`ideal bench --mode browser`: voice to lips as a person sees it, in real Chromium (Playwright), hop by hop.

`ideal serve` runs in-process on loopback. A *speaker* page (Chromium's fake microphone plays the bench speech,
looped: silence, then speech) joins a room as the avatar; a *viewer* page (a second browser, no microphone) joins
the same room and watches it with its voice. For `duration` seconds:

- the speaker's page reports every frame it displays (web/latency.js) and the server joins that with the stamps it
  took on each frame's way (server/latency.py): the **hop table** (p50/p95 per hop) and its total, capture of the
  sound a frame's mouth makes -> that frame on the screen;
- independently of every stamp and of any threshold, the pages tap the microphone's loudness (speaker) and the
  received voice (viewer) and grab every picture their `<video>` presents; the project's face tracker measures the
  mouth opening on those pictures, and the lag that best aligns the shown mouth with the loudness, corrected by the
  mouth model's own lead over the sound (the same lag measured on the session's commanded mouth and its audio),
  gives a **second total** (speaker) and the **A/V sync at a viewer** (+ = the picture after the sound).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ideal.avatar.clock import SAMPLE_RATE
from ideal.avatar.errors import InputError

log = logging.getLogger(__name__)

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  "--autoplay-policy=no-user-gesture-required"]
WARMUP_S = 2.0  # left out of every figure: connection set-up, the first keyframe, the tier settling
GRAB_WIDTH = 256  # pictures are grabbed at this width for the face tracker
MAX_LAG_MS = 800.0

# Loudness of a MediaStream as the page hears it: RMS of the analyser's latest 256 samples every 5 ms, with the
# page's wall clock (s). `stream` is evaluated in the page.
TAP_LOUDNESS_JS = """
([streamExpr, key]) => {
  const stream = eval(streamExpr);
  const ctx = new AudioContext();
  const an = ctx.createAnalyser(); an.fftSize = 256;
  ctx.createMediaStreamSource(stream).connect(an);
  const buf = new Float32Array(an.fftSize), out = window[key] = [];
  window[key + 'Timer'] = setInterval(() => {
    an.getFloatTimeDomainData(buf); let s = 0; for (const x of buf) s += x * x;
    out.push([(performance.timeOrigin + performance.now()) / 1000, Math.sqrt(s / buf.length)]);
  }, 5);
}
"""

# Every picture a <video> presents (requestVideoFrameCallback), downscaled, as JPEG, with its display time.
GRAB_FRAMES_JS = """
([selector, key, width]) => {
  const v = document.querySelector(selector);
  const c = document.createElement('canvas'), ctx = c.getContext('2d');
  const out = window[key] = [];
  const cb = (_now, m) => {
    if (window[key + 'Stop']) return;
    c.width = width; c.height = Math.round(width * v.videoHeight / v.videoWidth);
    ctx.drawImage(v, 0, 0, c.width, c.height);
    out.push({t: (performance.timeOrigin + m.expectedDisplayTime) / 1000, jpeg: c.toDataURL('image/jpeg', 0.9)});
    v.requestVideoFrameCallback(cb);
  };
  v.requestVideoFrameCallback(cb);
}
"""


@dataclasses.dataclass
class BrowserBenchSettings:
    duration_s: float = 15.0
    mic_buffer: str = "immediate"
    render_budget_ms: float | None = None  # None: the server's default
    jitter_ms: float | None = None
    resample_quality: str | None = None  # the streamer's edge resampler (None: its default)
    inject_delay_ms: float = 0.0  # a sleep added to every render (checks that the table and both totals see it)
    # latency added before the speaker's encoder halfway through the measured span, frames/s unchanged: the
    # figures of each half (`halves`) show it at its hop within one session, whose timeline anchor is the same
    encoder_delay_ms: float = 0.0
    viewer: bool = True
    codec: str = "auto"  # the video codec the server sends
    mic_packet_ms: int | None = None  # the Opus packet length the server asks of the browser (None: its default)
    jitter_buffer_target_ms: float | None = None  # asked of the browser (None: it decides)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise InputError("no Chromium found for --mode browser", "install it (Debian: apt-get install chromium; "
                                                             "`make test` does it as root)")


def _mic_wav(speech_16k: np.ndarray, silence_s: float, folder: Path) -> Path:
    import soundfile as sf

    from ideal.avatar.audio.io import resample

    audio = np.concatenate([np.zeros(int(silence_s * SAMPLE_RATE), np.float32), speech_16k.astype(np.float32)])
    path = folder / "mic.wav"
    sf.write(path, resample(audio, SAMPLE_RATE, 48_000), 48_000, subtype="PCM_16")
    return path


def _engine_factory(settings: BrowserBenchSettings) -> Any:
    """None (the server's own engines), or with an injected delay engines whose backend sleeps that long per call
    and whose render budget is grown by as much (so the delay becomes latency, not late frames)."""
    if not settings.inject_delay_ms:
        return None

    def factory(avatar_path: Any, config: Any) -> Any:
        from ideal.bench.offline import DelayedBackend
        from ideal.export.backends import create_backend, ensure_onnx_export
        from ideal.streamer.engine import StreamerEngine

        delay_s = settings.inject_delay_ms / 1000.0
        if config.export and config.backend in ("auto", "onnxruntime"):
            ensure_onnx_export(avatar_path)
        backend = create_backend(avatar_path, config.backend, config.device, threads=config.threads)
        cfg = dataclasses.replace(config.streamer, render_budget_ms=config.streamer.render_budget_ms + 1e3 * delay_s)
        return StreamerEngine(avatar_path, backend=DelayedBackend(backend, delay_s), device=config.device, config=cfg)
    return factory


def _decode(frames: list[dict[str, Any]]) -> tuple[np.ndarray, list[np.ndarray]]:
    import cv2

    times, images = [], []
    for f in frames:
        raw = base64.b64decode(f["jpeg"].split(",", 1)[1])
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        if image is not None:
            times.append(f["t"])
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return np.asarray(times, np.float64), images


def model_lead_ms(session_frames: list[Any], fps: float) -> tuple[float, float] | None:
    """The lag (ms, + = mouth after sound) best aligning the session's commanded mouth with its own audio, on the
    session's timeline: the mouth model's own relation to the sound, which every measured lag contains."""
    from ideal.bench.mouth import av_lag_ms

    frames = [f for f in session_frames if f.mouth_open is not None and f.levels is not None and len(f.levels)]
    if len(frames) < 50:
        return None
    t = np.asarray([(f.index + 0.5) / fps for f in frames])
    mouth = np.asarray([f.mouth_open for f in frames])
    n = len(frames[0].levels)
    at = np.concatenate([(f.index + (np.arange(n) + 0.5) / n) / fps for f in frames])
    levels = np.concatenate([f.levels for f in frames])
    return av_lag_ms(t, mouth, at, levels, float(t[0]), float(t[-1]), max_lag_ms=MAX_LAG_MS)


def ingest_lag_ms(session_frames: list[Any], mic: Any, fps: float, loudness: list[list[float]], start: float,
                  stop: float) -> tuple[float, float] | None:
    """The lag (ms) best aligning the loudness the server was handed (each frame's audio at the wall time its
    samples reached the session) with the microphone's loudness in the page: hops 1 and 2 of the table measured
    without the RTP timestamps and sender reports they rely on."""
    from ideal.bench.mouth import av_lag_ms

    times, levels = [], []
    for f in session_frames:
        if f.mouth_sample is None or f.levels is None:
            continue
        got = mic.sample(f.mouth_sample, 0.0)
        if got is None:
            continue
        n = len(f.levels)
        times.extend(got["delivered"] + (np.arange(n) + 0.5 - n / 2) / (n * fps))
        levels.extend(f.levels)
    if len(times) < 50:
        return None
    page = np.asarray(loudness, np.float64).reshape(-1, 2)
    # av_lag_ms aligns a "picture" series against a sound: here the server's copy plays the picture's part
    return av_lag_ms(np.asarray(times), np.log10(np.asarray(levels) + 1e-4), page[:, 0], page[:, 1], start, stop,
                     max_lag_ms=MAX_LAG_MS)


def shown_lag_ms(grabbed: list[dict[str, Any]], loudness: list[list[float]], start: float,
                 stop: float) -> tuple[float, float] | None:
    """The lag (ms, + = picture after sound) best aligning the mouth on the grabbed pictures with `loudness`."""
    from ideal.bench.mouth import av_lag_ms, mouth_openings

    times, images = _decode(grabbed)
    openings = mouth_openings(images)
    level = np.asarray(loudness, np.float64).reshape(-1, 2)
    return av_lag_ms(times, openings, level[:, 0], level[:, 1], start, stop, max_lag_ms=MAX_LAG_MS)


async def run_browser(avatar: str | None, backend: str, device: str, speech_16k: np.ndarray,
                      settings: BrowserBenchSettings, chromium: str | None = None,
                      screenshot: str | Path | None = None) -> dict[str, Any]:
    """One run: the server in-process, a speaker page and (optionally) a viewer page; the figures of both totals."""
    from playwright.async_api import async_playwright

    from ideal.server.app import start_server
    from ideal.server.config import ServerConfig, server_streamer
    from ideal.server.latency import hop_table

    chromium = chromium or find_chromium()
    streamer = server_streamer()
    if settings.render_budget_ms is not None:
        streamer.render_budget_ms = settings.render_budget_ms
    if settings.jitter_ms is not None:
        streamer.jitter_ms = settings.jitter_ms
    if settings.resample_quality is not None:
        streamer.resample_quality = settings.resample_quality
    config = ServerConfig(host="127.0.0.1", port=0, avatars=[avatar or "default"], backend=backend,
                          device="cpu" if device == "auto" else device, max_sessions=1, max_viewers=2,
                          mic_buffer=settings.mic_buffer, codec=settings.codec,  # type: ignore[arg-type]
                          jitter_buffer_target_ms=settings.jitter_buffer_target_ms, streamer=streamer)
    if settings.mic_packet_ms is not None:
        config.mic_packet_ms = settings.mic_packet_ms
    server = await start_server(config, _engine_factory(settings))
    room = f"bench{int(time.time())}"
    with tempfile.TemporaryDirectory(prefix="ideal-bench-browser-") as tmp:
        wav = _mic_wav(speech_16k, WARMUP_S, Path(tmp))
        try:
            async with async_playwright() as pw:
                speaker = await pw.chromium.launch_persistent_context(
                    str(Path(tmp) / "speaker"), executable_path=chromium,
                    args=CHROMIUM_FLAGS + [f"--use-file-for-fake-audio-capture={wav}"],
                    viewport={"width": 1100, "height": 640})
                viewer = None
                try:
                    page = speaker.pages[0] if speaker.pages else await speaker.new_page()
                    await page.goto(f"{server.url}?room={room}&name=speaker")
                    await page.click("#join")
                    await _wait_playing(page, "#preview")
                    await page.evaluate(TAP_LOUDNESS_JS, ["state.mic", "__mic"])
                    await page.evaluate(GRAB_FRAMES_JS, ["#preview", "__shown", GRAB_WIDTH])
                    vpage = None
                    if settings.viewer:
                        viewer = await pw.chromium.launch_persistent_context(
                            str(Path(tmp) / "viewer"), executable_path=chromium, args=CHROMIUM_FLAGS,
                            viewport={"width": 1100, "height": 640})
                        vpage = viewer.pages[0] if viewer.pages else await viewer.new_page()
                        await vpage.goto(f"{server.url}?room={room}&mode=watch&name=viewer")
                        await vpage.click("#join")
                        await _wait_playing(vpage, ".remote video")
                        await vpage.evaluate(TAP_LOUDNESS_JS, ["document.querySelector('.remote video').srcObject",
                                                               "__heard"])
                        await vpage.evaluate(GRAB_FRAMES_JS, [".remote video", "__shown", GRAB_WIDTH])
                    started = time.time()
                    switched = None
                    if settings.encoder_delay_ms:
                        await asyncio.sleep(settings.duration_s / 2)
                        _speaker_track(server).added_delay_s = settings.encoder_delay_ms / 1000.0
                        switched = time.time()
                        await asyncio.sleep(settings.duration_s / 2)
                    else:
                        await asyncio.sleep(settings.duration_s)
                    await page.evaluate("state.shown && state.shown.report()")
                    if screenshot:
                        await (vpage or page).screenshot(path=str(screenshot))
                    speaker_frames = await page.evaluate("window.__shownStop = true; window.__shown")
                    mic = await page.evaluate("clearInterval(window.__micTimer); window.__mic")
                    viewer_frames = heard = None
                    if vpage is not None:
                        viewer_frames = await vpage.evaluate("window.__shownStop = true; window.__shown")
                        heard = await vpage.evaluate("clearInterval(window.__heardTimer); window.__heard")
                    overlay = await page.inner_text("#stats")
                finally:
                    await speaker.close()
                    if viewer is not None:
                        await viewer.close()
            peer = next((p for p in server.state.peers.peers.values() if p.kind == "avatar"), None)
            if peer is None or peer.subscription is None or peer.broadcast is None:
                raise RuntimeError("the speaker's peer is gone before the figures were read")
            traced = [f for f in peer.subscription.video.trace.frames()
                      if f["stamps"].get("displayed", 0.0) >= started]
            session_frames = peer.broadcast.trace.frames()
            mic_timeline = peer.broadcast.trace.mic
            fps = peer.broadcast.fps
            info = server.state.catalog.default.info
        finally:
            await server.stop()
    table = hop_table(traced)
    halves = None
    if switched is not None:  # frames displayed 1 s after the switch carry the added delay
        halves = [hop_table([f for f in traced if f["stamps"]["displayed"] < switched]),
                  hop_table([f for f in traced if f["stamps"]["displayed"] >= switched + 1.0])]
    lead = model_lead_ms(session_frames, fps)
    stop = time.time()
    seen = shown_lag_ms(speaker_frames, mic, started, stop)
    out: dict[str, Any] = {"table": table, "halves": halves, "overlay": overlay, "backend": info.get("backend"),
                           "model_lag_ms": None if lead is None else {"lag": lead[0], "r": round(lead[1], 3)},
                           "speaker_lag_ms": None if seen is None else {"lag": seen[0], "r": round(seen[1], 3)}}
    out["independent_total_ms"] = None if lead is None or seen is None else round(seen[0] - lead[0], 1)
    ingest = ingest_lag_ms(session_frames, mic_timeline, fps, mic, started, stop)
    out["ingest_lag_ms"] = None if ingest is None else {"lag": ingest[0], "r": round(ingest[1], 3)}
    if viewer_frames is not None and heard is not None:
        at_viewer = shown_lag_ms(viewer_frames, heard, started, stop)
        out["viewer_lag_ms"] = None if at_viewer is None else {"lag": at_viewer[0], "r": round(at_viewer[1], 3)}
        out["viewer_av_sync_ms"] = None if lead is None or at_viewer is None else round(at_viewer[0] - lead[0], 1)
        out["viewer_frames_shown"] = len(viewer_frames)
    out["speaker_frames_shown"] = len(speaker_frames)
    return out


def _speaker_track(server: Any) -> Any:
    peer = next((p for p in server.state.peers.peers.values() if p.kind == "avatar"), None)
    if peer is None or peer.subscription is None:
        raise RuntimeError("the speaker's peer is gone")
    return peer.subscription.video


async def _wait_playing(page: Any, selector: str, timeout_s: float = 60.0) -> None:
    await page.wait_for_function(
        f"""() => {{ const v = document.querySelector({selector!r});
                return v && v.videoWidth > 0 && v.currentTime > 0.5 && !v.paused; }}""", timeout=timeout_s * 1000)


# --- the `ideal bench --mode browser` entry ------------------------------------------------------------------
def format_table(out: dict[str, Any]) -> str:
    from ideal.bench.report import table

    t = out["table"]
    rows = [{"hop": h["label"], "p50": h["p50"], "p95": h["p95"], "mean": h["mean"]} for h in t["hops"]]
    rows.append({"hop": "total: capture -> on screen", **{k: t["total_ms"][k] for k in ("p50", "p95", "mean")}})
    text = table(rows, [("hop", "hop"), ("p50", "p50 ms"), ("p95", "p95 ms"), ("mean", "mean ms")])
    lag = out.get("speaker_lag_ms") or {}
    model = out.get("model_lag_ms") or {}
    text += (f"\n{t['frames']} fresh frames traced, repeats {100 * (t['repeats'] or 0):.1f} %, "
             f"fresh {t['fresh_fps']} frames/s shown"
             f"\nindependent total {out.get('independent_total_ms')} ms = shown mouth vs microphone loudness "
             f"{lag.get('lag')} ms (r {lag.get('r')}) - the mouth model's own lag {model.get('lag')} ms "
             f"(r {model.get('r')})")
    ingest = out.get("ingest_lag_ms") or {}
    text += (f"\nmicrophone in the page -> the session, by loudness alone: {ingest.get('lag')} ms "
             f"(r {ingest.get('r')}); the table's first two hops: {t['hops'][0]['p50']} + {t['hops'][1]['p50']} ms")
    if "viewer_av_sync_ms" in out:
        text += (f"\nA/V sync at a viewer {out['viewer_av_sync_ms']} ms (+ = the picture after the sound, i.e. the "
                 f"sound early; EBU R37 allows the sound 40 ms early to 60 ms late: -60..+40)")
    return text


def run_browser_mode(args: Any) -> dict[str, Any]:
    from ideal.bench.signals import bench_audio

    chromium = find_chromium()
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise InputError("--mode browser needs Playwright", "pip install playwright (no browser download needed: "
                                                           "it drives the system Chromium)") from None
    audio = bench_audio(args.audio, silence_s=0.0, max_speech_s=None)
    settings = BrowserBenchSettings(duration_s=args.duration or 15.0, inject_delay_ms=args.inject_delay_ms,
                                    mic_buffer=getattr(args, "mic_buffer", "immediate"),
                                    render_budget_ms=getattr(args, "render_budget_ms", None),
                                    jitter_ms=getattr(args, "jitter_ms", None), codec=getattr(args, "codec", "auto"),
                                    jitter_buffer_target_ms=getattr(args, "jitter_buffer_target_ms", None))
    backend = "auto" if args.backend == "all" else args.backend
    out = asyncio.run(run_browser(args.avatar, backend, args.device, audio.audio, settings, chromium,
                                  screenshot=getattr(args, "screenshot", None)))
    return {"mode": "browser", **out, "settings_browser": dataclasses.asdict(settings),
            "audio": {"source": audio.source, "seconds": round(audio.duration_s, 2)}, "_table": format_table(out)}
