"""`prepare_dataset`: one pass over the video (track, segment, write frames and masks), then pose, expressions,
audio, plate, crops and manifest, all written into a temporary dir renamed into place at the very end."""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ideal.avatar.clock import DEFAULT_FPS
from ideal.avatar.errors import InputError
from ideal.avatar.expression import mouth_opening
from ideal.avatar.dataset_manifest import (Camera, Crop, DatasetAudio, DatasetManifest, Faces, Source, Split,
                                           write_dataset_manifest)
from ideal.avatar.manifest import DATASET_FORMAT_VERSION, atomic_output_dir, sha256_file
from ideal.avatar.prepare.crops import CropConfig, fixed_crop, head_boxes, time_split
from ideal.avatar.prepare.gaps import missing_runs
from ideal.avatar.prepare.offset import MIN_CONFIDENCE, decide_offset
from ideal.avatar.prepare.segment import PlateBuilder, SegmentConfig, Segmenter
from ideal.avatar.prepare.stats import pose_stats
from ideal.avatar.prepare.track import TrackConfig, TrackedClip, track_clip
from ideal.avatar.prepare.audio import fit_audio

log = logging.getLogger(__name__)

MIN_DURATION_S = 5.0  # a shorter clip cannot give a neutral face, a still stretch and a validation split
JPEG_QUALITY = 95


