"""`ideal train` on real data: a short run whose loss falls, the avatar dir it writes, save/load round trip,
the ablation switch end to end, and every bad input (dataset files, versions, consent, output)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ideal.avatar.errors import AvatarError, InputError
from ideal.avatar.manifest import AVATAR_FILES
from ideal.cli import main


def _train_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "train", str(dataset), "-o", str(out), "--consent", "--recipe", "quick", "--steps", "3",
            "--max-frames", "24", "--output-size", "256", "--eval-every", "1000", "--checkpoint-every", "1000",
            "--no-ray-culling", *extra]


def test_tiny_avatar_trains_and_loss_falls(tiny_avatar: Path):
    for name in AVATAR_FILES + ("stats.json", "loss_curve.png"):
        assert (tiny_avatar / name).exists(), name
    stats = json.loads((tiny_avatar / "stats.json").read_text())
    loss = stats["history"]["loss"]
    assert len(loss) >= 5
    assert loss[-1] < 0.75 * loss[0], f"loss did not fall enough: {loss[0]:.4f} -> {loss[-1]:.4f}"
    last = stats["held_out"][-1]
    # rendering the head beats leaving the head region empty (background + torso only)
    assert last["psnr_coarse"] > last["psnr_base_only"] + 1.0
    assert stats["rays_per_second"] > 0
    m = json.loads((tiny_avatar / "avatar.json").read_text())
    assert m["fusion"] == "eaa" and m["consent"]["confirmed"] is True
    assert set(m["tiers"]) == {"fast", "coarse", "refined"} and m["audio_window"]["length"] == 16
    assert m["training"]["data_hash"] and m["training"]["steps"] > 10


def test_loaded_avatar_renders_a_head_where_the_mask_says(tiny_avatar: Path, obama_dataset: Path):
    import cv2

    from ideal.avatar.backend import Backend
    from ideal.avatar.loading import load_avatar

    av = load_avatar(tiny_avatar)
    assert isinstance(av.backend, Backend)
    i = 10
    mel_window = np.zeros((1, av.window.length, 80), np.float32)
    out = av.backend.render(mel_window, av.expression_track[i:i + 1], av.pose_track[i:i + 1], "coarse")
    s = av.tiers["coarse"].output
    assert out.rgb.shape == (1, s, s, 3) and out.alpha.shape == (1, s, s, 1)
    assert out.rgb.dtype == np.float32 and 0 <= out.rgb.min() and out.rgb.max() <= 1
    assert set(out.timings_ms) >= {"eaa", "field", "refine"}  # the same stage names as the exported backends
    mask = cv2.imread(str(obama_dataset / "masks" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
    x0, y0, side = (int(v) for v in av.crop)
    head = cv2.resize((mask[y0:y0 + side, x0:x0 + side] == 2).astype(np.float32), (s, s)) > 0.5
    alpha = out.alpha[0, ..., 0]
    assert alpha[head].mean() > 0.8 and alpha[~head].mean() < 0.3
    frame = av.composite(out.rgb[0], out.alpha[0], i)
    assert frame.shape == (av.image_size[1], av.image_size[0], 3) and frame.dtype == np.uint8


def test_save_load_round_trip_and_resume(obama_dataset: Path, tmp_path: Path):
    """The written weights reproduce the trained model's renders exactly; a resumed run continues the step
    count from the checkpoint."""
    from ideal.avatar.loading import load_avatar

    out = tmp_path / "a"
    assert main(_train_args(obama_dataset, out, "--checkpoint-every", "2")) == 0
    ckpt = torch.load(Path(str(out) + ".ckpt") / "last.pt", weights_only=False)
    assert ckpt["step"] == 3
    av = load_avatar(out)
    from ideal.avatar.model.models import IdealNeRF

    ref = IdealNeRF(av.model.cfg, av.crop)
    ref.load_state_dict(ckpt["model"])
    ref.eval()
    audio = np.random.default_rng(0).normal(size=(2, 16, 80)).astype(np.float32)
    expr, pose = av.expression_track[:2], av.pose_track[:2]
    got = av.backend.render(audio, expr, pose, "refined")
    with torch.no_grad():
        rgb, alpha = ref.render(torch.from_numpy(audio), torch.from_numpy(expr), torch.from_numpy(pose), "refined")
    assert np.allclose(got.rgb, rgb.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    assert np.allclose(got.alpha, alpha.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    # resume: 2 more steps on top of the 3 done
    resumed = ["-q", "train", str(obama_dataset), "-o", str(out), "--consent", "--recipe", "quick", "--steps", "5",
               "--max-frames", "24", "--output-size", "256", "--eval-every", "1000", "--resume", "--overwrite"]
    assert main(resumed) == 0
    assert json.loads((out / "avatar.json").read_text())["training"]["steps"] == 5


def test_concat_fusion_trains_and_is_recorded(obama_dataset: Path, tmp_path: Path):
    from ideal.avatar.loading import load_avatar
    from ideal.avatar.model.components.eaa import ConcatFusion

    out = tmp_path / "concat"
    assert main(_train_args(obama_dataset, out, "--fusion", "concat", "--half")) == 0
    av = load_avatar(out)
    assert av.fusion == "concat" and isinstance(av.model.encoder.fusion, ConcatFusion)
    assert json.loads((out / "avatar.json").read_text())["weights_dtype"] == "float16"


# --- bad inputs ------------------------------------------------------------------------------------------

def _copy_dataset(src: Path, dst: Path, skip: str | None = None) -> Path:
    """A cheap copy (symlinked frames and masks) of a dataset dir, without `skip`."""
    dst.mkdir()
    for p in src.iterdir():
        if p.name == skip:
            continue
        if p.is_dir():
            (dst / p.name).symlink_to(p)
        else:
            shutil.copy(p, dst / p.name)
    return dst


def _run_train(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("missing", ["pose.npz", "expression.npy", "background.png", "masks"])
def test_missing_dataset_file(obama_dataset: Path, tmp_path: Path, capsys, missing: str):
    ds = _copy_dataset(obama_dataset, tmp_path / "ds", skip=missing)
    code, err = _run_train(_train_args(ds, tmp_path / "out"), capsys)
    assert code == 2 and missing in err and "ideal prepare" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,payload", [("expression.npy", b"not numpy"), ("pose.npz", b"PK\x03\x04broken"),
                                          ("audio.wav", b"RIFF\x00\x00")])
def test_corrupt_dataset_file(obama_dataset: Path, tmp_path: Path, capsys, name: str, payload: bytes):
    ds = _copy_dataset(obama_dataset, tmp_path / "ds")
    (ds / name).write_bytes(payload)
    code, err = _run_train(_train_args(ds, tmp_path / "out"), capsys)
    assert code == 2 and name in err


def test_dataset_with_wrong_shapes(obama_dataset: Path, tmp_path: Path, capsys):
    ds = _copy_dataset(obama_dataset, tmp_path / "ds")
    np.save(ds / "expression.npy", np.zeros((7, 20), np.float32))
    code, err = _run_train(_train_args(ds, tmp_path / "out"), capsys)
    assert code == 2 and "expression.npy" in err and "shape" in err


def test_missing_frame_image(obama_dataset: Path, tmp_path: Path, capsys):
    ds = _copy_dataset(obama_dataset, tmp_path / "ds", skip="frames")
    (ds / "frames").mkdir()
    for p in sorted((obama_dataset / "frames").iterdir())[:5]:
        (ds / "frames" / p.name).symlink_to(p)
    code, err = _run_train(_train_args(ds, tmp_path / "out"), capsys)
    assert code == 2 and "000005.jpg" in err


def test_incompatible_dataset_version(obama_dataset: Path, tmp_path: Path, capsys):
    ds = _copy_dataset(obama_dataset, tmp_path / "ds")
    m = json.loads((ds / "dataset.json").read_text())
    m["format_version"] = 99
    (ds / "dataset.json").write_text(json.dumps(m))
    code, err = _run_train(_train_args(ds, tmp_path / "out"), capsys)
    assert code == 2 and "format version 99" in err


def test_consent_required_when_not_interactive(obama_dataset: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    args = [a for a in _train_args(obama_dataset, tmp_path / "out") if a != "--consent"]
    code, err = _run_train(args, capsys)
    assert code == 2 and "--consent" in err and "consent" in err


def test_consent_prompt_declined(monkeypatch):
    from ideal.avatar.training.cli import confirm_consent

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(InputError, match="consent not confirmed"):
        confirm_consent(False, Path("x"), stdin=Tty())
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert confirm_consent(False, Path("x"), stdin=Tty()).method == "prompt"


def test_unwritable_or_occupied_output(obama_dataset: Path, tmp_path: Path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = _run_train(_train_args(obama_dataset, blocker / "avatar"), capsys)
    assert code == 2 and "not writable" in err
    code, err = _run_train(_train_args(obama_dataset, blocker), capsys)
    assert code == 2 and "not a directory" in err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    code, err = _run_train(_train_args(obama_dataset, occupied), capsys)
    assert code == 2 and "--overwrite" in err and (occupied / "keep.txt").exists()


def test_resume_without_checkpoint(obama_dataset: Path, tmp_path: Path, capsys):
    code, err = _run_train(_train_args(obama_dataset, tmp_path / "new", "--resume"), capsys)
    assert code == 2 and "no checkpoint" in err


def test_init_from_starts_at_the_avatars_weights(obama_dataset: Path, tiny_avatar: Path, tmp_path: Path):
    """--init-from fine-tunes: the first step starts from the given avatar, not from scratch, so its held-out
    PSNR before any step equals the avatar's own."""
    from ideal.avatar.loading import load_avatar

    out = tmp_path / "ft"
    args = _train_args(obama_dataset, out, "--init-from", str(tiny_avatar), "--mouth-weight", "60",
                       "--eye-weight", "30")
    args[args.index("--steps") + 1] = "1"
    assert main(args) == 0
    config = json.loads((out / "avatar.json").read_text())["training"]["config"]
    assert config["mouth_weight"] == 60.0 and config["init_from"] == str(tiny_avatar.resolve())
    assert config["eye_weight"] == 30.0
    tiny = load_avatar(tiny_avatar).model.state_dict()
    tuned = load_avatar(out).model.state_dict()
    planes = "ray_renderer.field.planes"
    # one Adam step at the planes' rate moves each value by at most ~lr; from scratch they would be unrelated
    assert float((tuned[planes] - tiny[planes]).abs().mean()) < 0.05


