"""The streamer's audio front end and clock on real speech: chunking invariance against the offline features,
bounded work and memory over 10 minutes of audio, VAD on speech vs silence, edge validation."""

from __future__ import annotations

import asyncio
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from ideal.avatar.audio.features import MelConfig, StreamingMelFeatures, compute_features, silence_value
from ideal.avatar.audio.io import load_audio
from ideal.avatar.errors import InputError
from ideal.streamer.audio_frontend import AudioFrontend, EdgeConverter, FeatureRing, FeatureStreamSpec, validate_pcm
from ideal.streamer.clock import VirtualClock

CFG = MelConfig()


def _frontend(ring_seconds: float = 4.0) -> AudioFrontend:
    return AudioFrontend({"mel": FeatureStreamSpec(lambda: StreamingMelFeatures(CFG), CFG.n_mels,
                                                   silence_value(CFG))}, ring_seconds=ring_seconds)


def _feed_random_chunks(fe: AudioFrontend, edge: EdgeConverter, pcm: np.ndarray, rate: int, channels: int,
                        rng: np.random.Generator, max_chunk: int) -> list[np.ndarray]:
    """Push `pcm` (n, channels) in random chunk sizes; returns the mel rows as they became available."""
    rows, i, seen = [], 0, 0
    while i < len(pcm):
        n = int(rng.integers(1, max_chunk))
        chunk = pcm[i:i + n]
        x = edge.convert(chunk.reshape(-1) if channels > 1 else chunk, rate, channels)
        fe.push(x, arrival=0.0)
        end = fe.feature_frames("mel")
        rows.append(fe.features("mel", seen, end))
        seen = end
        i += n
    fe.push(edge.flush(), arrival=0.0)
    rows.append(fe.features("mel", seen, fe.feature_frames("mel")))
    return rows


@pytest.mark.parametrize("name,max_chunk", [("new_speech_wav", 3000), ("speech_44k_stereo_wav", 7000)])
def test_streaming_features_match_offline_for_random_chunking(request, name, max_chunk):
    path = request.getfixturevalue(name)
    pcm, rate = sf.read(str(path), dtype="int16", always_2d=True)
    pcm = pcm[: rate * 6]  # 6 s keep the test short
    offline = compute_features(load_audio_from_pcm(pcm, rate), CFG)
    for seed in (0, 1):
        fe = _frontend(ring_seconds=10.0)
        rows = _feed_random_chunks(fe, EdgeConverter("HQ"), pcm, rate, pcm.shape[1],
                                   np.random.default_rng(seed), max_chunk)
        streamed = np.concatenate(rows)
        assert streamed.shape == offline.shape
        np.testing.assert_allclose(streamed, offline, atol=1e-4, rtol=0)


def load_audio_from_pcm(pcm: np.ndarray, rate: int) -> np.ndarray:
    """What `avatar.audio.io.load_audio` does to a file: mono float, soxr HQ resampling of the whole signal."""
    from ideal.avatar.audio.io import resample, to_mono

    return resample(to_mono(pcm), rate)


def test_edge_converter_equals_load_audio_on_a_441k_stereo_file(speech_44k_stereo_wav):
    path = speech_44k_stereo_wav
    pcm, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == 44100 and pcm.shape[1] == 2
    edge = EdgeConverter("HQ")
    out = [edge.convert(pcm[i:i + 882].reshape(-1), rate, 2) for i in range(0, len(pcm), 882)]  # 20 ms chunks
    out.append(edge.flush())
    streamed = np.concatenate(out)
    offline = load_audio(path)
    n = min(len(streamed), len(offline))
    assert abs(len(streamed) - len(offline)) <= 1
    np.testing.assert_allclose(streamed[:n], offline[:n], atol=2e-4)


