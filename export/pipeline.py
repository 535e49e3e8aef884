"""The per-frame stage sequence shared by the exported backends (ONNX Runtime, TensorRT).

    condition(audio (B,W,M), expression (B,E))            -> cond (B,T,C)          "eaa"
    field.<tier>(cond, pose (B,3,4))                      -> rgb (B,3,r,r), alpha (B,1,r,r), feat (B,F,r,r)   "field"
    refine.<tier>(coarse_rgb, coarse_alpha, coarse_feat)  -> rgb (B,3,S,S), alpha (B,1,S,S)   "refine"

Every tier has a refine graph: the learned upsampler on refine tiers, plain bilinear upsampling on the others
(the model's `IdealNeRF.refiner(tier)`), so the sequence is the same for all tiers.

A subclass only says how one graph runs (`_run_graph`) and how its outputs come back to the host
(`_to_host`); the order, the checks on the inputs and the per-stage timings live here once, so every backend
renders the same thing and reports the same timing keys as the PyTorch backend.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ideal.avatar.backend import RenderOutput, Tier
from ideal.avatar.errors import InputError
from ideal.export.artifacts import CONDITION, FIELD, REFINE, graph_key


class StagedBackend:
    """Base of the exported backends; `render` follows `avatar.backend.Backend`."""

    name = "staged"

    def __init__(self, tiers: dict[str, Tier], input_shapes: dict[str, list[int | str]]) -> None:
        self._tiers = dict(tiers)
        self._input_shapes = input_shapes  # condition graph inputs: {"audio": ["B", W, M], "expression": ["B", E]}

    @property
    def tiers(self) -> dict[str, Tier]:
        return dict(self._tiers)

    # -- to implement -------------------------------------------------------------------------------------
    def _run_graph(self, key: str, feeds: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _to_host(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    def _synchronize(self) -> None:
        """Wait for queued device work so stage timings are real (no-op on CPU)."""

    # -- the protocol -------------------------------------------------------------------------------------
    def _check_inputs(self, audio: np.ndarray, expression: np.ndarray, pose: np.ndarray) -> int:
        b = audio.shape[0] if audio.ndim == 3 else -1
        want = {"audio": self._input_shapes.get("audio"), "expression": self._input_shapes.get("expression"),
                "pose": ["B", 3, 4]}
        for name, arr in (("audio", audio), ("expression", expression), ("pose", pose)):
            shape = want[name]
            if shape is None:
                continue
            ok = arr.ndim == len(shape) and arr.shape[0] == b and all(
                s == "B" or int(s) == d for s, d in zip(shape, arr.shape))
            if not ok:
                raise InputError(f"{self.name} backend: {name} has shape {tuple(arr.shape)}, expected "
                                 f"({', '.join(str(b) if s == 'B' else str(s) for s in shape)})",
                                 "pass one row per frame with the avatar's window and expression sizes")
        return b

    def render(self, audio: np.ndarray, expression: np.ndarray, pose: np.ndarray, tier: str) -> RenderOutput:
        """audio (B,W,M), expression (B,E), pose (B,3,4) float32 -> rgb (B,S,S,3), alpha (B,S,S,1)."""
        rgb, alpha, timings = self.run_stages(audio, expression, pose, tier)
        return crop_output(rgb, alpha, timings)

    def run_stages(self, audio: np.ndarray, expression: np.ndarray, pose: np.ndarray,
                   tier: str) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """The three graphs of one call: rgb (B,3,S,S), alpha (B,1,S,S) on the host as the refine graph gives
        them (channel-first, what a Triton render model answers), and the per-stage timings."""
        if tier not in self._tiers:
            raise InputError(f"unknown tier {tier!r}", f"one of {', '.join(self._tiers)}")
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        expression = np.ascontiguousarray(expression, dtype=np.float32)
        pose = np.ascontiguousarray(pose, dtype=np.float32)
        self._check_inputs(audio, expression, pose)
        timings: dict[str, float] = {}

        start = time.perf_counter()
        cond = self._run_graph(graph_key(CONDITION), {"audio": audio, "expression": expression})["cond"]
        self._synchronize()
        now = time.perf_counter()
        timings["eaa"], start = (now - start) * 1e3, now

        out = self._run_graph(graph_key(FIELD, tier), {"cond": cond, "pose": pose})
        self._synchronize()
        now = time.perf_counter()
        timings["field"], start = (now - start) * 1e3, now

        out = self._run_graph(graph_key(REFINE, tier), {"coarse_rgb": out["rgb"], "coarse_alpha": out["alpha"],
                                                         "coarse_feat": out["feat"]})
        self._synchronize()
        now = time.perf_counter()
        timings["refine"], start = (now - start) * 1e3, now
        rgb, alpha = self._to_host(out["rgb"]), self._to_host(out["alpha"])
        timings["download"] = (time.perf_counter() - start) * 1e3
        return rgb, alpha, timings


def crop_output(rgb: np.ndarray, alpha: np.ndarray, timings: dict[str, float]) -> RenderOutput:
    """Channel-first rgb (B,3,S,S), alpha (B,1,S,S) -> the protocol's channel-last crop, as *views*: the copy into
    contiguous memory (~2 ms for a 512 px frame) happens where the crop is composited, which in the streamer is
    its compositing thread, not the model thread that paces every frame (arrays returned by onnxruntime keep
    their OrtValue alive)."""
    return RenderOutput(rgb=rgb.transpose(0, 2, 3, 1), alpha=alpha.transpose(0, 2, 3, 1), timings_ms=timings)
