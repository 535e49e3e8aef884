"""The audio-to-mouth model: causal features, network shapes/ONNX, the shipped model on real speech."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ideal.avatar.audio.features import AudioWindow
from ideal.avatar.errors import AvatarError
from ideal.avatar.manifest import MOUTH_MODEL_DIR
from ideal.avatar.mouth.features import FeatureSpec, StreamingMouthFeatures, compute_mouth_features

EXCERPT_S = 3.0


@pytest.fixture(scope="module")
def speech(new_speech_wav) -> np.ndarray:
    from ideal.avatar.audio.io import load_audio

    return load_audio(new_speech_wav)[: int(EXCERPT_S * 16000)]


@pytest.mark.parametrize("kind", ["logmel", "formant"])
def test_features_streaming_equals_offline(speech: np.ndarray, kind: str) -> None:
    spec = FeatureSpec(kind)
    offline = compute_mouth_features(speech, spec)
    assert offline.shape == (len(speech) // 160, spec.input_dim)
    assert np.isfinite(offline).all()
    rng = np.random.default_rng(0)
    stream, chunks, pos = StreamingMouthFeatures(spec), [], 0
    while pos < len(speech):
        n = int(rng.integers(1, 1500))
        chunks.append(stream.push(speech[pos:pos + n]))
        pos += n
    np.testing.assert_allclose(np.concatenate(chunks), offline, atol=1e-5)


@pytest.mark.parametrize("kind", ["logmel", "formant"])
def test_features_are_causal(speech: np.ndarray, kind: str) -> None:
    spec = FeatureSpec(kind)
    cut = len(speech) // 2
    changed = speech.copy()
    changed[cut:] = np.random.default_rng(1).standard_normal(len(speech) - cut).astype(np.float32) * 0.3
    a, b = compute_mouth_features(speech, spec), compute_mouth_features(changed, spec)
    known = cut // 160  # frame k ends at sample (k + 1) * 160
    np.testing.assert_array_equal(a[:known], b[:known])
    assert not np.allclose(a[known:], b[known:])


@pytest.mark.parametrize("kind", ["logmel", "cepstral", "formant"])
def test_net_shapes_and_gradients(kind: str) -> None:
    import torch

    from ideal.avatar.mouth.model import MouthNet

    spec, window = FeatureSpec(kind), AudioWindow(24, 80.0)
    net = MouthNet(spec, window.length)
    x = torch.randn(5, window.length, spec.input_dim, requires_grad=True)
    y = net(x)
    assert y.shape == (5, 10)
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in net.parameters())


def test_net_exports_to_onnx_and_matches_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    from ideal.avatar.mouth.model import MouthNet

    spec, window = FeatureSpec("cepstral"), AudioWindow(24, 80.0)
    net = MouthNet(spec, window.length).eval()
    x = torch.randn(3, window.length, spec.input_dim)
    path = tmp_path / "mouth.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["audio_window"], output_names=["mouth"],
                      dynamic_axes={"audio_window": {0: "batch"}, "mouth": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(7, window.length, spec.input_dim)
    got = sess.run(None, {"audio_window": x2.numpy()})[0]
    with torch.no_grad():
        want = net(x2).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
    assert not ops & {"Loop", "If", "Scan", "GRU", "LSTM"}


def test_ensemble_averages_its_members_exports_and_round_trips(tmp_path: Path) -> None:
    """NetConfig.members: independently trained nets in one module, output = the mean of theirs; it saves, loads
    and exports to ONNX like a single net."""
    import onnxruntime as ort
    import torch

    from ideal.avatar.mouth.config import NetConfig
    from ideal.avatar.mouth.model import MouthNet, assemble_members, load_mouth_model, save_mouth_model

    spec, window = FeatureSpec("cepstral"), AudioWindow(24, 80.0)
    members = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        members.append(MouthNet(spec, window.length).eval())
    net = NetConfig(members=3)
    ens = assemble_members(members, spec, window.length, net)
    x = torch.randn(4, window.length, spec.input_dim)
    with torch.no_grad():
        want = torch.stack([m(x) for m in members]).mean(0)
        np.testing.assert_allclose(ens(x).numpy(), want.numpy(), atol=1e-5)
    save_mouth_model(tmp_path, ens, spec, window, net)
    loaded = load_mouth_model(tmp_path)
    np.testing.assert_allclose(loaded.predict(x.numpy()), want.numpy(), atol=1e-5)
    torch.onnx.export(ens, (x,), str(tmp_path / "m.onnx"), input_names=["w"], output_names=["mouth"],
                      dynamic_axes={"w": {0: "batch"}, "mouth": {0: "batch"}}, opset_version=17, dynamo=False)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"w": x.numpy()})
    np.testing.assert_allclose(got[0], want.numpy(), atol=1e-4)


def _shipped_or_skip() -> Path:
    if not (MOUTH_MODEL_DIR / "mouth.json").exists():
        pytest.fail(f"the shipped mouth model is missing from {MOUTH_MODEL_DIR}")
    return MOUTH_MODEL_DIR


def test_shipped_model_follows_real_mouth(obama_dataset: Path) -> None:
    """The shipped model, from the audio alone, tracks the real mouth opening of the default avatar's clip."""
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.expression import mouth_opening
    from ideal.avatar.mouth import load_mouth_model, predict_frames
    from ideal.avatar.mouth.offset import estimate_offset
    from ideal.avatar.evaluation.face_metrics import pearson

    model = load_mouth_model(_shipped_or_skip())
    assert model.window.length > 0 and model.mel_config.n_mels == 80
    mouth = mouth_opening(np.load(obama_dataset / "expression.npy"))
    audio = load_audio(obama_dataset / "audio.wav")
    est = estimate_offset(audio, mouth, 25.0, model=model)
    pred = predict_frames(model, audio, len(mouth), 25.0, offset_ms=est.offset_ms)
    assert pred.shape == (len(mouth), 10) and np.isfinite(pred).all()
    assert pearson(pred[:, 0], mouth) > 0.3