def test_eye_weight_draws_rays_at_the_eyes_of_each_frame(obama_dataset: Path):
    """--eye-weight adds a sampling blob on each eye, placed per frame from the tracked eye corners (as the mouth
    blob is from the lips), so a frame's eyes get more rays than its cheeks."""
    from ideal.avatar.audio.features import AudioWindow
    from ideal.avatar.model.config import ModelConfig, default_tiers
    from ideal.avatar.training.config import TrainConfig
    from ideal.avatar.training.data import head_box_from_neutral, load_training_data
    from ideal.avatar.training.trainer import Trainer

    size = 256
    data = load_training_data(obama_dataset, size, AudioWindow(length=16, lookahead_ms=40.0), max_frames=4)
    box_min, box_max = head_box_from_neutral(data.neutral)
    model_cfg = ModelConfig(box_min=box_min, box_max=box_max, tiers=default_tiers(size))
    plain = Trainer(data, TrainConfig(max_frames=4), model_cfg).sampling
    eyed = Trainer(data, TrainConfig(max_frames=4, eye_weight=30.0), model_cfg).sampling
    cell = size // plain.shape[-1]
    for i in range(4):
        for x, y, radius in data.eyes[i]:
            assert 0 < radius < size / 8 and 0 <= x < size and 0 <= y < size
            gy, gx = int(y // cell), int(x // cell)
            assert eyed[i, gy, gx] - plain[i, gy, gx] > 25.0  # the blob's peak sits on the eye
        right, left = data.eyes[i, :, 0]
        assert right < left  # the person's right eye is on the image's left
    far = (plain.shape[-1] - 1, 0)  # a bottom corner: no eye near
    assert torch.allclose(eyed[:, far[0], far[1]], plain[:, far[0], far[1]], atol=1e-3)


def test_init_from_refuses_an_avatar_of_another_crop(obama_dataset: Path, tiny_avatar: Path, tmp_path: Path, capsys):
    other = _copy_avatar(tiny_avatar, tmp_path / "other")
    m = json.loads((other / "avatar.json").read_text())
    m["crop"]["size"] = float(m["crop"]["size"]) + 40
    (other / "avatar.json").write_text(json.dumps(m))
    code, err = _run_train(_train_args(obama_dataset, tmp_path / "ft", "--init-from", str(other)), capsys)
    assert code == 2 and "another crop" in err and not (tmp_path / "ft").exists()


def test_cuda_requested_without_gpu(obama_dataset: Path, tmp_path: Path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, err = _run_train(_train_args(obama_dataset, tmp_path / "out", "--device", "cuda"), capsys)
    assert code == 2 and "cuda" in err


# --- bad avatars -------------------------------------------------------------------------------------------

def _copy_avatar(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_avatar_incompatible_version(tiny_avatar: Path, tmp_path: Path):
    from ideal.avatar.loading import load_avatar

    av = _copy_avatar(tiny_avatar, tmp_path / "av")
    m = json.loads((av / "avatar.json").read_text())
    m["format_version"] = 99
    (av / "avatar.json").write_text(json.dumps(m))
    with pytest.raises(AvatarError, match="format version 99"):
        load_avatar(av)


@pytest.mark.parametrize("name", ["weights.pt", "pose_track.npz", "base_plate.npz"])
def test_avatar_missing_or_corrupt_file(tiny_avatar: Path, tmp_path: Path, name: str):
    from ideal.avatar.loading import load_avatar

    av = _copy_avatar(tiny_avatar, tmp_path / "missing")
    (av / name).unlink()
    with pytest.raises(AvatarError, match=name):
        load_avatar(av)
    av = _copy_avatar(tiny_avatar, tmp_path / "corrupt")
    (av / name).write_bytes(b"garbage")
    with pytest.raises(AvatarError, match=name):
        loaded = load_avatar(av)
        loaded.base_frame(0)  # the base plate is read lazily


def test_avatar_missing_manifest_field(tiny_avatar: Path, tmp_path: Path):
    from ideal.avatar.loading import load_avatar

    av = _copy_avatar(tiny_avatar, tmp_path / "av")
    m = json.loads((av / "avatar.json").read_text())
    del m["audio_window"]
    (av / "avatar.json").write_text(json.dumps(m))
    with pytest.raises(AvatarError, match="audio_window"):
        load_avatar(av)