def test_work_and_memory_per_chunk_stay_flat_over_ten_minutes(obama_audio):
    """Ten minutes of real speech (obama_20s's audio looped) in 20 ms chunks through VAD + features + rings: the work
    per chunk (feature frames computed) is the same in minute 10 as in minute 1, the front end's buffers keep
    one size, and nothing accumulates in the tenth minute."""
    speech = obama_audio
    fe = _frontend()
    chunk = 320
    per_minute = 60 * 16000 // chunk
    frames_per_chunk: set[int] = set()
    nbytes: list[int] = []
    traced: list[int] = []
    for minute in range(10):
        if minute == 9:
            tracemalloc.start()  # (only in the last minute: tracing every allocation is slow)
        before_min = fe.counters.feature_frames
        for k in range(per_minute):
            a = (k * chunk) % (len(speech) - chunk)
            before = fe.counters.feature_frames
            fe.push(speech[a:a + chunk], arrival=minute * 60.0 + k * 0.02)
            frames_per_chunk.add(fe.counters.feature_frames - before)
            if minute == 9 and k in (per_minute // 10, per_minute - 1):
                traced.append(tracemalloc.get_traced_memory()[0])
        nbytes.append(fe.nbytes)
        assert fe.counters.feature_frames - before_min == per_minute * 2
    tracemalloc.stop()
    # constant work: every 20 ms chunk completes exactly two 10 ms feature frames, from minute 1 to minute 10
    assert frames_per_chunk == {2}
    assert nbytes[1] == nbytes[-1]  # the buffers are fixed-size rings
    assert traced[1] - traced[0] < 64 * 1024, traced  # nothing accumulates during the tenth minute
    # the rings still answer for the newest audio and refuse what they no longer hold
    end = fe.feature_frames("mel")
    assert fe.features("mel", end - 16, end).shape == (16, 80)
    with pytest.raises(IndexError):
        fe.features("mel", 0, 16)


def test_vad_marks_speech_and_silence_with_hysteresis(new_speech_wav):
    speech = load_audio(new_speech_wav)[: 16000 * 3]
    rng = np.random.default_rng(0)
    noise = (rng.normal(0, 10 ** (-45 / 20), 16000 * 2)).astype(np.float32)  # quiet background hiss
    signal = np.concatenate([noise, speech, noise])
    fe = _frontend(ring_seconds=10.0)
    for i in range(0, len(signal), 320):
        fe.push(signal[i:i + 320], arrival=0.0)
    vad = fe.vad
    spf = 640
    flags = np.array([vad.speech(i * spf, (i + 1) * spf) for i in range(len(signal) // spf)])
    frames_noise = flags[: 2 * 25 - 2]
    frames_speech = flags[2 * 25 + 5: 5 * 25 - 5]
    assert not frames_noise.any()  # background noise alone never counts as speech
    assert frames_speech.mean() > 0.8
    # hysteresis: the speech state changes rarely (no flicker frame to frame)
    assert np.count_nonzero(np.diff(flags.astype(int))) < 12


def test_feature_ring_wraps_and_pads():
    ring = FeatureRing(capacity=5, dim=2, pad=-1.0)
    ring.push(np.arange(14, dtype=np.float32).reshape(7, 2))
    assert ring.start == 2 and ring.end == 7
    np.testing.assert_array_equal(ring.get(5, 9)[:2], [[10, 11], [12, 13]])
    np.testing.assert_array_equal(ring.get(5, 9)[2:], -1.0)
    np.testing.assert_array_equal(ring.get(-2, 0), -1.0)
    with pytest.raises(IndexError):
        ring.get(0, 3)


@pytest.mark.parametrize("pcm,rate,channels,match", [
    ([0.0, 0.1], 16000, 1, "numpy array"),
    (np.zeros(100, np.float32), 0, 1, "sample rate"),
    (np.zeros(100, np.float32), 1_000_000, 1, "sample rate"),
    (np.zeros(100, np.float32), 16000.0, 1, "sample rate"),
    (np.zeros(101, np.int16), 48000, 2, "whole number"),
    (np.zeros(100, np.float32), 48000, 0, "channels"),
    (np.zeros((10, 3), np.float32), 48000, 2, "channel column"),
    (np.zeros((2, 2, 2), np.float32), 48000, 1, "dimensions"),
    (np.zeros(10, np.complex64), 48000, 1, "dtype"),
    (np.array([0.0, np.nan], np.float32), 48000, 1, "NaN"),
])
def test_bad_pcm_is_an_input_error(pcm, rate, channels, match):
    with pytest.raises(InputError, match=match):
        validate_pcm(pcm if isinstance(pcm, list) else pcm, rate, channels)


async def test_virtual_clock_jumps_over_waits_and_charges_compute():
    clock = VirtualClock(start=100.0)
    order = []

    async def sleeper(t, name):
        await clock.sleep_until(t)
        order.append((name, clock.now()))

    def work():
        import time

        time.sleep(0.05)
        return 7

    async def computer():
        await clock.sleep_until(100.5)
        result = await clock.run_compute(work)
        order.append(("compute", round(clock.now() - 100.5, 2), result))

    await asyncio.gather(sleeper(160.0, "late"), sleeper(101.0, "early"), computer())
    assert order[0][0] == "compute" and order[0][1] >= 0.05 and order[0][2] == 7
    assert order[1] == ("early", 101.0) and order[2] == ("late", 160.0)
    ev = asyncio.Event()
    assert await clock.wait_event(ev, clock.now() + 5.0) is False
    assert clock.now() == 165.0


def test_the_low_delay_decimator_matches_offline_resampling_and_holds_back_5_ms(new_speech_wav):
    """A 48 kHz microphone in 20 ms chunks through the default edge ("FIR"): the 16 kHz timeline equals
    `load_audio`'s soxr HQ resampling of the whole file (> 55 dB SNR, same timing: no lag between them), and the
    resampler holds back 5 ms of input where soxr HQ holds back 37."""
    from ideal.avatar.audio.io import load_audio, resample
    from ideal.streamer.audio_frontend import resampler_holdback_ms

    offline = load_audio(new_speech_wav)[: 16000 * 6]
    mic = resample(offline, 16000, 48000).astype(np.float32)
    edge = EdgeConverter()
    streamed = np.concatenate([edge.convert(mic[i:i + 960], 48000, 1) for i in range(0, len(mic), 960)]
                              + [edge.flush()])
    reference = resample(mic, 48000, 16000)  # soxr HQ, whole signal
    assert len(streamed) == len(reference)
    err = streamed - reference
    assert 10 * np.log10(np.mean(reference ** 2) / np.mean(err ** 2)) > 55.0
    lags = [np.dot(streamed[1000:-1000], np.roll(reference, k)[1000:-1000]) for k in (-1, 0, 1)]
    assert int(np.argmax(lags)) == 1  # aligned to the sample
    assert resampler_holdback_ms(48000, 960) <= 6.0 < 30.0 < resampler_holdback_ms(48000, 960, "HQ")
    assert resampler_holdback_ms(44100, 882) == resampler_holdback_ms(44100, 882, "HQ")  # no whole ratio: soxr
