"""The voice-to-lips trace (server/latency.py, server/receive_buffer.py): its arithmetic and mappings on known
inputs, and the whole measurement in real Chromium (`ideal bench --mode browser`), where an injected 50 ms at one
hop must show up at that hop and in the total."""

from __future__ import annotations

import asyncio
import types

import numpy as np
import pytest

from ideal.server.latency import (NTP_EPOCH_OFFSET_S, STAMPS, MicTimeline, SendTrace, SessionTrace, hop_table)
from ideal.server.receive_buffer import ImmediateAudioBuffer


def _frames(n: int, base: float, hop_ms: dict[str, float] | None = None, late_every: int = 0) -> list[dict]:
    """n frames 40 ms apart whose consecutive stamps are 10 ms apart, plus `hop_ms` extra at the named stamps."""
    out = []
    for i in range(n):
        t, stamps = base + 0.04 * i, {}
        for k in STAMPS:
            t += 0.010 + (hop_ms or {}).get(k, 0.0) / 1000.0
            stamps[k] = t
        out.append({"index": i, "late": bool(late_every and i % late_every == 0), "stamps": stamps})
    return out


def test_hop_table_adds_up_and_sees_an_injected_delay():
    base = hop_table(_frames(100, 1000.0))
    assert base["frames"] == 100 and base["repeats"] == 0.0
    assert base["total_ms"]["p50"] == pytest.approx(10.0 * (len(STAMPS) - 1), abs=0.2)
    assert base["sum_of_hop_means_ms"] == pytest.approx(base["total_ms"]["mean"], abs=0.2)
    delayed = hop_table(_frames(100, 1000.0, {"emitted": 50.0}))
    grew = {h["hop"]: d["p50"] - h["p50"] for h, d in zip(base["hops"], delayed["hops"])}
    assert grew.pop("emitted") == pytest.approx(50.0, abs=0.2)
    assert all(abs(v) < 0.2 for v in grew.values())
    assert delayed["total_ms"]["p50"] - base["total_ms"]["p50"] == pytest.approx(50.0, abs=0.2)


def test_hop_table_leaves_repeats_out_and_counts_them():
    t = hop_table(_frames(100, 1000.0, late_every=4))
    assert t["frames"] == 75 and t["shown"] == 100 and t["repeats"] == pytest.approx(0.25)
    assert t["fresh_fps"] == pytest.approx(75 / (99 * 0.04) * (74 / 75), rel=0.05)


def test_incomplete_frames_do_not_enter_the_table():
    frames = _frames(10, 1000.0)
    del frames[3]["stamps"]["captured"]
    assert hop_table(frames)["frames"] == 9
    assert hop_table([])["total_ms"]["p50"] is None


def _ntp(wall: float) -> int:
    return int((wall + NTP_EPOCH_OFFSET_S) * 2**32)


def test_microphone_samples_map_to_capture_arrival_and_delivery_through_silence_and_resampling():
    """48 kHz packets of 960 samples; the session's 16 kHz timeline starts with 500 samples of filled silence
    and its resampler lags 2 ms; a sender report says RTP 1000 was captured at wall 100.0."""
    mic = MicTimeline()
    first_rtp, t0 = 1000, 100.0
    mic.on_sender_report(_ntp(t0), first_rtp)
    written = 500  # filled silence before the first audio
    for k in range(50):
        captured = t0 + 0.02 * k
        mic.on_packet(first_rtp + 960 * k, captured + 0.025)  # sent after its last sample + 5 ms
        written += 320
        mic.on_pushed(960 * k, 960, 48_000, captured + 0.030, written - 32, 0.002)  # 32 samples = the 2 ms lag
    # session sample 500 + 320 * 10 + 160 is input sample 3 * (320 * 10 + 160) = packet 10's sample 480 (the lag
    # delays when it reaches the timeline, not which sample it is)
    s = 500 + 320 * 10 + 160
    got = mic.sample(s, browser_offset_s=0.0)
    assert got is not None
    assert got["captured"] == pytest.approx(t0 + 0.02 * 10 + 480 / 48_000, abs=1e-4)
    assert got["arrived"] == pytest.approx(t0 + 0.02 * 10 + 0.025, abs=1e-6)
    assert got["delivered"] >= got["arrived"]
    assert mic.sample(100, 0.0) is None or "captured" not in mic.sample(100, 0.0)  # the filled silence
    assert mic.sample(s, browser_offset_s=0.5)["captured"] == pytest.approx(got["captured"] + 0.5, abs=1e-6)


