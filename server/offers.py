"""Parsing and validating a client's offer (`POST /offer`) before any resource is spent on it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ideal.avatar.errors import InputError
from ideal.server.rooms import check_room_name

MODES = ("avatar", "watch")
_PEER_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class OfferRequest:
    sdp: str
    mode: str = "avatar"  # avatar: my microphone drives an avatar; watch: receive another participant's avatar
    avatar: str | None = None
    expression: str | None = None
    room: str | None = None
    name: str = "guest"
    target: str | None = None  # watch: the peer id of the participant to receive
    voice: bool = False  # avatar: also send my own voice back, delayed to the lips (the browser extension's mic)


def parse_offer(body: bytes, max_bytes: int) -> OfferRequest:
    """Raise `InputError` (the server answers 400 with its message) for anything but a well-formed offer."""
    if len(body) > max_bytes:
        raise InputError(f"offer too large: {len(body)} bytes (limit {max_bytes})", "send one SDP offer, not media")
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, a number too long, nested too deep
        raise InputError(f"offer is not JSON ({type(exc).__name__}: {str(exc)[:200]})",
                         'send {"sdp": ..., "type": "offer"}') from None
    if not isinstance(data, dict):
        raise InputError("offer is not a JSON object", 'send {"sdp": ..., "type": "offer"}')
    if data.get("type") != "offer":
        raise InputError(f"offer type {data.get('type')!r}: expected 'offer'", "send the browser's local offer")
    sdp = data.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise InputError("offer has no SDP (the 'sdp' field must start with 'v=0')", "send pc.localDescription.sdp")
    mode = data.get("mode", "avatar")
    if mode not in MODES:
        raise InputError(f"mode {mode!r}: unknown", f"use one of {', '.join(MODES)}")
    media = re.findall(r"^m=(\w+)", sdp, flags=re.M)
    if "video" not in media:
        raise InputError("offer has no video section", "add a recvonly video transceiver to receive the avatar")
    if mode == "avatar" and "audio" not in media:
        raise InputError("offer has no audio section", "the avatar is driven by your microphone: add its track")
    fields = {}
    for key in ("avatar", "expression", "room", "name", "target"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 256):
            raise InputError(f"offer field {key!r} must be a string of at most 256 characters", "fix the client")
        fields[key] = value or None
    if fields["room"] is not None:
        check_room_name(fields["room"])
    if mode == "watch":
        if fields["room"] is None or fields["target"] is None:
            raise InputError("a watch offer needs 'room' and 'target'", "name the room and the participant's id")
        if not _PEER_ID.fullmatch(fields["target"]):
            raise InputError(f"target {fields['target']!r}: not a participant id", "use an id from GET /rooms/NAME")
    voice = data.get("voice", False)
    if not isinstance(voice, bool):
        raise InputError(f"offer field 'voice' must be true or false, not {voice!r}", "fix the client")
    if voice and mode != "avatar":
        raise InputError("'voice' is for avatar offers", "a viewer already receives the participant's voice")
    name = (fields["name"] or "guest")[:64]
    return OfferRequest(sdp=sdp, mode=mode, avatar=fields["avatar"], expression=fields["expression"],
                        room=fields["room"], name=name, target=fields["target"], voice=voice)


def with_audio_packet_ms(sdp: str, ms: int) -> str:
    """The answer `sdp` asking the browser to send its microphone in `ms` ms Opus packets (`a=ptime` in every
    audio section that receives). aiortc ignores ptime and decodes any Opus frame length; browsers read it as the
    frame length for their encoder. Shorter packets reach the streamer sooner: a sample waits for the rest of its
    packet before it is sent, and the streamer's jitter allowance covers one packet."""
    lines = sdp.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    audio = False
    for line in lines:
        if line.startswith("m="):
            audio = line.startswith("m=audio")
        elif audio and line.startswith("a=ptime:"):
            continue
        out.append(line)
        if audio and line.startswith("m=audio"):
            out.append(f"a=ptime:{int(ms)}")
    return "\r\n".join(out)
