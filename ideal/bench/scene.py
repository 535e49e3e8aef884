"""What an offline benchmark renders: the avatar driven by the bench audio, frame by frame.

Render inputs (audio windows, expressions with the audio-driven mouth, poses from the idle pose track) come
from `avatar.dub.plan_dub`, so every backend renders exactly the same frames as `ideal dub` would. The two
audio stages a live stream also runs per frame are re-done here at streaming granularity so they can be
timed: the causal log-mel of the frame's 640 new samples (+ the avatar's window) and the audio-to-mouth model
on one window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ideal.avatar.clock import FrameClock


@dataclass
class BenchScene:
    avatar: Any  # avatar.loading.LoadedAvatar
    plan: Any  # avatar.dub.DubPlan
    mouth_model: Any  # avatar.mouth.MouthModel
    mouth_windows: np.ndarray  # (N, Wm, D) inputs of the mouth model per frame

    @classmethod
    def build(cls, avatar: Any, audio_16k: np.ndarray) -> "BenchScene":
        from ideal.avatar.dub import DubConfig, plan_dub
        from ideal.avatar.mouth import load_mouth_model

        mouth_model = load_mouth_model()
        plan = plan_dub(avatar, audio_16k, DubConfig(expression="neutral"), mouth_model=mouth_model)
        return cls(avatar, plan, mouth_model, _mouth_windows(mouth_model, audio_16k, plan.n_frames, plan.fps))

    @property
    def fps(self) -> float:
        return float(self.plan.fps)

    @property
    def n_frames(self) -> int:
        return self.plan.n_frames

    @property
    def frame_height(self) -> int:
        return int(self.frame_shape[0])

    @property
    def frame_width(self) -> int:
        return int(self.frame_shape[1])

    @property
    def frame_shape(self) -> tuple[int, int]:
        if not hasattr(self, "_shape"):
            probe = self.compose(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 1), np.float32), 0)
            self._shape = probe.shape[:2]
        return self._shape

    def inputs(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(W, M) audio window, (20,) expression, (3, 4) pose of frame `index` (looping over the plan)."""
        i = index % self.n_frames
        return self.plan.windows[i], self.plan.expression[i], self.plan.pose[i]

    def compose(self, rgb: np.ndarray, alpha: np.ndarray, index: int) -> np.ndarray:
        """Crop (S,S,3)+(S,S,1) onto the base plate -> (H, W, 3) uint8, with the synthetic mark as served."""
        from ideal.avatar.compose import add_synthetic_mark

        return add_synthetic_mark(self.avatar.composite(rgb, alpha, index % self.n_frames))

    def new_stream(self, session: int = 0) -> "SceneStream":
        return SceneStream(self, offset=session * 7)


class SceneStream:
    """One session's per-frame audio work, timed by the offline bench."""

    def __init__(self, scene: BenchScene, offset: int = 0) -> None:
        from ideal.avatar.audio.features import StreamingMelFeatures

        self.scene = scene
        self.frame_index = offset
        self.clock = FrameClock(scene.fps)
        self._mel = StreamingMelFeatures(scene.avatar.mel_config)
        self._ring = np.zeros((0, scene.avatar.mel_config.n_mels), np.float32)

    def next_features(self) -> np.ndarray:
        """Push this frame's new samples through the causal log-mel and cut the avatar's window: (W, M)."""
        from ideal.avatar.audio.features import window_for_frame

        i = self.frame_index % self.scene.n_frames
        audio = self.scene.plan.audio_16k
        pcm = audio[self.clock.frame_start_sample(i):self.clock.frame_start_sample(i + 1)]
        new = self._mel.push(pcm)
        keep = self.scene.avatar.window.length + 16
        self._ring = np.concatenate([self._ring, new])[-keep:]
        return window_for_frame(self._ring, len(self._ring) - 1, self.scene.fps, self.scene.avatar.window,
                                self.scene.avatar.mel_config)

    def mouth_and_pose(self, _window: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the mouth model on this frame's window; return the frame's render inputs (from the plan, so all
        backends render the same frames)."""
        import torch

        i = self.frame_index % self.scene.n_frames
        with torch.no_grad():
            self.scene.mouth_model.module(torch.from_numpy(self.scene.mouth_windows[i:i + 1]))
        self.frame_index += 1
        return self.scene.inputs(i)

    def next_inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        window = self.next_features()
        return self.mouth_and_pose(window)


def _mouth_windows(mouth_model: Any, audio_16k: np.ndarray, n: int, fps: float) -> np.ndarray:
    from ideal.avatar.mouth.features import compute_mouth_features, padding_value
    from ideal.avatar.mouth.inference import frame_end_indices, gather_windows

    feats = compute_mouth_features(audio_16k, mouth_model.spec)
    ends = frame_end_indices(n, fps, mouth_model.window, mouth_model.spec)
    windows = gather_windows(feats, ends, mouth_model.window.length, padding_value(mouth_model.spec))
    return np.ascontiguousarray(windows, np.float32)


def load_scene(avatar_dir: str | Path | None, audio_16k: np.ndarray) -> BenchScene:
    from ideal.avatar.loading import load_avatar
    from ideal.avatar.manifest import resolve_avatar

    return BenchScene.build(load_avatar(resolve_avatar(avatar_dir), device="cpu"), audio_16k)
