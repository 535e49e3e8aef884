"""`--preview`: a contact sheet PNG and a short MP4 with landmarks, pose axes, boxes and masks drawn, to check
the tracking at a glance. Reads the finished dataset arrays and frames (never changes them)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ideal.avatar.dataset_manifest import Crop, DatasetManifest

log = logging.getLogger(__name__)

HEAD_TINT = np.array([255, 60, 60], np.float32)
TORSO_TINT = np.array([60, 200, 255], np.float32)


def annotate(rgb: np.ndarray, labels: np.ndarray, landmarks: np.ndarray, pose: np.ndarray,
             box: np.ndarray, crop: Crop, interpolated: bool, caption: str, zoom: float = 1.0) -> np.ndarray:
    """One frame with mask tint, landmarks (irises highlighted), pose axes, head box and crop drawn, at
    `zoom` times the frame size (drawing after resizing keeps the dots visible on small tiles)."""
    import cv2

    x0, y0, x1, y1 = crop.x0, crop.y0, crop.x1, crop.y1
    if zoom != 1.0:
        size = (int(round(rgb.shape[1] * zoom)), int(round(rgb.shape[0] * zoom)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        landmarks, pose, box = landmarks * zoom, pose * zoom, np.asarray(box) * zoom
        x0, y0, x1, y1 = (int(round(v * zoom)) for v in (x0, y0, x1, y1))
    img = rgb.astype(np.float32)
    for lab, tint in ((2, HEAD_TINT), (1, TORSO_TINT)):
        m = labels == lab
        img[m] = 0.7 * img[m] + 0.3 * tint
    img = img.astype(np.uint8).copy()
    scale = max(1, rgb.shape[0] // 500)
    col = (255, 160, 0) if interpolated else (0, 255, 0)
    dot = 1 if img.shape[0] >= 400 else 0  # single pixels vanish in the H.264 preview at full size
    for x, y in np.round(landmarks[:468, :2]).astype(int):
        cv2.circle(img, (int(x), int(y)), dot, col, -1)
    for x, y in np.round(landmarks[468:, :2]).astype(int):
        cv2.circle(img, (int(x), int(y)), 1, (255, 255, 0), -1)
    # Pose axes from the canonical origin, 0.3 face heights long: x red, y green, z blue.
    o = pose[:, 3]
    for axis, c in ((0, (255, 0, 0)), (1, (0, 255, 0)), (2, (0, 0, 255))):
        e = o + 0.3 * pose[:, axis]
        cv2.line(img, tuple(np.round(o[:2]).astype(int)), tuple(np.round(e[:2]).astype(int)), c, 2 * scale)
    cv2.rectangle(img, (int(box[0]), int(box[1])), (int(box[2]) - 1, int(box[3]) - 1), (255, 255, 255), 1)
    cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (255, 0, 255), 1)
    cv2.putText(img, caption, (6, 18 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 255), scale,
                cv2.LINE_AA)
    return img


def _frame(dataset: Path, i: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    rgb = cv2.imread(str(dataset / "frames" / f"{i:06d}.jpg"))[:, :, ::-1]
    labels = cv2.imread(str(dataset / "masks" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
    return rgb, labels


def write_preview(dataset: Path, out_dir: Path, manifest: DatasetManifest, n_tiles: int = 12,
                  video_s: float = 6.0) -> list[Path]:
    """Writes out_dir/preview_sheet.png and out_dir/preview.mp4; returns their paths."""
    import av
    import cv2

    lm = np.load(dataset / "landmarks.npy")
    pose = np.load(dataset / "pose.npz")["pose"]
    boxes = np.load(dataset / "head_boxes.npy")
    interp = np.load(dataset / "interpolated.npy")
    crop, fps, n = manifest.crop, manifest.fps, manifest.n_frames
    # Interpolated frames are shown first when there are any, so the weakest tracking gets looked at.
    picks = list(np.linspace(0, n - 1, n_tiles).round().astype(int))
    gaps = np.flatnonzero(interp)
    if len(gaps):
        picks[1:1 + min(3, len(gaps))] = gaps[np.linspace(0, len(gaps) - 1, min(3, len(gaps))).astype(int)]
    h, w = manifest.height, manifest.width
    tw = 320
    th = int(round(h * tw / w))
    tiles = []
    for i in sorted(set(int(p) for p in picks)):
        rgb, labels = _frame(dataset, i)
        cap = f"#{i} {i / fps:.2f}s" + (" interp" if interp[i] else "")
        tile = annotate(rgb, labels, lm[i], pose[i], boxes[i], crop, bool(interp[i]), cap, zoom=tw / w)
        tiles.append(cv2.resize(tile, (tw, th)))
    plate = cv2.imread(str(dataset / "background.png"))[:, :, ::-1]
    plate = np.ascontiguousarray(cv2.resize(plate, (tw, th), interpolation=cv2.INTER_AREA))
    cv2.putText(plate, "background plate", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    tiles.append(plate)
    cols = 4
    rows = int(np.ceil(len(tiles) / cols))
    sheet = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = t
    out_dir.mkdir(parents=True, exist_ok=True)
    sheet_path = out_dir / "preview_sheet.png"
    cv2.imwrite(str(sheet_path), sheet[:, :, ::-1])

    video_path = out_dir / "preview.mp4"
    n_video = min(n, int(round(video_s * fps)))
    with av.open(str(video_path), "w") as out:
        st = out.add_stream("libx264", rate=int(round(fps)))
        st.width, st.height = w - w % 2, h - h % 2
        st.pix_fmt = "yuv420p"
        st.options = {"crf": "23", "preset": "veryfast"}
        for i in range(n_video):
            rgb, labels = _frame(dataset, i)
            img = annotate(rgb, labels, lm[i], pose[i], boxes[i], crop, bool(interp[i]), f"#{i} {i / fps:.2f}s")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:st.height, :st.width]), format="rgb24")
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    log.info("preview: %s, %s", sheet_path, video_path)
    return [sheet_path, video_path]