@dataclass(frozen=True)
class PrepareConfig:
    """The fields with a help text are `ideal prepare`'s options (ideal/configcli.py derives them)."""

    video: Path = field(metadata={"help": "the talking-head video (any container, 24-60 fps)"})
    output: Path = field(metadata={"help": "dataset directory to write"})
    audio: Path | None = field(default=None, metadata={
        "help": "speech file to use instead of the video's own audio track (sample 0 = first frame)"})
    fps: float = field(default=DEFAULT_FPS, metadata={"help": "output frame rate"})
    start: float | None = field(default=None, metadata={"help": "excerpt start in seconds"})
    duration: float | None = field(default=None, metadata={"help": "excerpt length in seconds"})
    preview: bool = field(default=False, metadata={
        "help": "also write preview/preview_sheet.png and preview/preview.mp4 to check tracking"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output directory"})
    av_offset_ms: float | None = field(default=None, metadata={
        "help": "force the audio/video offset to correct (positive: audio late)"})
    no_av_offset: bool = field(default=False, metadata={"help": "do not estimate or correct an A/V offset"})
    # weaker estimates are recorded, not applied
    av_offset_min_confidence: float = field(default=MIN_CONFIDENCE, metadata={
        "help": "apply an estimated A/V offset only at this correlation or above"})
    min_duration_s: float = field(default=MIN_DURATION_S, metadata={"help": "shortest accepted clip in seconds"})
    progress: bool = True
    track: TrackConfig = field(default_factory=TrackConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    crop: CropConfig = field(default_factory=CropConfig)


def _tool_versions() -> dict:
    import importlib.metadata as md

    from ideal import __version__

    out = {"ideal-nerf": __version__}
    for dist in ("mediapipe", "opencv-python", "opencv-python-headless", "opencv-contrib-python", "av", "numpy",
                 "scipy", "soxr", "librosa"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


class _FrameWriter:
    """The per-frame work of the single pass: JPEG frame, person segmentation, labels, plate samples."""

    def __init__(self, root: Path, width: int, height: int, expected: int, cfg: PrepareConfig) -> None:
        self.frames_dir = root / "frames"
        self.masks_dir = root / "masks"
        self.frames_dir.mkdir()
        self.masks_dir.mkdir()
        self.seg = Segmenter(width, height, cfg.segment)
        self.plate = PlateBuilder(width, height, expected, cfg.segment)
        self.deferred: dict[int, np.ndarray] = {}  # frames without a face: person prob, labelled afterwards
        # Image encoding runs on one worker thread (OpenCV releases the GIL) while the next frame is tracked.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-writer")
        self._pending: deque[Future] = deque()

    def _write(self, path: Path, img: np.ndarray, params: list[int]) -> None:
        import cv2

        while len(self._pending) >= 16:  # bound the memory held by queued frames
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(_imwrite, cv2, path, img, params))

    def __call__(self, i: int, rgb: np.ndarray, landmarks: np.ndarray | None) -> None:
        import cv2

        self._write(self.frames_dir / f"{i:06d}.jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        prob = self.seg.person(rgb)
        if landmarks is None:
            self.deferred[i] = (prob * 255).astype(np.uint8)
            return
        labels = self.seg.labels(prob, landmarks)
        self._write(self.masks_dir / f"{i:06d}.png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        self.plate.add(i, rgb, labels)

    def finish(self, landmarks: np.ndarray) -> None:
        """Label the faceless frames with their interpolated landmarks; wait for every write."""
        import cv2

        for i, prob in self.deferred.items():
            labels = self.seg.labels(prob.astype(np.float32) / 255.0, landmarks[i])
            self._write(self.masks_dir / f"{i:06d}.png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        self.close()

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)
            self.seg.close()


def _imwrite(cv2, path: Path, img: np.ndarray, params: list[int]) -> None:
    if not cv2.imwrite(str(path), img, params):
        raise OSError(f"{path}: could not write the image (disk full or not writable?)")


def _check_duration(cfg: PrepareConfig, seconds: float, what: str) -> None:
    if seconds < cfg.min_duration_s:
        raise InputError(f"{cfg.video}: {what} is {seconds:.1f} s, shorter than the {cfg.min_duration_s:g} s minimum",
                         "use a longer clip (minutes are better) or a longer --duration")


def prepare_dataset(cfg: PrepareConfig) -> DatasetManifest:
    """Run the whole stage; returns the manifest written to cfg.output/dataset.json."""
    from ideal.avatar.audio.features import MelConfig, compute_features
    from ideal.avatar.audio.io import write_wav
    from ideal.avatar.prepare.video import probe_video

    if not (0 < cfg.fps <= 120):
        raise InputError(f"--fps {cfg.fps:g} is out of range", "pass an output frame rate such as 25")
    info = probe_video(cfg.video)
    span = max(info.duration_s - (cfg.start or 0.0), 0.0)
    if cfg.duration:
        span = min(span, cfg.duration)
    _check_duration(cfg, span, "the clip" if not (cfg.start or cfg.duration) else "the selected excerpt")
    if info.audio_start_time_s is None and cfg.audio is None:
        raise InputError(f"{cfg.video}: has no audio track", "pass the speech separately with --audio FILE.wav")

    t_start = time.perf_counter()
    cpu_start = time.process_time()  # all threads of this process: a figure that survives a busy machine
    with atomic_output_dir(cfg.output, overwrite=cfg.overwrite) as tmp:
        writer = _FrameWriter(tmp, info.width, info.height, int(round(span * cfg.fps)), cfg)
        try:
            clip = track_clip(cfg.video, cfg.audio, cfg.fps, cfg.start, cfg.duration, cfg.track,
                              on_frame=writer, progress=cfg.progress)
        except BaseException:
            writer.close()
            raise
        writer.finish(clip.landmarks)
        _check_duration(cfg, clip.frame_count / clip.fps, "the decoded video")
        t_track = time.perf_counter()

        plate, plate_stats = writer.plate.build()
        if plate_stats["moving_camera_suspected"]:
            log.warning("%s: the background changes a lot (mean difference %.1f grey levels): the camera may be "
                        "moving; the avatar assumes a static camera", cfg.video, plate_stats["background_change"])
        import cv2

        cv2.imwrite(str(tmp / "background.png"), plate[:, :, ::-1])

        decision = decide_offset(clip.audio_16k, mouth_opening(clip.expression), clip.fps, cfg.av_offset_ms,
                                 cfg.no_av_offset, str(cfg.video), cfg.av_offset_min_confidence,
                                 valid=~clip.interpolated)
        # Re-fit from the source excerpt (which runs up to 1 s past the last frame): drop (or pad) the offset at
        # the start, then pad/trim the end to the frame count.
        audio, fit = fit_audio(clip.audio_source_16k, clip.frame_count, clip.fps, decision.offset_ms,
                               decision.method, decision.confidence, str(cfg.audio or cfg.video),
                               beyond_span=clip.audio_beyond_span)
        fit.offset_estimated_ms = decision.estimated_ms
        write_wav(tmp / "audio.wav", audio)
        mel_cfg = MelConfig()
        mel = compute_features(audio, mel_cfg)
        np.save(tmp / "mel.npy", mel)

        manifest = _write_arrays_and_manifest(tmp, cfg, clip, plate_stats, fit, mel_cfg, mel.shape)
        elapsed = time.perf_counter() - t_start
        cpu = time.process_time() - cpu_start
        manifest = replace(manifest, stats={
            **manifest.stats, "prepare_seconds": round(elapsed, 2),
            "tracking_pass_seconds": round(t_track - t_start, 2),
            "frames_per_second": round(clip.frame_count / elapsed, 1), "cpu_seconds": round(cpu, 2),
            "frames_per_cpu_second": round(clip.frame_count / cpu, 1)})
        write_dataset_manifest(tmp, manifest)
        if cfg.preview:
            from ideal.avatar.prepare.preview import write_preview

            write_preview(tmp, tmp / "preview", manifest)
    log.info("%s: %d frames prepared in %.1f s (%.1f frames/s) -> %s", cfg.video, clip.frame_count, elapsed,
             clip.frame_count / elapsed, cfg.output)
    return manifest


def _write_arrays_and_manifest(tmp: Path, cfg: PrepareConfig, clip: TrackedClip, plate_stats: dict, fit,
                               mel_cfg, mel_shape: tuple) -> DatasetManifest:
    from ideal.avatar.prepare.pose import rotation_to_euler

    n = clip.frame_count
    np.save(tmp / "landmarks.npy", clip.landmarks.astype(np.float32))
    np.save(tmp / "canonical.npy", clip.canonical.astype(np.float32))
    np.save(tmp / "neutral.npy", clip.neutral.astype(np.float32))
    np.save(tmp / "expression.npy", clip.expression.astype(np.float32))
    np.save(tmp / "interpolated.npy", clip.interpolated.astype(bool))
    P = clip.pose
    s = np.linalg.norm(P[:, :, 0], axis=1).astype(np.float32)
    R = (P[:, :, :3] / s[:, None, None]).astype(np.float32)
    np.savez(tmp / "pose.npz", pose=P.astype(np.float32), scale=s, rotation=R, translation=P[:, :, 3],
             euler_deg=rotation_to_euler(R), raw_pose=clip.raw_pose.astype(np.float32))
    boxes = head_boxes(clip.landmarks, clip.width, clip.height, cfg.crop)
    np.save(tmp / "head_boxes.npy", boxes)
    crop = Crop.from_dict(fixed_crop(boxes, clip.width, clip.height, cfg.crop))
    if not crop.contains_all_boxes:
        log.warning("%s: the head moves over more than the frame's short side; some frames' heads leave the crop",
                    cfg.video)
    detected = int((~clip.interpolated).sum())
    runs = missing_runs(~clip.interpolated)
    return DatasetManifest(
        format_version=DATASET_FORMAT_VERSION,
        fps=clip.fps,
        width=clip.width,
        height=clip.height,
        n_frames=n,
        duration_s=n / clip.fps,
        camera=Camera(
            model="weak_perspective", width=clip.width, height=clip.height,
            pose_convention="pixel = P[:, :3] @ c + P[:, 3], P = [s*R | t]; x right, y down, z away, z in pixels",
            canonical_unit="neutral face height (landmark 10 to 152)",
            canonical_origin="centroid of avatar.expression.RIGID_POINTS of the mean shape",
            pose_solver="generalised Procrustes (Umeyama, Cauchy-reweighted) on RIGID_POINTS; "
                        "Savitzky-Golay zero-phase smoothing",
        ),
        audio=DatasetAudio(file="audio.wav", sample_rate=16000, channels=1, mel=mel_cfg.to_dict(),
                           mel_frames=int(mel_shape[0]), source=str(cfg.audio or cfg.video), **fit.to_dict()),
        split=Split.from_dict(time_split(n, cfg.crop.val_fraction)),
        crop=crop,
        faces=Faces(detected=detected, interpolated=n - detected, detected_fraction=detected / n,
                    interpolated_ranges_s=[(a / clip.fps, b / clip.fps) for a, b in runs],
                    second_face_frames=int(clip.second_face.sum()) if clip.second_face is not None else 0),
        frames={"dir": "frames", "pattern": "%06d.jpg", "jpeg_quality": JPEG_QUALITY},
        masks={"dir": "masks", "pattern": "%06d.png", "labels": {"background": 0, "torso": 1, "head": 2}},
        source=Source(path=str(Path(cfg.video).resolve()), sha256=sha256_file(cfg.video),
                      audio_path=str(Path(cfg.audio).resolve()) if cfg.audio else None,
                      audio_sha256=sha256_file(cfg.audio) if cfg.audio else None,
                      source_fps=clip.info.source_fps, codec=clip.info.codec,
                      start_s=clip.start_s, duration_s=cfg.duration),
        settings={"smoothing": cfg.track.smoothing.to_dict(), "max_gap_s": cfg.track.max_gap_s,
                  "segment": asdict(cfg.segment), "crop": asdict(cfg.crop)},
        tools=_tool_versions(),
        stats={"pose": pose_stats(clip.raw_pose, clip.pose, clip.fps), "background": plate_stats, **clip.stats},
    )
