"""Export an avatar to per-stage ONNX graphs and TensorRT engines, written beside the avatar (AVATAR/exported/)
or, when the avatar dir is read-only (the built-in one), into a user cache.

  ideal export AVATAR --target onnx              graphs for ONNX Runtime (CPU machine)
  ideal export AVATAR --target tensorrt --fp16   graphs + one TensorRT engine per graph for this GPU
  ideal export AVATAR --target all               everything this machine can build (says what it skipped)
  ideal export AVATAR --target triton -o REPO    a Triton Inference Server model repository (docs/triton.md)
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

TARGETS = ("onnx", "tensorrt", "all", "triton")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ideal.export.onnx_export import ExportConfig
    from ideal.export.tensorrt_build import DEFAULT_WORKSPACE_GB

    from ideal.configcli import add_options

    parser.add_argument("avatar", nargs="?", default="default",
                        help="avatar dir written by `ideal train` (default: the built-in avatar)")
    parser.add_argument("--target", choices=TARGETS, default="onnx", help="what to build (default onnx)")
    parser.add_argument("--fp16", action="store_true", help="TensorRT engines in FP16 (accumulations kept FP32)")
    options = add_options(parser, ExportConfig,
                          fields=("tiers", "batch_max", "batch_opt", "exporter", "plane_lookup", "mouth", "int8"),
                          flags={"batch_max": "--max-batch", "batch_opt": "--opt-batch"}, metavars={"tiers": "TIER"})
    parser.add_argument("--force", action="store_true", help="rebuild TensorRT engines even when current")
    parser.add_argument("--workspace-gb", type=float, default=DEFAULT_WORKSPACE_GB,
                        help=f"TensorRT builder workspace in GiB (default {DEFAULT_WORKSPACE_GB:g})")
    from ideal.export.triton_models import Deployment

    triton = parser.add_argument_group("triton", "--target triton: a model repository for Triton Inference Server")
    triton.add_argument("-o", "--output", metavar="REPO", help="model repository dir (created; other avatars' models "
                        "in it are kept)")
    triton_options = add_options(triton, Deployment, fields=("device", "instances", "queue_delay_us"),
                                 flags={"device": "--triton-device"}, dests={"device": "triton_device"})
    parser.set_defaults(_export_options=options, _triton_options=triton_options)


def _tensorrt_ready(fp16: bool) -> str | None:
    """None when this machine can build engines, else why not (checked before any work is done)."""
    from ideal.avatar.errors import BackendError
    from ideal.export.tensorrt_build import current_target, import_tensorrt

    try:
        current_target(import_tensorrt(), fp16)
    except BackendError as exc:
        return str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    from ideal.avatar.avatar_manifest import load_avatar_manifest
    from ideal.avatar.errors import BackendError, InputError
    from ideal.avatar.manifest import resolve_avatar
    from ideal.avatar.progress import progress_bar
    from ideal.export.artifacts import export_dir_for, load_export_manifest
    from ideal.export.onnx_export import export_avatar

    avatar_dir = resolve_avatar(args.avatar)
    load_avatar_manifest(avatar_dir)  # a missing / old-format avatar fails here with the command that fixes it
    cfg = args._export_options.build(args)
    if not 1 <= cfg.batch_opt <= cfg.batch_max:
        raise InputError(f"--opt-batch {cfg.batch_opt} / --max-batch {cfg.batch_max}",
                         "need 1 <= opt-batch <= max-batch")
    if args.target == "triton" and not args.output:
        raise InputError("--target triton needs -o REPO", "e.g. ideal export AVATAR --target triton -o models")
    if args.instances < 1:
        raise InputError(f"--instances {args.instances}", "use 1 or more")
    want_trt = args.target in ("tensorrt", "all")
    trt_problem = _tensorrt_ready(args.fp16) if want_trt else None
    if args.target == "tensorrt" and trt_problem:
        raise BackendError(f"cannot build TensorRT engines on this machine: {trt_problem}")

    need_onnx = args.target in ("onnx", "all") or _stale_or_missing(avatar_dir, load_export_manifest, cfg)
    if need_onnx:
        with progress_bar(desc="export onnx", unit="graph") as bar:
            directory, manifest = export_avatar(avatar_dir, cfg, progress=lambda key: (bar.set_postfix_str(key),
                                                                                        bar.update(1)))
        _print_graphs(directory, manifest)
    else:
        directory = export_dir_for(avatar_dir)
        print(f"ONNX graphs in {directory} are current")

    if args.target == "triton":
        _write_triton(avatar_dir, args, cfg)
    if want_trt:
        if trt_problem:
            print(f"tensorrt: skipped ({trt_problem})")
        else:
            from ideal.export.tensorrt_build import build_engines

            engines = build_engines(avatar_dir, fp16=args.fp16, tiers=cfg.tiers, force=args.force,
                                    workspace_gb=args.workspace_gb)
            for path in engines:
                print(f"engine  {path}")
    return 0


def _write_triton(avatar_dir, args: argparse.Namespace, cfg) -> None:
    from ideal.export.triton_export import export_triton_repository

    deployment = args._triton_options.build(args, fp16=args.fp16)
    entry = export_triton_repository(avatar_dir, args.output, deployment,
                                     tiers=list(cfg.tiers) if cfg.tiers else None, max_batch_size=cfg.batch_max)
    print(f"triton model repository {args.output} ({deployment.device}, max batch {entry['max_batch_size']}, "
          f"queue delay {deployment.queue_delay_us} us):")
    for name, model in entry["models"].items():
        runs = model.get("runs") if "ensemble" not in model else "ensemble of " + " -> ".join(model["ensemble"])
        print(f"  {name:<28} {runs}")


def _stale_or_missing(avatar_dir, load_export_manifest, cfg) -> bool:
    from ideal.avatar.errors import BackendError

    try:
        _, manifest = load_export_manifest(avatar_dir)
    except BackendError:
        return True
    return bool(cfg.tiers) and any(t not in manifest.tiers for t in cfg.tiers)


def _print_graphs(directory, manifest) -> None:
    diffs = manifest.validation.get("max_abs_diff", {})
    print(f"exported to {directory} (opset {manifest.opset}, batch {manifest.batch['min']}..{manifest.batch['max']})")
    print(f"{'graph':<18} {'inputs':<48} {'MB':>6} {'max|ort-torch|':>15}")
    for key, info in manifest.graphs.items():
        ins = ", ".join(f"{n}{tuple(s)}" for n, s in info.inputs.items()).replace("'", "")
        size = (directory / info.file).stat().st_size / 1e6
        diff = f"{diffs[key]:.1e}" if key in diffs else "-"
        print(f"{key:<18} {ins[:48]:<48} {size:6.2f} {diff:>15}")
    int8 = manifest.validation.get("int8_vs_fp32", {})
    if int8:
        print("INT8 refiners (ONNX Runtime on CPU) against their FP32 graphs, on renders not used to calibrate: "
              + ", ".join(f"{k.split('.')[1]} {v['psnr_db']:.1f} dB (max |diff| {v['max_abs_diff']:.3f})"
                          for k, v in int8.items()))
