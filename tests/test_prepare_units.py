"""Unit-level checks of the prepare building blocks on real data and known transforms."""

from __future__ import annotations

import numpy as np
import pytest

from ideal.avatar.errors import InputError


def test_similarity_fit_recovers_a_known_pose():
    from scipy.spatial.transform import Rotation

    from ideal.avatar.prepare.pose import Similarity, robust_fit

    rng = np.random.default_rng(0)
    shape = rng.normal(size=(36, 3))
    shape -= shape.mean(axis=0)
    R = Rotation.from_euler("xyz", [[5, -20, 8], [0, 0, 0], [-12, 30, -4]], degrees=True).as_matrix()
    truth = Similarity(np.array([200.0, 150.0, 300.0]), R, np.array([[250.0, 240, 10], [100, 90, 0], [0, 0, 5]]))
    obs = truth.apply(np.broadcast_to(shape, (3, 36, 3))) + rng.normal(scale=0.2, size=(3, 36, 3))
    obs[0, 5] += 40.0  # one wild landmark must not drag the fit (robust re-weighting)
    fit = robust_fit(shape, obs)
    assert np.allclose(fit.scale, truth.scale, rtol=5e-3)
    angle = Rotation.from_matrix(np.einsum("nji,njk->nik", fit.rotation, R)).magnitude()
    assert np.degrees(angle).max() < 0.3
    assert np.allclose(fit.invert(obs)[1:], shape, atol=0.01)


def test_interpolation_and_gap_threshold_name_the_times():
    from ideal.avatar.prepare.gaps import check_gaps, interpolate_missing, missing_runs

    det = np.ones(100, bool)
    det[10:13] = False  # 0.12 s at 25 fps: tolerated
    vals = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    vals[~det] = np.nan
    filled = interpolate_missing(vals, det)
    assert np.allclose(filled[:, 0], np.arange(100))
    check_gaps(det, 25.0, 0.5, "clip.mp4")
    det[40:60] = False  # 0.8 s: too long
    assert missing_runs(det) == [(10, 13), (40, 60)]
    with pytest.raises(InputError, match=r"clip.mp4: no face in 1.60-2.40s"):
        check_gaps(det, 25.0, 0.5, "clip.mp4")
    with pytest.raises(InputError, match="no face found in any frame"):
        check_gaps(np.zeros(10, bool), 25.0, 0.5, "clip.mp4")


def test_audio_fit_corrects_offset_and_matches_the_frame_count():
    from ideal.avatar.prepare.audio import fit_audio

    pcm = np.arange(20_000, dtype=np.float32)
    out, fit = fit_audio(pcm, n_frames=25, fps=25.0, offset_ms=100.0)  # audio late by 100 ms: drop 1600
    assert len(out) == 16_000 and out[0] == 1600 and fit.start_trimmed == 1600
    assert fit.end_trimmed == 20_000 - 1600 - 16_000 and fit.padded_samples == 0
    out, fit = fit_audio(pcm[:15_000], n_frames=25, fps=25.0, offset_ms=-50.0)  # audio early: pad 800
    assert len(out) == 16_000 and fit.start_padded == 800 and out[800] == 0 and out[801] == 1
    assert fit.end_padded == 200
    out, fit = fit_audio(pcm, n_frames=30, fps=29.97)
    assert len(out) == round(30 * 16000 / 29.97)
    out, fit = fit_audio(pcm[:17_000], n_frames=25, fps=25.0, beyond_span=1000)  # an excerpt's look-ahead
    assert len(out) == 16_000 and fit.trimmed_samples == 0


def test_masked_median_ignores_foreground_samples():
    from ideal.avatar.prepare.segment import _masked_median

    frames = np.zeros((5, 2, 2, 3), np.uint8)
    frames[:, 0, 0] = np.array([10, 200, 20, 250, 30])[:, None]
    keep = np.ones((5, 2, 2), bool)
    keep[[1, 3], 0, 0] = False  # the 200 and 250 samples are the person
    med = _masked_median(frames, keep)
    assert med[0, 0, 0] == 20 and med[1, 1, 0] == 0


