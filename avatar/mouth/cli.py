"""Train or evaluate the speaker-independent audio-to-mouth model.

  ideal mouth train --data DIR_OR_VIDEOS... -o MODEL_DIR     retrain on your own talking-head videos
  ideal mouth evaluate [--model DIR] VIDEO...                r of predicted vs tracked mouth opening
  ideal mouth calibrate AVATAR --dataset DATASET             fit the avatar's mouth range (ideal train does it)

Videos need speech: their own audio track, or a same-name .wav/.flac/.m4a beside them. Each clip's A/V
offset is estimated and corrected before training (reported per clip; past 80 ms it is logged as a warning).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ideal.avatar.mouth.augmentation import AugmentConfig
    from ideal.avatar.mouth.config import (
        DEFAULT_FEATURE,
        DEFAULT_MEMBERS,
        DEFAULT_WINDOW,
        MouthTrainConfig,
        NetConfig,
        PipelineConfig,
    )
    from ideal.avatar.mouth.features import FEATURE_KINDS

    from ideal.configcli import add_options

    sub = parser.add_subparsers(dest="mouth_command", metavar="ACTION")
    tr = sub.add_parser("train", help="train a mouth model on talking-head videos",
                        description="Train the audio-to-mouth model on a folder of talking-head videos (each "
                                    "with audio, or with a same-name .wav). Several speakers generalise best.")
    tr.add_argument("--data", nargs="+", required=True, metavar="DIR_OR_VIDEO", help="videos or folders of videos")
    tr.add_argument("-o", "--output", type=Path, required=True, help="model directory to write")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    tr.add_argument("--features", choices=FEATURE_KINDS, default=DEFAULT_FEATURE,
                    help=f"input features (default {DEFAULT_FEATURE}: the benchmark's choice)")
    tr.add_argument("--lookahead-ms", type=float, default=DEFAULT_WINDOW.lookahead_ms,
                    help=f"audio lookahead (latency) in ms (default {DEFAULT_WINDOW.lookahead_ms:g})")
    train = add_options(tr, MouthTrainConfig, fields=("steps",))
    net = add_options(tr, NetConfig, fields=("members",), base=NetConfig(members=DEFAULT_MEMBERS))
    augment = add_options(tr, AugmentConfig, fields=("n_variants",), flags={"n_variants": "--variants"})
    pipeline = add_options(tr, PipelineConfig, fields=("bootstrap_rounds", "gate_min_r", "gate_min_margin", "loso"))
    tr.set_defaults(_mouth_train_options=(train, augment, pipeline, net))
    tr.add_argument("--offsets", type=Path, default=None,
                    help="known A/V offsets instead of the bootstrap: a json {clip name: ms} or a mouth.json")
    tr.add_argument("--speakers", type=Path, default=None,
                    help="json {clip name: speaker}: who speaks in which clip (default: the first word of the "
                         "file name, obama_20s -> obama); leave-one-speaker-out holds out each speaker's clips")
    tr.add_argument("--cache", type=Path, default=None, help="tracking/feature cache directory")
    ev = sub.add_parser("evaluate", help="r of predicted vs tracked mouth opening on videos",
                        description="Track each video's mouth, predict it from the audio alone and report Pearson "
                                    "r (at the recorded alignment and after the estimated A/V offset).")
    ev.add_argument("videos", nargs="+", type=Path, metavar="VIDEO")
    ev.add_argument("--model", type=Path, default=None, help="mouth model directory (default: the shipped one)")
    ev.add_argument("--cache", type=Path, default=None, help="tracking cache directory")
    ca = sub.add_parser("calibrate", help="scale the mouth model's output to an avatar's own mouth range",
                        description="Fit the avatar's mouth calibration (per mouth field: RMS of the tracked mouth "
                                    "over RMS of the mouth model's output, on the training frames' speech; the rest "
                                    "mouth, its mean in their silence) from the "
                                    "dataset it was trained on, and write it into its avatar.json. `ideal train` "
                                    "does this; use it for avatars trained before, or after a new mouth model.")
    ca.add_argument("avatar", type=Path, help="avatar dir to update")
    ca.add_argument("--dataset", type=Path, required=True, help="the dataset dir the avatar was trained on")
    ca.add_argument("--model", type=Path, default=None, help="mouth model directory (default: the shipped one)")
    parser.set_defaults(_mouth_parser=parser)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "mouth_command", None) is None:
        args._mouth_parser.print_help()
        return 1
    if args.mouth_command == "calibrate":
        return _calibrate(args)
    return _train(args) if args.mouth_command == "train" else _evaluate(args)


def _calibrate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import numpy as np
    from ideal.avatar.avatar_manifest import load_avatar_manifest, write_avatar_manifest
    from ideal.avatar.dataset_manifest import load_dataset_manifest
    from ideal.avatar.errors import InputError
    from ideal.avatar.mouth.calibration import calibration_from_dataset
    from ideal.avatar.mouth.model import load_mouth_model

    manifest = load_avatar_manifest(args.avatar)
    dataset = load_dataset_manifest(args.dataset)
    if dataset.n_frames != manifest.n_frames:
        raise InputError(f"--dataset {args.dataset}: {dataset.n_frames} frames, the avatar was trained on "
                         f"{manifest.n_frames} ({manifest.training.dataset or 'another dataset'})",
                         "pass the dataset dir the avatar was trained on")
    frames = np.arange(*manifest.training.split.train)
    cal = calibration_from_dataset(args.dataset, load_mouth_model(args.model), frames)
    path = write_avatar_manifest(Path(args.avatar), replace(manifest, mouth_calibration=cal))
    print(f"{path}: mouth calibration from {cal.speech_frames} speech frames: "
          + " ".join(f"{s:.2f}" for s in cal.scale)
          + f"; rest mouth from {cal.silent_frames} silent frames: opening {cal.rest[0]:.2f}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ideal.avatar.audio.features import AudioWindow
    from ideal.avatar.errors import InputError
    from ideal.avatar.mouth.config import DEFAULT_WINDOW
    from ideal.avatar.mouth.features import FeatureSpec
    from ideal.avatar.mouth.pipeline import load_clips, read_clip_gate, read_offsets, read_speakers, train_from_clips

    if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
        raise InputError(f"{args.output}: already exists and is not empty", "pass --overwrite or choose another -o")
    if not 0 <= args.lookahead_ms <= 500:
        raise InputError(f"--lookahead-ms {args.lookahead_ms}: out of range", "use 0..500 ms")
    train, augment, pipeline, net = args._mouth_train_options
    cfg = pipeline.build(args, spec=FeatureSpec(args.features), window=AudioWindow(DEFAULT_WINDOW.length,
                                                                                  args.lookahead_ms),
                         train=train.build(args), augment=augment.build(args), net=net.build(args))
    speakers = read_speakers(args.speakers) if args.speakers else None
    clips = load_clips(args.data, cache_dir=args.cache, speakers=speakers)
    known = read_offsets(args.offsets) if args.offsets else None
    gate = read_clip_gate(args.offsets) if args.offsets else None
    info = train_from_clips(clips, args.output, cfg, overwrite=args.overwrite, cache_dir=args.cache,
                            known_offsets=known, known_gate=gate)
    used = info["training_data"]
    print(f"wrote {args.output} ({len(used)} clips, {len({d['speaker'] for d in used})} speakers)")
    for name, why in info["left_out"].items():
        print(f"  {name:24s} LEFT OUT by the quality gate: {why}")
    for d in info["training_data"]:
        print(f"  {d['name']:24s} speaker={d['speaker']:10s} frames={d['frames']:5d} "
              f"A/V offset={d['av_offset_ms']:+6.0f} ms  "
              f"train r={info['metrics']['train_mouth_open_r'][d['name']]:.2f}")
    loso = info["metrics"].get("loso_mouth_open_r")
    if loso:
        print("  leave-one-speaker-out r: " + ", ".join(f"{k}={v:.2f}" for k, v in loso["per_speaker"].items())
              + f"; mean {loso['mean']:.2f}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np
    from ideal.avatar.evaluation.face_metrics import pearson
    from ideal.avatar.mouth.data import find_clips, load_clip
    from ideal.avatar.mouth.inference import predict_frames
    from ideal.avatar.mouth.model import load_mouth_model
    from ideal.avatar.mouth.offset import estimate_offset

    model = load_mouth_model(args.model)
    rs = []
    print(f"{'clip':24s} {'frames':>6s} {'r':>6s} {'offset_ms':>9s} {'r@offset':>8s}")
    for video, audio in find_clips([str(v) for v in args.videos]):
        clip = load_clip(video, audio, cache_dir=args.cache)
        pred = predict_frames(model, clip.audio, len(clip.mouth), clip.fps)[:, 0]
        r = pearson(pred[clip.valid], clip.mouth_open[clip.valid])
        est = estimate_offset(clip.audio, clip.mouth_open, clip.fps, model=model, valid=clip.valid)
        pred_c = predict_frames(model, clip.audio, len(clip.mouth), clip.fps, offset_ms=est.offset_ms)[:, 0]
        r_c = pearson(pred_c[clip.valid], clip.mouth_open[clip.valid])
        rs.append(r)
        flag = "  (out of sync)" if est.needs_warning else ""
        print(f"{clip.name:24s} {len(clip.mouth):6d} {r:6.3f} {est.offset_ms:+9.0f} {r_c:8.3f}{flag}")
    if len(rs) > 1:
        print(f"{'mean':24s} {'':6s} {np.mean(rs):6.3f}")
    return 0