def test_rtp_timestamps_wrap_around():
    mic = MicTimeline()
    first = 2**32 - 960 * 3
    mic.on_sender_report(_ntp(50.0), first)
    for k in range(8):
        mic.on_packet((first + 960 * k) & 0xFFFFFFFF, 50.0 + 0.02 * k + 0.021)
        mic.on_pushed(960 * k, 960, 48_000, 50.0 + 0.02 * k + 0.022, 320 * (k + 1), 0.0)
    got = mic.sample(320 * 6 + 10, 0.0)  # packet 6: past the wrap
    assert got["captured"] == pytest.approx(50.0 + 0.12 + 30 / 48_000, abs=1e-4)
    assert got["arrived"] == pytest.approx(50.0 + 0.12 + 0.021, abs=1e-6)


def test_the_pages_frames_are_paired_with_the_frames_sent_despite_the_random_rtp_origin():
    session = SessionTrace()
    trace = SendTrace(session, fps=25.0)
    origin = 3_999_999_000  # wraps within the run
    shown = []
    for i in range(40):
        sent = 500.0 + 0.04 * i
        trace.on_sent(int(round(i * 3600)), sent)
        session.on_frame(types.SimpleNamespace(index=i, late=False, mouth_sample=None, audio=np.zeros(640),
                                               mouth_open=0.0, trace={"emitted": sent - 0.01 - session._clock_to_wall}))
        shown.append({"rtp": (origin + i * 3600) & 0xFFFFFFFF, "received": sent + 0.003, "presented": sent + 0.02,
                      "displayed": sent + 0.03})
    trace.on_shown(shown[::2], 0.0)  # the page displayed every other frame
    frames = trace.frames()
    assert [f["index"] for f in frames] == list(range(0, 40, 2))
    assert all(f["stamps"]["received"] - f["stamps"]["sent"] == pytest.approx(0.003) for f in frames)


class _Packet:
    def __init__(self, seq: int) -> None:
        self.sequence_number = seq & 0xFFFF
        self.timestamp = 960 * seq
        self._data = bytes([seq & 0xFF])


def test_immediate_buffer_releases_each_packet_on_arrival_and_drops_late_ones():
    buf = ImmediateAudioBuffer()
    released = [buf.add(_Packet(s))[1] for s in (65534, 65535, 0, 1)]  # across the 16-bit wrap
    assert all(f is not None for f in released)
    assert [f.timestamp for f in released] == [960 * s for s in (65534, 65535, 0, 1)]
    assert buf.add(_Packet(3))[1] is not None  # a gap: released at once (the lost one is not waited for)
    assert buf.add(_Packet(2))[1] is None and buf.dropped_late == 1  # arrived after a newer one
    assert buf.add(_Packet(3))[1] is None  # a duplicate


def test_the_receive_buffer_replaces_aiortcs_on_a_real_receiver():
    from aiortc import RTCPeerConnection

    from ideal.server import receive_buffer

    async def run() -> object:
        pc = RTCPeerConnection()
        receiver = pc.addTransceiver("audio", direction="recvonly").receiver
        installed = receive_buffer.install(receiver)
        await pc.close()
        return receiver, installed

    receiver, installed = asyncio.run(run())
    assert isinstance(installed, ImmediateAudioBuffer)
    assert receiver._RTCRtpReceiver__jitter_buffer is installed


def test_the_answer_asks_for_short_opus_packets_in_the_audio_section_only():
    from ideal.server.offers import with_audio_packet_ms

    sdp = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ptime:20\r\n"
           "a=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n")
    out = with_audio_packet_ms(sdp, 10)
    audio, video = out.split("m=video")
    assert audio.count("a=ptime:") == 1 and "a=ptime:10" in audio
    assert "ptime" not in video
    assert out.endswith("\r\n") and "\n" not in out.replace("\r\n", "")
