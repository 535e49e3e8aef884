"""Secrets of `ideal serve`: where the access token and the TURN credentials come from, and the short-lived TURN
credentials handed to clients.

A secret given on the command line is visible to every user of the machine (`ps`), so each also comes from a
file (`--token-file`, `--turn-secret-file`, `--ice-credential-file`) or the environment (`IDEAL_SERVE_TOKEN`,
`IDEAL_TURN_SECRET`, `IDEAL_ICE_CREDENTIAL`).

TURN credentials follow the TURN REST scheme that coturn implements with `use-auth-secret` and
`static-auth-secret=SECRET`: username `EXPIRY:NAME` (EXPIRY in Unix seconds), credential
`base64(HMAC-SHA1(SECRET, username))`. A client gets a pair that stops working after `turn_ttl_s`, so a leaked one
is worth little and the secret itself never leaves the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from pathlib import Path
from typing import Any

from ideal.avatar.errors import InputError
from ideal.server.config import ServerConfig

TOKEN_ENV = "IDEAL_SERVE_TOKEN"
TURN_SECRET_ENV = "IDEAL_TURN_SECRET"
ICE_CREDENTIAL_ENV = "IDEAL_ICE_CREDENTIAL"


def read_secret(what: str, value: str | None, file: str | None, env: str) -> str | None:
    """The secret from the command line, else from `file` (its first line), else from the environment variable
    `env`; None when none gives one. Giving it twice is an error rather than a silent choice."""
    if value is not None and file:
        raise InputError(f"{what} given on the command line and in a file", "give it once (the file is safer)")
    if file:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{what} file {file}: unreadable ({exc})", "give a UTF-8 text file holding it") from None
        if not lines or not lines[0].strip():
            raise InputError(f"{what} file {file}: empty", "write the secret on its first line")
        return lines[0].strip()
    if value is not None:
        return value
    return os.environ.get(env) or None


def turn_rest_credentials(secret: str, ttl_s: float, name: str = "ideal", now: float | None = None
                          ) -> tuple[str, str]:
    """(username, credential) valid for `ttl_s` seconds under coturn's `use-auth-secret`."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def client_ice_servers(config: ServerConfig, authorized: bool) -> list[dict[str, Any]]:
    """The `RTCIceServer`s a client gets from `GET /config`: STUN for anyone who may load the page, TURN (a relay
    that costs the operator bandwidth, behind a credential) only for a client that showed the token."""
    servers = []
    for server in config.ice_servers:
        if not server.urls.startswith("turn"):
            servers.append(server.to_dict())
        elif authorized:
            if config.turn_secret:
                username, credential = turn_rest_credentials(config.turn_secret, config.turn_ttl_s)
                servers.append({"urls": server.urls, "username": username, "credential": credential})
            else:
                servers.append(server.to_dict())
    return servers
