"""The microphone's receive buffer: every audio packet goes to the decoder the moment it arrives.

aiortc's audio receiver holds packets in a `JitterBuffer(capacity=16, prefetch=4)`: a packet leaves only once
four newer ones are in, so every sample of the voice waits 80 ms before the streamer sees it (measured in the
browser bench: the "server receive buffer" hop, docs/performance.md). That buffer exists to re-order packets for
playback; the streamer is not a player. It keeps its own jitter allowance on the audio it is given
(`StreamerConfig.jitter_ms`), and an Opus packet is a whole 20 ms frame that decodes on its own. So here a packet
is released at once when it is newer than the last one released; an older one (re-ordered on the network, rare on
a LAN and absent on loopback) is dropped, as aiortc drops a packet that arrives after its frame was released. A
lost packet shortens the audio by its 20 ms either way.

aiortc has no setting for this, so `install` replaces the receiver's buffer object (a private attribute, checked
by name; when a future aiortc renames it, the default buffer stays and a warning says so).
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc.jitterbuffer import JitterFrame
from aiortc.utils import uint16_add

log = logging.getLogger(__name__)

_BUFFER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"  # name-mangled `__jitter_buffer` of aiortc 1.x


class ImmediateAudioBuffer:
    """Drop-in for aiortc's `JitterBuffer` on an audio receiver: one decodable frame per in-order packet."""

    def __init__(self) -> None:
        self._last_seq: int | None = None
        self.released = 0
        self.dropped_late = 0

    @property
    def capacity(self) -> int:  # aiortc reads it for statistics only
        return 1

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        """(send a PLI?, the frame to decode now or None); the packet's payload is already depayloaded."""
        seq = packet.sequence_number
        if self._last_seq is not None:
            ahead = uint16_add(seq, -self._last_seq)  # 1 .. 32767: newer; 0 or >= 32768: a duplicate or older
            if ahead == 0 or ahead >= 0x8000:
                self.dropped_late += 1
                return False, None
        self._last_seq = seq
        self.released += 1
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)

    def remove(self, count: int) -> None:  # the JitterBuffer interface; nothing is held
        pass


def install(receiver: Any) -> ImmediateAudioBuffer | None:
    """Give an aiortc audio `RTCRtpReceiver` the immediate buffer (before its first packet). None if this aiortc
    has no buffer attribute of the expected name (the default buffer then stays, with a warning)."""
    if not hasattr(receiver, _BUFFER_ATTRIBUTE):
        log.warning("aiortc's audio receiver has no %s attribute: the microphone keeps aiortc's 80 ms buffer",
                    _BUFFER_ATTRIBUTE)
        return None
    buffer = ImmediateAudioBuffer()
    setattr(receiver, _BUFFER_ATTRIBUTE, buffer)
    return buffer
