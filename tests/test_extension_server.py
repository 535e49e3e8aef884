"""What `ideal serve` does for the browser extension: an avatar offer may ask for its own lip-aligned voice back
(`"voice": true`); anything else in that field is refused with a message naming it. (The voice reaching a page
through the extension is checked in tests/test_extension.py.)"""

from __future__ import annotations

import json

import pytest

from ideal.avatar.errors import InputError
from ideal.server.offers import parse_offer

SDP = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


def _offer(**fields) -> bytes:
    return json.dumps({"sdp": SDP, "type": "offer", **fields}).encode()


def test_voice_is_off_unless_asked_for():
    assert parse_offer(_offer(), 100_000).voice is False
    assert parse_offer(_offer(voice=True), 100_000).voice is True
    assert parse_offer(_offer(voice=False), 100_000).voice is False


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_voice_must_be_a_boolean(value):
    with pytest.raises(InputError, match="'voice' must be true or false"):
        parse_offer(_offer(voice=value), 100_000)


def test_a_viewer_cannot_ask_for_voice():
    with pytest.raises(InputError, match="'voice' is for avatar offers"):
        parse_offer(_offer(voice=True, mode="watch", room="r", target="0" * 32), 100_000)
