"""`ideal bench`: each mode runs briefly on the built-in avatar and returns well-formed figures, and the realtime
latency measurement sees an injected known delay as that much more latency."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module", autouse=True)
def shipped_mouth_model() -> None:
    """Every mode drives the mouth from audio through the shipped audio-to-mouth model."""
    from ideal.avatar.mouth.model import MOUTH_MANIFEST
    import ideal.avatar.mouth.model as mouth

    if not (mouth.MOUTH_MODEL_DIR / MOUTH_MANIFEST).exists():
        pytest.skip(f"the shipped audio-to-mouth model is not in this checkout yet ({mouth.MOUTH_MODEL_DIR})")


@pytest.fixture(scope="module")
def bench_avatar(default_avatar: Path, tmp_path_factory) -> Path:
    """A copy of the built-in avatar with its ONNX export (so the onnxruntime backend is available)."""
    from ideal.export.onnx_export import ExportConfig, export_avatar

    dst = tmp_path_factory.mktemp("bench") / "avatar"
    shutil.copytree(default_avatar, dst, ignore=shutil.ignore_patterns("exported"))
    export_avatar(dst, ExportConfig(validate=False))
    return dst


@pytest.fixture(scope="module")
def speech(new_speech_wav: Path):
    from ideal.bench.signals import bench_audio

    return bench_audio(new_speech_wav, silence_s=0.2, max_speech_s=3.0)


def _cheapest_tier(avatar: Path) -> str:
    tiers = json.loads((avatar / "exported" / "export.json").read_text())["tiers"]
    return min(tiers, key=lambda t: tiers[t]["rays"] * tiers[t]["samples"])


def test_bench_audio_has_an_exact_onset(speech):
    assert speech.onset_sample == 3200
    assert not speech.audio[:speech.onset_sample].any()
    assert np.sqrt(np.mean(speech.audio[speech.onset_sample:speech.onset_sample + 1600] ** 2)) > 1e-3


def test_offline_mode_every_backend_and_tier(bench_avatar: Path, new_speech_wav, tmp_path: Path, capsys):
    from ideal.cli import main

    out, png = tmp_path / "offline.json", tmp_path / "offline.png"
    code = main(["bench", "--avatar", str(bench_avatar), "--backend", "all", "--duration", "0.12", "--threads", "2",
                 "--tier", _cheapest_tier(bench_avatar),
                 "--audio", str(new_speech_wav), "--json", str(out), "--plot", str(png)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "offline" and report["machine"]["versions"]["onnxruntime"]
    backends = {r["backend"] for r in report["results"]}
    assert {"torch", "onnxruntime"} <= backends and "tensorrt" in report["unavailable"]
    for r in report["results"]:
        assert r["fps"] > 0 and r["frames"] >= 3
        assert {"features", "mouth", "eaa", "field", "upsampling", "compose", "encode"} <= set(r["stage_ms"])
        assert all(v >= 0 for v in r["stage_ms"].values())
        assert r["peak_rss_mb"] and r["peak_rss_mb"] > 50
        # ONNX Runtime on CPU runs the INT8 refiner the export wrote; PyTorch its own FP32 one
        assert r["extra"]["refiner"] == ("int8" if r["backend"] == "onnxruntime" else "fp32")
    assert png.stat().st_size > 10_000
    text = capsys.readouterr().out
    assert "onnxruntime" in text and "fps" in text


def test_realtime_latency_sees_an_injected_delay(bench_avatar: Path, speech):
    """On the streamer's virtual clock (compute free, an injected delay charged exactly: deterministic on a loaded
    machine) one engine runs a session with a plain backend, then one whose every call takes 30 ms longer --
    slower, yet under the 40 ms frame period, so 25 fps still holds -- with the render budget grown to match (the
    streamer keeps a fixed playout delay). The bench must measure exactly that much more latency."""
    from ideal.export.backends import create_backend
    from ideal.bench.offline import DelayedBackend
    from ideal.bench.realtime import make_engine, run_sessions
    from ideal.streamer.clock import VirtualClock
    from ideal.streamer.config import StreamerConfig

    clock = VirtualClock(compute_scale=0.0)
    tier = _cheapest_tier(bench_avatar)
    backend = DelayedBackend(create_backend(bench_avatar, "onnxruntime", "cpu", tiers=[tier], threads=2), 0.0, clock)
    engine, _ = make_engine(str(bench_avatar), backend, "cpu", StreamerConfig(progressive=False), clock)

    async def go() -> list[dict]:
        runs = []
        try:
            for delay_ms in (0.0, 30.0):
                backend.delay_s = delay_ms / 1e3
                engine.config.render_budget_ms = 45.0 + delay_ms
                runs.append(await run_sessions(engine, speech.audio, 1, 1.0, tier))
        finally:
            await engine.aclose()
        return runs

    base, slow = asyncio.run(go())
    for run in (base, slow):
        session = run["per_session"][0]
        assert session["frames"] >= 20 and session["late_frames"] == 0
        assert run["latency_ms"]["n"] >= 12, "latency not measured on enough frames"
    # measured by the bench from its own push and receive times, it agrees with the streamer's own figure...
    s = base["per_session"][0]
    assert abs(s["latency_ms"]["p50"] - s["streamer_latency_ms"]["p50"]) < 25
    # ...and the 30 ms more per call show up as 30 ms more latency
    added = slow["latency_ms"]["p50"] - base["latency_ms"]["p50"]
    assert 27 <= added <= 33, f"injected 30 ms, measured {added:.1f} ms more"


def test_single_session_harness_reports_the_streamer_figures(bench_avatar: Path, speech):
    """`run_realtime` (benchmarks/streamer_*.py) drives one session through the whole signal on the same
    feed/consume as `run_sessions`, and `tier_quality` renders every tier on the same inputs."""
    from ideal.export.backends import create_backend
    from ideal.bench.realtime import make_engine, run_realtime
    from ideal.bench.tier_quality import tier_quality
    from ideal.streamer.clock import VirtualClock
    from ideal.streamer.config import StreamerConfig

    clock = VirtualClock(compute_scale=0.0)
    tier = _cheapest_tier(bench_avatar)
    backend = create_backend(bench_avatar, "onnxruntime", "cpu", tiers=[tier], threads=2)
    engine, _ = make_engine(str(bench_avatar), backend, "cpu", StreamerConfig(progressive=False), clock)
    audio = speech.audio[:16000]

    async def go():
        try:
            return await run_realtime(engine, audio, tier=tier), tier_quality(engine, audio, n_frames=2, stride=5)
        finally:
            await engine.aclose()

    (fig, run), quality = asyncio.run(go())
    assert len(run.pushed_at) == 50 and not run.audio  # 20 ms chunks; frames' audio not kept (RSS is measured)
    assert fig.frames >= 25 and fig.late_frames == 0 and fig.stalls == 0 and fig.tiers_used == {tier: fig.frames}
    assert fig.latency_ms["p50"] is not None and len(fig.rss_mb) >= 2 and fig.render_calls >= fig.frames
    assert quality[tier]["psnr_crop_db_vs_" + tier] is None and quality[tier]["crop_px"] > 0  # the reference


def test_realtime_mode_on_the_wall_clock(bench_avatar: Path, new_speech_wav, tmp_path: Path):
    from ideal.cli import main

    out = tmp_path / "realtime.json"
    assert main(["bench", "--mode", "realtime", "--avatar", str(bench_avatar), "--backend", "onnxruntime",
                 "--duration", "2", "--threads", "2", "--audio", str(new_speech_wav),
                 "--tier", _cheapest_tier(bench_avatar), "--no-int8", "--json", str(out),
                 "--plot", str(tmp_path / "rt.png")]) == 0
    report = json.loads(out.read_text())
    run = report["runs"][0]
    assert set(run["refiner"].values()) == {"fp32"}  # --no-int8: the A/B switch reaches the streamer's backend
    session = run["per_session"][0]
    assert report["startup_s"] > 0 and run["sessions"] == 1 and session["frames"] > 0
    assert {"p50", "p95", "p99", "n"} <= set(run["latency_ms"])
    assert session["late_frames"] + (run["latency_ms"]["n"] or 0) <= session["frames"]
    assert (tmp_path / "rt.png").exists()


def test_webrtc_mode_measures_on_decoded_frames(bench_avatar: Path, new_speech_wav, tmp_path: Path):
    """A real aiortc speaker and watcher against the in-process server on loopback: connection, first frame,
    faces tracked on every decoded frame, and -- when the lips visibly respond -- a latency no shorter than the
    streamer's fixed playout delay allows (nothing can show the speech before the server has it)."""
    from ideal.cli import main

    out = tmp_path / "webrtc.json"
    code = main(["bench", "--mode", "webrtc", "--avatar", str(bench_avatar), "--backend", "onnxruntime",
                 "--trials", "1", "--duration", "2", "--audio", str(new_speech_wav),
                 "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    trial = report["trials"][0]
    assert report["startup_s"] > 0 and 0 < trial["connect_s"] < 20 and 0 < trial["first_frame_after_connect_s"] < 10
    for who in ("speaker", "watcher"):
        assert trial[f"{who}_frames"] > 20, f"{who}: too few decoded frames"
        assert trial[f"{who}_tracked"] >= 0.9 * trial[f"{who}_frames"], f"{who}: no face on the decoded frames"
        assert trial[f"{who}_baseline_opening"] is not None
        latency = trial[f"{who}_latency_ms"]
        assert latency is None or 100 < latency < 5000, f"{who}: implausible latency {latency} ms"
    assert {"e2e_latency_ms", "av_offset_ms", "av_sync_ms", "first_frame_after_connect_s"} <= set(report["summary"])
    assert trial["watcher_audio_latency_ms"] is not None, "the watcher heard no speech"
    assert trial["av_sync_ms"] is None or abs(trial["av_sync_ms"]) <= 400


def test_av_lag_recovers_a_known_offset_between_picture_and_sound(new_speech_wav):
    """The sync estimate finds the delay put between a mouth-opening track and a loudness track that follows it
    (real speech's loudness, with frames and packets at their own rates and arrival jitter)."""
    from ideal.avatar.audio.io import load_audio
    from ideal.bench.mouth import av_lag_ms

    speech = load_audio(new_speech_wav)[: 16000 * 4]
    rng = np.random.default_rng(0)
    packet_t = np.arange(0, 4.0, 0.02)
    level = np.array([np.sqrt(np.mean(speech[int(t * 16000):int(t * 16000) + 320] ** 2)) for t in packet_t])
    frame_t = np.arange(0, 4.0, 0.04)
    # the mouth opening follows the (smoothed, log) loudness; the picture arrives 120 ms after its sound
    mouth = np.interp(frame_t, packet_t, np.convolve(np.log10(level + 1e-4), np.ones(3) / 3, mode="same"))
    lag, r = av_lag_ms(frame_t + 0.12 + rng.uniform(0, 0.01, len(frame_t)), mouth,
                       packet_t + rng.uniform(0, 0.005, len(packet_t)), level, 0.3, 3.5)
    assert abs(lag - 120) <= 20 and r > 0.8
