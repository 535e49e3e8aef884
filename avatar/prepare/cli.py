"""Turn a talking-head video into a training dataset: tracking, head pose, expressions, audio features,
masks, background plate, crops and a manifest.

Example: ideal prepare clip.mp4 -o datasets/me --preview
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ideal.avatar.prepare.dataset import PrepareConfig
    from ideal.avatar.prepare.track import TrackConfig

    from ideal.configcli import add_options

    prepare = add_options(parser, PrepareConfig, flags={"video": "video", "output": ("-o", "--output")},
                          fields=("video", "output", "audio", "fps", "start", "duration", "preview", "overwrite",
                                  "min_duration_s", "av_offset_min_confidence"))
    # a forced offset and no offset exclude each other
    offset = add_options(parser.add_mutually_exclusive_group(), PrepareConfig, fields=("av_offset_ms", "no_av_offset"))
    track = add_options(parser, TrackConfig, fields=("max_gap_s",))
    parser.set_defaults(_prepare_options=(prepare, offset), _track_options=track)


def run(args: argparse.Namespace) -> int:
    import logging

    from ideal.avatar.prepare.dataset import PrepareConfig, prepare_dataset

    values = {k: v for options in args._prepare_options for k, v in options.values(args).items()}
    cfg = PrepareConfig(**values, progress=logging.getLogger().getEffectiveLevel() <= logging.INFO,
                        track=args._track_options.build(args))
    m = prepare_dataset(cfg)
    f, a = m.faces, m.audio
    print(f"{args.output}: {m.n_frames} frames at {m.fps:g} fps, faces detected on {f.detected} "
          f"({f.detected_fraction:.1%}), interpolated {f.interpolated}, A/V offset "
          f"{a.av_offset_ms:+.0f} ms ({a.av_offset_method}), audio padded {a.padded_samples / 16:.0f} ms "
          f"/ trimmed {a.trimmed_samples / 16:.0f} ms, {m.stats['frames_per_second']:.1f} frames/s")
    return 0
