"""`ideal`: the single command line of the project.

Each stage lives in its own module exposing `add_arguments(parser)` and `run(args) -> int | None`. Stage
modules import their heavy dependencies (torch, mediapipe, aiortc) inside `run`, so `ideal --help` and every
`ideal STAGE --help` stay fast and never need a GPU library.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ideal.avatar.errors import IdealError

# name -> (module, one-line help). Order is the order of the data flow.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("ideal.avatar.prepare.cli", "turn a talking-head video into a training dataset"),
    "train": ("ideal.avatar.training.cli", "train an IDEAL-NeRF avatar from a prepared dataset"),
    "occupancy": ("ideal.avatar.occupancy_cli",
                  "measure where an avatar's head can be, so tiers render only those rays"),
    "evaluate": ("ideal.avatar.evaluation.cli", "held-out metrics of an avatar (reconstruction and audio-driven)"),
    "dub": ("ideal.avatar.dub", "render an avatar speaking any audio, optionally driven by another person's clip"),
    "mouth": ("ideal.avatar.mouth.cli", "train or evaluate the speaker-independent audio-to-mouth model"),
    "export": ("ideal.export.cli", "export an avatar to ONNX graphs and TensorRT engines"),
    "triton": ("ideal.export.triton_server", "a local Triton Inference Server for an avatar's render models "
               "(development, tests)"),
    "serve": ("ideal.server.cli", "serve avatars over WebRTC to the browser client"),
    "bench": ("ideal.bench.cli", "benchmark latency and throughput (offline, realtime, webrtc)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ideal",
        description="ideal-nerf: real-time talking-head avatars. Data flows prepare -> train -> export -> serve.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().split("\n\n")[0])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        code = args._run(args)
    except IdealError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