def test_thirty_fps_driver_is_resampled_to_the_output_clock(driver_clip):
    from ideal.avatar.prepare.video import iter_frames, probe_video

    path = driver_clip
    info = probe_video(path)
    assert info.source_fps == pytest.approx(30.0) and info.audio_start_time_s is None
    times = [t for _, t, _ in iter_frames(path, 25.0, start=2.0, duration=2.0)]
    assert len(times) == 50 and np.allclose(np.diff(times), 0.04)


def test_time_split_and_crop():
    from ideal.avatar.prepare.crops import fixed_crop, time_split

    assert time_split(175) == {"train": [0, 157], "val": [157, 175]}
    boxes = np.array([[100, 50, 200, 200], [120, 60, 230, 210]])
    crop = fixed_crop(boxes, 512, 512)
    assert crop["contains_all_boxes"] and crop["x1"] - crop["x0"] == crop["y1"] - crop["y0"] == crop["size"]
    assert crop["x0"] <= 100 and crop["y0"] <= 50 and crop["x1"] >= 230 and crop["y1"] >= 210


@pytest.mark.parametrize("rate", ["24", "30000/1001", "60"])
def test_any_source_rate_maps_to_the_nearest_source_frame(tmp_path, rate):
    """Source frame k is painted with grey level 4k; output frame i must show the source frame nearest to
    i / 25 s (no blending, no drift)."""
    from fractions import Fraction

    import av

    from ideal.avatar.prepare.video import iter_frames

    fr = Fraction(rate)
    n_src = int(2 * fr)  # 2 s
    path = tmp_path / "ramp.mp4"
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fr)
        st.width = st.height = 64
        st.pix_fmt = "yuv420p"
        st.options = {"crf": "0"}
        for k in range(n_src):
            img = np.full((64, 64, 3), 4 * k % 256, np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    got = [(i, t, int(round(f.mean() / 4))) for i, t, f in iter_frames(path, 25.0)]
    assert len(got) == round(n_src / fr * 25)  # the frames that cover the stream's duration
    for i, t, k in got:
        want = int(np.floor(t * float(fr) + 0.5 - 1e-9))
        assert abs(k - want % 64) <= (1 if rate == "30000/1001" else 0), (i, t, k, want)


def test_separate_audio_of_any_rate_and_channels_is_fitted(speech_44k_stereo_wav, driver_clip):
    """--audio with 44.1 kHz stereo speech: 16 kHz mono, starting at the first frame, one spare second."""
    from ideal.avatar.prepare.audio import fit_audio, load_clip_audio

    pcm = load_clip_audio(driver_clip, speech_44k_stereo_wav,
                          0.0, None, start=1.0, duration_s=5.0)
    assert pcm.ndim == 1 and pcm.dtype == np.float32 and len(pcm) == 6 * 16000
    assert 0.01 < np.abs(pcm).max() <= 1.0
    audio, fit = fit_audio(pcm, 125, 25.0)
    assert len(audio) == 80_000 and fit.end_trimmed == 16_000


def test_offset_decision_policy():
    from ideal.avatar.prepare.offset import decide_offset

    rng = np.random.default_rng(0)
    audio = rng.normal(scale=0.1, size=16000 * 4).astype(np.float32)
    mouth = rng.random(100)
    assert decide_offset(audio, mouth, 25.0, forced_ms=120.0).offset_ms == 120.0
    assert decide_offset(audio, mouth, 25.0, skip=True).method == "skipped"
    # Noise against noise: whatever the estimator (if present) says, it must not be applied confidently.
    d = decide_offset(audio, mouth, 25.0)
    assert d.offset_ms == 0.0 or (d.confidence is not None and d.confidence >= 0.3)
    silent = decide_offset(np.zeros_like(audio), mouth, 25.0)
    assert silent.offset_ms == 0.0 and silent.method in ("failed", "unavailable")
