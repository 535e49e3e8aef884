"""Training/evaluation clips for the mouth model: audio + tracked mouth slice, cached.

Labels come from the prepare stage's tracker (`avatar.prepare.track_clip`); this module only selects the
mouth slice, keeps the raw (uncorrected) audio and caches both as npz, keyed by the input files' hashes, so
repeated training runs and benchmarks never re-track a video.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ideal.avatar.clock import SAMPLE_RATE
from ideal.avatar.errors import InputError
from ideal.avatar.expression import SLICES
from ideal.avatar.manifest import sha256_file

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
AUDIO_EXTS = (".wav", ".flac", ".m4a", ".mp3")
MIN_SECONDS = 2.0
MAX_INTERPOLATED = 0.5


@dataclass
class MouthClip:
    """One talking-head clip reduced to what the mouth model needs (on the tracker's frame clock)."""

    name: str
    speaker: str
    fps: float
    mouth: np.ndarray  # (N, 10) tracked mouth slice
    valid: np.ndarray  # (N,) bool: face actually tracked (not interpolated)
    audio: np.ndarray  # (S,) float32 16 kHz mono, as recorded (no offset correction)
    key: str  # content hash of the inputs (cache and manifest)

    @property
    def mouth_open(self) -> np.ndarray:
        return self.mouth[:, 0]

    @property
    def duration(self) -> float:
        return len(self.mouth) / self.fps


def default_cache_dir() -> Path:
    env = os.environ.get("IDEAL_MOUTH_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ideal-nerf" / "mouth"


def speaker_of(path: Path) -> str:
    """Speaker name guessed from a file name: the first word (obama_20s, Obama_clip2 -> obama)."""
    return re.split(r"[_\-\s.]", path.stem.lower())[0] or path.stem.lower()


def find_clips(inputs: list[str | Path]) -> list[tuple[Path, Path | None]]:
    """Videos named directly or found in folders, each with its same-name audio file if one exists.

    Returns (video, audio or None) pairs; None means the video's own audio track is used."""
    videos: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            videos += sorted(p for p in item.iterdir() if p.suffix.lower() in VIDEO_EXTS)
        elif item.exists():
            if item.suffix.lower() not in VIDEO_EXTS:
                raise InputError(f"{item}: not a video file", f"pass videos ({', '.join(VIDEO_EXTS)}) or folders")
            videos.append(item)
        else:
            raise InputError(f"{item}: no such file or folder", "check the path")
    if not videos:
        raise InputError(f"no videos found in {', '.join(map(str, inputs))}",
                         f"pass talking-head videos ({', '.join(VIDEO_EXTS)}) or folders holding them")
    pairs = []
    for v in videos:
        audio = next((v.with_suffix(e) for e in AUDIO_EXTS if v.with_suffix(e).exists()), None)
        pairs.append((v, audio))
    return pairs


def _has_audio_track(path: Path) -> bool:
    import av

    with av.open(str(path)) as c:
        return bool(c.streams.audio)


def load_clip(video: str | Path, audio: str | Path | None = None, speaker: str | None = None,
              cache_dir: Path | None = None) -> MouthClip:
    """Track a clip's mouth (cached) and load its audio. Raises InputError for no audio / no face / too short."""
    video = Path(video)
    if not video.exists():
        raise InputError(f"{video}: no such file", "check the path")
    audio_path = Path(audio) if audio is not None else video
    if audio is None and not _has_audio_track(video):
        raise InputError(f"{video}: has no audio track and no same-name .wav beside it",
                         "put the speech next to it as NAME.wav")
    cache_dir = cache_dir or default_cache_dir()
    key = sha256_file(video)[:16] + ("" if audio is None else "-" + sha256_file(audio_path)[:16])
    cache = cache_dir / f"{video.stem}-{key}.npz"
    if cache.exists():
        z = np.load(cache)
        mouth, valid, fps, pcm = z["mouth"], z["valid"], float(z["fps"]), z["audio"]
    else:
        mouth, valid, fps, pcm = _track(video, audio_path if audio is not None else None)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, mouth=mouth, valid=valid, fps=fps, audio=pcm)
        os.replace(tmp, cache)
    if len(pcm) < MIN_SECONDS * SAMPLE_RATE or len(mouth) < MIN_SECONDS * fps:
        raise InputError(f"{video}: too short ({min(len(pcm) / SAMPLE_RATE, len(mouth) / fps):.1f} s)",
                         f"pass clips of at least {MIN_SECONDS:.0f} s of speech")
    if np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) < 1e-4:
        raise InputError(f"{audio_path}: the audio is silent", "pass a clip in which the person speaks")
    if valid.mean() < 1.0 - MAX_INTERPOLATED:
        raise InputError(f"{video}: a face was tracked in only {100 * valid.mean():.0f}% of the frames",
                         "pass a video with one visible, mostly frontal face")
    return MouthClip(name=video.stem, speaker=speaker or speaker_of(video), fps=fps, mouth=mouth,
                     valid=valid, audio=pcm, key=key)


def _track(video: Path, audio: Path | None) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    from ideal.avatar.prepare import track_clip  # the prepare stage owns face tracking

    log.info("tracking %s (cached afterwards)", video.name)
    tracked = track_clip(video, audio_path=audio)
    expression = np.asarray(tracked.expression, dtype=np.float32)
    mouth = expression[:, SLICES["mouth"].indices]
    interp = getattr(tracked, "interpolated", None)
    valid = ~np.asarray(interp, dtype=bool) if interp is not None else np.ones(len(mouth), bool)
    # the tracker's audio honours container start times and is fitted to the frame count
    return mouth, valid, float(tracked.fps), np.asarray(tracked.audio_16k, dtype=np.float32)


def shared_clips(data_root: Path) -> list[tuple[Path, Path | None]]:
    """The multi-speaker clips with audio in ../shared/data (see its README)."""
    names = ["train/obama_20s.mp4", "train/macron_50s.mp4", "train/german_anchor_20s.mp4", "drivers/aoc_8s.mp4",
             "drivers/Obama_clip2.mp4", "drivers/andrew_clip_2.mp4", "drivers/reagan_clip1.mp4"]
    out = []
    for n in names:
        v = data_root / n
        wav = v.with_suffix(".wav")
        out.append((v, wav if wav.exists() else None))
    return out


def shared_speaker_clips(data_root: Path) -> list[tuple[Path, Path | None, str]]:
    """Every clip with audio in ../shared/data for the mouth model: (video, audio or None, speaker).

    The seven clips of `shared_clips` (Obama's two grouped) and the one-person-per-file clips of speakers/
    (its README: every file is a different person, none of them in train/ or drivers/)."""
    out = [(v, a, speaker_of(v)) for v, a in shared_clips(data_root)]
    folder = data_root / "speakers"
    if folder.is_dir():
        out += [(v, a, v.stem.lower()) for v, a in find_clips([folder])]
    return out
