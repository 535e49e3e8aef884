"""Expression/pose drivers: idle motion statistics, silence gate, clip looping, slice routing (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ideal.avatar.drive import AudioExpression, ClipExpression, ExpressionDriver, NeutralExpression
from ideal.avatar.mouth.gate import gated_mouth_track
from ideal.avatar.expression import EXPRESSION_DIM, SLICES
from ideal.avatar.idle import IdleMotion, blink_closure, blink_depth_from_expressions, pingpong_index

FPS = 25.0

_REPO = Path(__file__).resolve().parents[1]


def _pose_track(n: int = 40) -> np.ndarray:
    """A head turning smoothly by a few degrees: (n, 3, 4)."""
    out = np.zeros((n, 3, 4), np.float32)
    for i in range(n):
        a = np.radians(4 * np.sin(i / 7))
        out[i, :, :3] = 180 * np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        out[i, :, 3] = (256 + 3 * np.sin(i / 5), 240, 0)
    return out


def test_blinks_at_human_rate_with_fast_close_slow_open():
    idle = IdleMotion(_pose_track(), FPS, seed=3)
    closure = np.array([idle.blink(i) for i in range(int(FPS * 300))])  # five minutes
    onsets = np.flatnonzero((closure[1:] >= 0.5) & (closure[:-1] < 0.5))
    per_min = len(onsets) / 5
    assert 10 <= per_min <= 26, per_min
    gaps = np.diff(onsets) / FPS
    assert gaps.min() >= 0.25  # double blinks are close, but never the same blink twice
    assert closure.max() == pytest.approx(1.0, abs=0.05)
    t = np.linspace(0, 0.4, 401)
    c = blink_closure(t)
    peak = t[np.argmax(c)]
    assert peak < 0.1  # closes within ~90 ms
    assert (t[c > 0.05].max() - peak) > 2 * peak  # re-opening is slower than closing
    assert idle.expression(int(onsets[0]) + 2)[SLICES["eyes"].indices].min() < -1.0


def test_idle_is_seeded_and_random_access():
    a, b = IdleMotion(_pose_track(), FPS, seed=7), IdleMotion(_pose_track(), FPS, seed=7)
    late_first = a.expression(900)  # ask for a late frame before early ones: same answer as in order
    seq = [b.expression(i) for i in range(901)]
    assert np.allclose(late_first, seq[900])
    c = IdleMotion(_pose_track(), FPS, seed=8)
    assert not np.allclose(np.stack([c.expression(i) for i in range(500)]),
                           np.stack([a.expression(i) for i in range(500)]))


def test_gaze_saccades_are_small_and_pose_never_jumps():
    track = _pose_track(40)
    idle = IdleMotion(track, FPS, seed=1)
    gaze = np.stack([idle.gaze(i) for i in range(int(FPS * 60))])
    assert np.abs(gaze).max() <= 0.8 + 1e-6
    moves = np.flatnonzero(np.abs(np.diff(gaze, axis=0)).max(axis=1) > 1e-6)
    assert len(moves) > 10  # it does look around
    poses = np.stack([idle.pose(i) for i in range(300)])  # several ping-pong turns of a 40-frame track
    step = np.abs(np.diff(poses[:, :, 3], axis=0)).max()
    track_step = np.abs(np.diff(track[:, :, 3], axis=0)).max()
    assert step <= track_step * 1.05  # the turn-around points are no bigger than the track's own motion
    assert list(pingpong_index(np.arange(8), 4)) == [0, 1, 2, 3, 2, 1, 0, 1]


def test_blink_depth_comes_from_the_avatars_data():
    rng = np.random.default_rng(0)
    e = np.zeros((500, EXPRESSION_DIM), np.float32)
    e[:, SLICES["eyes"].indices] = rng.normal(0, 0.1, (500, 2))
    e[::50, SLICES["eyes"].indices] = -2.8  # ten blinks seen in training
    assert blink_depth_from_expressions(e) == pytest.approx(-2.8, abs=0.2)
    assert blink_depth_from_expressions(e[1:50]) == pytest.approx(-2.2)  # no closure seen: generic depth


def _speech_like(seconds: float, noise_db: float = -60.0, seed: int = 0) -> np.ndarray:
    """Bursts of a 150 Hz buzz (speech-level) separated by silence with background noise."""
    rng = np.random.default_rng(seed)
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    noise = rng.standard_normal(n) * 10 ** (noise_db / 20)
    on = ((t % 1.0) < 0.5) & (t > 0.5)
    return (noise + on * 0.2 * np.sign(np.sin(2 * np.pi * 150 * t))).astype(np.float32)


def test_gate_closes_the_mouth_in_silence_and_noise():
    audio = _speech_like(4.0, noise_db=-45.0)  # loud-ish background noise
    n = int(4.0 * FPS)
    rng = np.random.default_rng(1)
    raw = np.abs(rng.normal(1.0, 0.5, (n, 10))).astype(np.float32)  # a model that jitters everywhere
    mouth, gate = gated_mouth_track(raw, audio, FPS, lookahead_ms=40.0)
    t = (np.arange(n) + 0.5) / FPS
    speech = ((t % 1.0) < 0.5) & (t > 0.5)
    # well after the hangover and release, and before the lookahead hears the next onset
    quiet = (~speech) & ((t % 1.0) > 0.75) & ((t % 1.0) < 0.9)
    assert gate[quiet].max() == 0.0
    assert np.abs(mouth[quiet]).max() < 0.1  # 1% of the face height: the smoothing tail, invisible
    assert gate[speech & ((t % 1.0) > 0.1)].min() == 1.0
    assert mouth[speech].mean() > 0.5
    # the smoothed mouth jitters less than the raw model output during speech
    assert np.std(np.diff(mouth[speech, 0])) < np.std(np.diff(raw[speech, 0]))


def test_clip_loops_pingpong_or_holds_and_says_so():
    clip = np.arange(10 * EXPRESSION_DIM, dtype=np.float32).reshape(10, EXPRESSION_DIM)
    loop, hold = ClipExpression(clip, "loop"), ClipExpression(clip, "hold")
    assert [loop.source_index(i) for i in range(8, 14)] == [8, 9, 8, 7, 6, 5]
    assert [hold.source_index(i) for i in range(8, 14)] == [8, 9, 9, 9, 9, 9]
    assert "loops" in loop.coverage_note(25, FPS) and "holds" in hold.coverage_note(25, FPS)
    assert loop.coverage_note(10, FPS) is None
    with pytest.raises(ValueError):
        ClipExpression(clip, "repeat")


def test_driver_routes_slices():
    idle = IdleMotion(_pose_track(), FPS, seed=0)
    clip = np.random.default_rng(0).normal(size=(30, EXPRESSION_DIM)).astype(np.float32)
    audio_mouth = np.full((5, 10), 0.7, np.float32)
    # cross-identity, mouth from audio: brows/eyes/gaze from the clip, mouth from the audio
    d = ExpressionDriver(ClipExpression(clip), idle)
    e, p = d.clip(5, audio_mouth)
    assert np.allclose(e[:, SLICES["mouth"].indices], 0.7)
    assert np.allclose(e[:, 10:], clip[:5, 10:])
    assert p.shape == (5, 3, 4)
    # mouth from the driver clip
    d2 = ExpressionDriver(ClipExpression(clip), idle, mouth_clip=ClipExpression(clip))
    e2, _ = d2.clip(5, audio_mouth)
    assert np.allclose(e2, clip[:5])
    # neutral: brows zero, eyes only blinks (never opening wider than neutral)
    e3, _ = ExpressionDriver(NeutralExpression(idle), idle).clip(5, audio_mouth)
    assert np.allclose(e3[:, SLICES["brows"].indices], 0) and (e3[:, SLICES["eyes"].indices] <= 0).all()
    # audio prosody: brows from the predictor
    pros = np.zeros((5, EXPRESSION_DIM), np.float32)
    pros[:, SLICES["brows"].indices] = 0.4
    e4, _ = ExpressionDriver(AudioExpression(pros, idle), idle).clip(5, audio_mouth)
    assert np.allclose(e4[:, SLICES["brows"].indices], 0.4)


def test_pose_at_interpolates_the_track_and_the_listening_head_moves_slower():
    """`pose_at` is `pose` on whole positions and linear between them; the streaming driver replays the track
    at `listening_pose_speed` in silence and at full speed in speech, easing between the two."""
    from ideal.streamer.expression_source import FrameInputs, StreamingDriver

    track = np.load(_REPO / "avatar/assets/default_avatar/pose_track.npz")["pose"].astype(np.float32)
    idle = IdleMotion(track, 25.0, seed=3)
    assert np.allclose(idle.pose_at(7.0), idle.pose(7)) and idle.track_index_at(7.2) == idle.track_index(7)
    assert np.allclose(idle.pose_at(7.5), 0.5 * (idle.pose(7) + idle.pose(8)), atol=1e-6)

    class Closed:  # a mouth model that keeps the mouth shut: only the head matters here
        def predict(self, windows):
            return np.zeros((len(windows), 10), np.float32)

    driver = StreamingDriver(Closed(), idle, 25.0, listening_pose_speed=0.5)
    positions, frames = [], []
    for i in range(200):
        inputs = FrameInputs(index=i, gate_samples=np.zeros(1280, np.float32), mouth_window=np.zeros((24, 80)),
                             prosody_window=None, speech=i >= 100)
        frames.append(driver.frame(inputs))
        positions.append(driver.track_position)
    step = np.diff(positions)
    assert np.allclose(step[:99], 0.5) and np.allclose(step[150:], 1.0, atol=1e-3)  # listening, speaking
    assert np.all(np.diff(step[98:130]) > -1e-9)  # eases up, never jumps
    for f, p in zip(frames, positions):
        assert np.allclose(f.pose, idle.pose_at(p)) and f.track_index == idle.track_index_at(p)
