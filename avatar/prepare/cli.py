"""Turn a talking-head video into a training dataset: tracking, head pose, expressions, audio features,
masks, background plate, crops and a manifest.

Example: ideal prepare clip.mp4 -o datasets/me --preview
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="the talking-head video (any container, 24-60 fps)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="dataset directory to write")
    parser.add_argument("--audio", type=Path, default=None,
                        help="speech file to use instead of the video's own audio track (sample 0 = first frame)")
    parser.add_argument("--fps", type=float, default=25.0, help="output frame rate (default 25)")
    parser.add_argument("--start", type=float, default=None, help="excerpt start in seconds")
    parser.add_argument("--duration", type=float, default=None, help="excerpt length in seconds")
    parser.add_argument("--preview", action="store_true",
                        help="also write preview/preview_sheet.png and preview/preview.mp4 to check tracking")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--max-gap-s", type=float, default=0.5,
                        help="longest run of frames without a face that is interpolated (default 0.5 s)")
    parser.add_argument("--min-duration-s", type=float, default=5.0, help="shortest accepted clip (default 5 s)")
    off = parser.add_mutually_exclusive_group()
    off.add_argument("--av-offset-ms", type=float, default=None,
                     help="force the audio/video offset to correct (positive: audio late)")
    off.add_argument("--no-av-offset", action="store_true", help="do not estimate or correct an A/V offset")
    parser.add_argument("--av-offset-min-confidence", type=float, default=0.3,
                        help="apply an estimated A/V offset only at this correlation or above (default 0.3)")


def run(args: argparse.Namespace) -> int:
    import logging

    from ideal.avatar.prepare.dataset import PrepareConfig, prepare_dataset
    from ideal.avatar.prepare.track import TrackConfig

    cfg = PrepareConfig(
        video=args.video, output=args.output, audio=args.audio, fps=args.fps, start=args.start,
        duration=args.duration, preview=args.preview, overwrite=args.overwrite, av_offset_ms=args.av_offset_ms,
        no_av_offset=args.no_av_offset,
        av_offset_min_confidence=args.av_offset_min_confidence, min_duration_s=args.min_duration_s,
        progress=logging.getLogger().getEffectiveLevel() <= logging.INFO,
        track=TrackConfig(max_gap_s=args.max_gap_s))
    m = prepare_dataset(cfg)
    f, a = m.faces, m.audio
    print(f"{args.output}: {m.n_frames} frames at {m.fps:g} fps, faces detected on {f.detected} "
          f"({f.detected_fraction:.1%}), interpolated {f.interpolated}, A/V offset "
          f"{a.av_offset_ms:+.0f} ms ({a.av_offset_method}), audio padded {a.padded_samples / 16:.0f} ms "
          f"/ trimmed {a.trimmed_samples / 16:.0f} ms, {m.stats['frames_per_second']:.1f} frames/s")
    return 0
