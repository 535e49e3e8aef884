"""Audio at the edge and the causal features contract, on real speech files."""

from __future__ import annotations

import numpy as np
import pytest

from ideal.avatar.audio.features import (AudioWindow, MelConfig, StreamingMelFeatures, compute_features,
                                   silence_value, window_for_frame)
from ideal.avatar.audio.io import load_audio, to_mono
from ideal.avatar.clock import FrameClock
from ideal.avatar.errors import InputError


def test_load_audio_any_format_to_16k_mono(speech_44k_stereo_wav, speech_m4a, obama_clip):
    wav_44k_stereo = load_audio(speech_44k_stereo_wav)
    assert wav_44k_stereo.dtype == np.float32 and wav_44k_stereo.ndim == 1
    assert abs(len(wav_44k_stereo) / 16000 - 7.5) < 0.05
    m4a = load_audio(speech_m4a)
    assert m4a.ndim == 1 and len(m4a) > 16000 and np.abs(m4a).max() <= 1.0
    mp4 = load_audio(obama_clip)
    assert abs(len(mp4) / 16000 - 20.0) < 0.05


def test_load_audio_bad_inputs(driver_clip, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(InputError, match="not a readable"):
        load_audio(junk)
    with pytest.raises(InputError, match="no audio track"):
        load_audio(driver_clip)  # 30 fps driver: video only


def test_to_mono_interleaved_int16():
    stereo = np.array([[1000, 3000], [-2000, 2000]], dtype=np.int16).reshape(-1)
    mono = to_mono(stereo, channels=2)
    np.testing.assert_allclose(mono, [2000 / 32768, 0.0], atol=1e-7)
    with pytest.raises(InputError):
        to_mono(np.zeros(5, np.int16), channels=2)


def test_streaming_features_match_offline_for_any_chunking(new_speech_wav):
    audio = load_audio(new_speech_wav)
    offline = compute_features(audio)
    assert offline.shape == (len(audio) // 160, 80)
    rng = np.random.default_rng(7)
    for max_chunk in (37, 640, 5000):
        stream = StreamingMelFeatures()
        parts, i = [], 0
        while i < len(audio):
            n = int(rng.integers(1, max_chunk + 1))
            parts.append(stream.push(audio[i:i + n]))
            i += n
        np.testing.assert_allclose(np.concatenate(parts), offline, atol=1e-4)


def test_features_are_causal(new_speech_wav):
    """Changing the future never changes past frames."""
    audio = load_audio(new_speech_wav)[: 16000 * 3]
    altered = audio.copy()
    altered[16000 * 2:] = np.random.default_rng(0).normal(0, 0.3, len(altered) - 32000).astype(np.float32)
    a, b = compute_features(audio), compute_features(altered)
    np.testing.assert_array_equal(a[:200], b[:200])
    assert np.abs(a[210:] - b[210:]).max() > 0.5


def test_running_normalisation_is_level_invariant(obama_audio):
    """A quieter microphone gives nearly the same features once the running mean has settled."""
    audio = obama_audio[: 16000 * 20]
    loud, quiet = compute_features(audio), compute_features(audio * 0.1)
    settled = slice(1000, None)
    assert np.abs(loud[settled] - quiet[settled]).mean() < 0.01


def test_window_for_frame_alignment_and_padding():
    cfg = MelConfig()
    mel = np.arange(1000 * 80, dtype=np.float32).reshape(1000, 80) / 1e4
    window = AudioWindow(length=16, lookahead_ms=40)
    w = window_for_frame(mel, 10, 25.0, window, cfg)
    # frame 10 ends at 440 ms = mel index 44; +40 ms lookahead -> window ends (exclusive) at 48
    np.testing.assert_array_equal(w, mel[32:48])
    first = window_for_frame(mel, 0, 25.0, window, cfg)
    assert np.all(first[:8] == silence_value(cfg)) and np.array_equal(first[8:], mel[:8])
    assert FrameClock().samples_per_frame == 640
