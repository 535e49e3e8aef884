"""Stamps taken inside aiortc for the latency trace (server/latency.py): when each microphone RTP packet reached the
server, what the browser's RTCP sender reports say about its clock, and when each video frame's packets left.

aiortc has no callbacks for these, so the per-instance methods that carry them are wrapped (`_handle_rtp_packet`,
`_handle_rtcp_packet`, `_next_encoded_frame` of aiortc 1.x). A wrapper only records and then calls the original;
when a future aiortc lacks a method, nothing is wrapped and the trace reports those hops as unknown.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiortc.rtp import RtcpSrPacket

from ideal.server.latency import MicTimeline, SendTrace

log = logging.getLogger(__name__)


def hook_audio_receiver(receiver: Any, mic: MicTimeline) -> bool:
    """Record each microphone packet's arrival and each sender report on `mic`. False if aiortc differs."""
    on_rtp = getattr(receiver, "_handle_rtp_packet", None)
    on_rtcp = getattr(receiver, "_handle_rtcp_packet", None)
    if on_rtp is None or on_rtcp is None:
        log.warning("aiortc's RTCRtpReceiver lacks the packet handlers the latency trace wraps: no capture times")
        return False

    async def handle_rtp(packet: Any, arrival_time_ms: int) -> None:
        mic.on_packet(packet.timestamp, time.time())
        await on_rtp(packet, arrival_time_ms)

    async def handle_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            mic.on_sender_report(packet.sender_info.ntp_timestamp, packet.sender_info.rtp_timestamp)
        await on_rtcp(packet)

    receiver._handle_rtp_packet = handle_rtp
    receiver._handle_rtcp_packet = handle_rtcp
    return True


def hook_video_sender(sender: Any, trace: SendTrace) -> bool:
    """Record when each encoded video frame is handed to the socket (`trace.on_sent`). False if aiortc differs."""
    next_frame = getattr(sender, "_next_encoded_frame", None)
    if next_frame is None:
        log.warning("aiortc's RTCRtpSender lacks _next_encoded_frame: the latency trace has no send times")
        return False

    async def next_encoded_frame(codec: Any) -> Any:
        frame = await next_frame(codec)
        if frame is not None:
            # aiortc sends the frame's packets right after this returns, without awaiting anything but the socket
            trace.on_sent(int(frame.timestamp), time.time())
        return frame

    sender._next_encoded_frame = next_encoded_frame
    return True
