"""Serve avatars over WebRTC: open the printed URL, allow the microphone, and appear as the avatar.

`ideal serve` starts the built-in avatar; `/?room=NAME` joins a room where several browsers see and hear each
other's avatars. Browsers allow the microphone only on https or localhost: for other machines pass --cert/--key
(and --ice-server for STUN/TURN beyond one network).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from ideal.server.config import DEFAULT_MAX_SESSIONS, DEFAULT_MAX_VIEWERS, DEFAULT_RENDER_BUDGET_MS, IceServer, ServerConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (0: a free one)")
    p.add_argument("--avatar", action="append", metavar="DIR",
                   help="avatar dir to serve (repeat for several; the first is the default). Default: built-in")
    p.add_argument("--backend", default="auto",
                   help="renderer backend: auto (an exported one when it runs here: TensorRT, then ONNX Runtime; "
                        "else PyTorch), torch, onnxruntime, tensorrt")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--no-export", dest="export", action="store_false",
                   help="do not export missing/stale ONNX graphs at start (with --backend auto the server exports "
                        "them once, ~18 s, since ONNX Runtime is the faster CPU path here)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for rendering (default 1)")
    p.add_argument("--no-int8", dest="int8", action="store_false",
                   help="ONNX Runtime on CPU: run the FP32 refine graphs instead of the INT8 ones")
    p.add_argument("--mouth-model", metavar="DIR", help="audio-to-mouth model dir (default: the shipped one)")
    p.add_argument("--driver", action="append", default=[], metavar="NAME=CLIP",
                   help="a driver clip clients may pick as expression source (repeatable)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server, e.g. stun:stun.example.org:3478 (repeatable)")
    p.add_argument("--ice-username", help="username for the TURN servers")
    p.add_argument("--ice-credential", help="credential for the TURN servers")
    p.add_argument("--cert", help="TLS certificate (PEM): serve https so remote browsers allow the microphone")
    p.add_argument("--key", help="TLS private key (PEM)")
    p.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS,
                   help=f"avatar sessions at once (default {DEFAULT_MAX_SESSIONS}: what a 2-core CPU renders at "
                        "25 fps, see docs/serve.md); more are refused with 503")
    p.add_argument("--max-viewers", type=int, default=DEFAULT_MAX_VIEWERS,
                   help=f"room viewers at once (default {DEFAULT_MAX_VIEWERS})")
    p.add_argument("--token", help="access token clients must present (?token=...)")
    p.add_argument("--no-synthetic-mark", dest="synthetic_mark", action="store_false",
                   help="leave out the visible 'synthetic' mark (only where viewers are told otherwise)")
    p.add_argument("--render-budget-ms", type=float, default=DEFAULT_RENDER_BUDGET_MS,
                   help=f"time a frame may take from its audio to leaving the server (default "
                        f"{DEFAULT_RENDER_BUDGET_MS:g}); lower cuts latency, but frames that miss it repeat the last "
                        "picture (docs/serve.md)")
    p.add_argument("--codec", default="auto", choices=("auto", "h264", "vp8"), help="video codec")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    from ideal.avatar.errors import InputError

    drivers = {}
    for item in args.driver:
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError(f"--driver {item}: expected NAME=CLIP", "e.g. --driver obama=clips/obama.mp4")
        drivers[name] = path
    ice = [IceServer(url, args.ice_username if url.startswith("turn") else None,
                     args.ice_credential if url.startswith("turn") else None) for url in args.ice_server]
    return ServerConfig(host=args.host, port=args.port, avatars=args.avatar or ["default"], backend=args.backend,
                        device=args.device, mouth_model=args.mouth_model, threads=args.threads, drivers=drivers,
                        ice_servers=ice, cert=args.cert, key=args.key,
                        max_sessions=args.max_sessions, max_viewers=args.max_viewers, token=args.token,
                        codec=args.codec, synthetic_mark=args.synthetic_mark,
                        render_budget_ms=args.render_budget_ms, export=args.export, int8=args.int8).validate()


def run(args: argparse.Namespace) -> int:
    from ideal.server.app import serve_forever

    config = config_from_args(args)

    def ready(server) -> None:  # noqa: ANN001
        url = server.url + (f"?token={config.token}" if config.token else "")
        print(f"ideal serve: open {url} (Ctrl-C to stop)", flush=True)
        if config.host not in ("127.0.0.1", "localhost", "::1") and not config.cert:
            print("note: browsers on other machines allow the microphone only over https: pass --cert/--key",
                  file=sys.stderr)

    async def main() -> None:
        task = asyncio.ensure_future(serve_forever(config, ready))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    print(f"ideal serve: loading {', '.join(config.avatars)} (every quality tier is timed once) ...", flush=True)
    asyncio.run(main())
    print("ideal serve: stopped", flush=True)
    return 0