def test_predict_rejects_wrong_window_shape() -> None:
    model = __import__("ideal.avatar.mouth", fromlist=["load_mouth_model"]).load_mouth_model(_shipped_or_skip())
    with pytest.raises(ValueError, match="expected windows"):
        model.predict(np.zeros((2, model.window.length + 1, model.spec.input_dim), np.float32))


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    from ideal.avatar.mouth import load_mouth_model

    with pytest.raises(AvatarError, match="no such mouth model directory"):
        load_mouth_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AvatarError, match="mouth.json is missing"):
        load_mouth_model(tmp_path / "empty")


def test_corrupt_mouth_json_is_a_clear_error(tmp_path: Path) -> None:
    from ideal.avatar.mouth import load_mouth_model

    bad = tmp_path / "model"
    shutil.copytree(_shipped_or_skip(), bad)
    (bad / "mouth.json").write_text("{ not json")
    with pytest.raises(AvatarError, match="corrupt mouth model manifest"):
        load_mouth_model(bad)
    manifest = json.loads((MOUTH_MODEL_DIR / "mouth.json").read_text())
    (bad / "mouth.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(AvatarError, match="format version 99"):
        load_mouth_model(bad)
    (bad / "mouth.json").write_text(json.dumps({**manifest, "output_fields": ["mouth_open"]}))
    with pytest.raises(AvatarError, match="mouth slice"):
        load_mouth_model(bad)
    (bad / "mouth.json").write_text(json.dumps(manifest))
    (bad / "weights.pt").write_bytes(b"truncated")
    with pytest.raises(AvatarError, match="unreadable mouth model weights"):
        load_mouth_model(bad)


def test_vectorised_windows_equal_window_for_frame(speech: np.ndarray) -> None:
    from ideal.avatar.audio.features import compute_features, silence_value, windows_for_frames
    from ideal.avatar.mouth.inference import frame_end_indices, gather_windows

    mel = compute_features(speech)
    for fps, window in ((25.0, AudioWindow(24, 120.0)), (30.0, AudioWindow(16, 0.0))):
        n = int(len(speech) / 16000 * fps) + 3  # past the end too: padded with silence
        want = windows_for_frames(mel, n, fps, window)
        got = gather_windows(mel, frame_end_indices(n, fps, window, FeatureSpec()), window.length, silence_value())
        np.testing.assert_array_equal(got, want)


def test_shipped_low_latency_variant_loads() -> None:
    from ideal.avatar.mouth import LIVE_MOUTH_MODEL_DIR, load_mouth_model

    _shipped_or_skip()
    live, default = load_mouth_model(LIVE_MOUTH_MODEL_DIR), load_mouth_model()
    assert live.window.lookahead_ms < default.window.lookahead_ms
    assert live.mel_config == default.mel_config and live.module(__import__("torch").zeros(
        1, live.window.length, live.spec.input_dim)).shape == (1, 10)
