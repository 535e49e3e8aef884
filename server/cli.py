"""Serve avatars over WebRTC: open the printed URL, allow the microphone, and appear as the avatar.

`ideal serve` starts the built-in avatar; `/?room=NAME` joins a room where several browsers see and hear each
other's avatars. Browsers allow the microphone only on https or localhost: for other machines pass --cert/--key
(and --ice-server for STUN/TURN beyond one network). Secrets (the token, the TURN secret or credential) also come
from files or the environment, where `ps` does not show them. SIGTERM drains (no new calls, connected ones may
end for --drain-timeout-s), Ctrl-C stops at once. Limits and timeouts: docs/serve.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys

from ideal.configcli import add_options
from ideal.server.config import IceServer, ServerConfig
from ideal.server.credentials import ICE_CREDENTIAL_ENV, TOKEN_ENV, TURN_SECRET_ENV, read_secret
from ideal.streamer.config import StreamerConfig

# The streamer settings an operator may want to change; the rest are the streamer's own business.
STREAMER_OPTIONS = ("render_budget_ms", "jitter_ms", "adaptive_tiers", "progressive", "int8", "vad_aggressiveness",
                    "silence_mouth", "listening_pose_speed", "synthetic_mark")


def add_arguments(p: argparse.ArgumentParser) -> None:
    server = add_options(p, ServerConfig, base=ServerConfig(export=True),
                         fields=("host", "port", "backend", "device", "render_url", "render_fallback",
                                 "render_timeout_s", "export", "threads", "mouth_model", "cert",
                                 "key", "max_sessions", "max_viewers", "token", "codec", "mic_buffer", "mic_packet_ms",
                                 "jitter_buffer_target_ms", "allow_origins",
                                 "allow_hosts", "turn_ttl_s", "offer_burst", "offer_refill_s", "max_connections",
                                 "header_timeout_s", "body_timeout_s", "tls_handshake_timeout_s", "max_session_s",
                                 "inactivity_timeout_s", "drain_timeout_s"),
                         flags={"allow_origins": "--allow-origin", "allow_hosts": "--allow-host"},
                         metavars={"render_url": "grpc://HOST:PORT", "mouth_model": "DIR", "allow_origins": "ORIGIN",
                                   "allow_hosts": "NAME"})
    p.add_argument("--token-file", metavar="FILE",
                   help=f"read the access token from FILE's first line (or set {TOKEN_ENV}); unlike --token, not "
                        "visible in `ps`")
    p.add_argument("--avatar", action="append", metavar="DIR",
                   help="avatar dir to serve (repeat for several; the first is the default). Default: built-in")
    p.add_argument("--driver", action="append", default=[], metavar="NAME=CLIP",
                   help="a driver clip clients may pick as expression source (repeatable)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server, e.g. stun:stun.example.org:3478 (repeatable)")
    p.add_argument("--ice-username", help="username for the TURN servers (a long-lived credential; prefer "
                                          "--turn-secret-file)")
    p.add_argument("--ice-credential", help=f"credential for the TURN servers (visible in `ps`: prefer "
                                            f"--ice-credential-file or {ICE_CREDENTIAL_ENV})")
    p.add_argument("--ice-credential-file", metavar="FILE", help="read the TURN credential from FILE's first line")
    p.add_argument("--turn-secret-file", metavar="FILE",
                   help=f"coturn's static-auth-secret (use-auth-secret), or set {TURN_SECRET_ENV}: each client gets "
                        "TURN credentials that expire after --turn-ttl-s")
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
    credential = read_secret("the TURN credential", args.ice_credential, args.ice_credential_file,
                             ICE_CREDENTIAL_ENV)
    ice = [IceServer(url, args.ice_username if url.startswith("turn") else None,
                     credential if url.startswith("turn") else None) for url in args.ice_server]
    token = read_secret("the access token", args.token, args.token_file, TOKEN_ENV)
    turn_secret = read_secret("the TURN secret", None, args.turn_secret_file, TURN_SECRET_ENV)
    config = server.build(args, avatars=args.avatar or ["default"], drivers=drivers, ice_servers=ice,
                          streamer=streamer.build(args))
    return dataclasses.replace(config, token=token, turn_secret=turn_secret).validate()


def startup_line(config: ServerConfig, url: str) -> str:
    # The token is never printed: logs and terminals are read by more people than the URL is meant for.
    return f"ideal serve: open {url}{'?token=YOUR_TOKEN' if config.token else ''} (Ctrl-C to stop)"


def run(args: argparse.Namespace) -> int:
    from ideal.server.app import RunningServer, serve_forever

    config = config_from_args(args)

    def ready(server: RunningServer) -> None:
        print(startup_line(config, server.url), flush=True)
        if config.host not in ("127.0.0.1", "localhost", "::1") and not config.cert:
            print("note: browsers on other machines allow the microphone only over https: pass --cert/--key",
                  file=sys.stderr)

    async def main() -> None:
        task = asyncio.ensure_future(serve_forever(config, ready))
        # SIGTERM drains (serve_forever); Ctrl-C stops at once
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    print(f"ideal serve: loading {', '.join(config.avatars)} (every quality tier is timed once) ...", flush=True)
    asyncio.run(main())
    print("ideal serve: stopped", flush=True)
    return 0
