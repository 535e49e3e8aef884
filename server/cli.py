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

from ideal.configcli import add_options
from ideal.server.config import IceServer, ServerConfig
from ideal.streamer.config import StreamerConfig

# The streamer settings an operator may want to change; the rest are the streamer's own business.
STREAMER_OPTIONS = ("render_budget_ms", "jitter_ms", "adaptive_tiers", "progressive", "int8", "vad_aggressiveness",
                    "silence_mouth", "listening_pose_speed", "synthetic_mark")


def add_arguments(p: argparse.ArgumentParser) -> None:
    server = add_options(p, ServerConfig, base=ServerConfig(export=True),
                         fields=("host", "port", "backend", "device", "export", "threads", "mouth_model", "cert",
                                 "key", "max_sessions", "max_viewers", "token", "codec"),
                         metavars={"mouth_model": "DIR"})
    p.add_argument("--avatar", action="append", metavar="DIR",
                   help="avatar dir to serve (repeat for several; the first is the default). Default: built-in")
    p.add_argument("--driver", action="append", default=[], metavar="NAME=CLIP",
                   help="a driver clip clients may pick as expression source (repeatable)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server, e.g. stun:stun.example.org:3478 (repeatable)")
    p.add_argument("--ice-username", help="username for the TURN servers")
    p.add_argument("--ice-credential", help="credential for the TURN servers")
    streamer = add_options(p.add_argument_group("streamer", "How each avatar session renders (StreamerConfig)."),
                           StreamerConfig, base=ServerConfig().streamer, fields=STREAMER_OPTIONS,
                           dest_prefix="streamer_")
    p.set_defaults(_serve_options=(server, streamer))


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    from ideal.avatar.errors import InputError

    server, streamer = args._serve_options
    drivers = {}
    for item in args.driver:
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError(f"--driver {item}: expected NAME=CLIP", "e.g. --driver obama=clips/obama.mp4")
        drivers[name] = path
    ice = [IceServer(url, args.ice_username if url.startswith("turn") else None,
                     args.ice_credential if url.startswith("turn") else None) for url in args.ice_server]
    return server.build(args, avatars=args.avatar or ["default"], drivers=drivers, ice_servers=ice,
                        streamer=streamer.build(args, base=ServerConfig().streamer)).validate()


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
