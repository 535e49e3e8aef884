// Voice to lips, measured: the page tells the server when it displayed each frame of the avatar (from
// requestVideoFrameCallback, which Chrome gives the RTP timestamp and receive time of WebRTC frames), and the server
// (server/latency.py) joins that with the stamps it took on the same frame's way -- microphone capture (RTCP sender
// reports), packet arrival, render, encode, send -- and answers with the hop-by-hop table. Times go as wall-clock
// seconds of this page; `offset_s` is the page's estimate of (server clock - page clock), the midpoint of the
// report requests' round trips, the best (shortest) one kept.
"use strict";

class ShownFrameReporter {
  constructor(video, send) {
    this.video = video;
    this.send = send; // async (body) => response JSON, the POST /peers/ID/shown call
    this.pending = [];
    this.offset = 0;
    this.bestRtt = Infinity;
    this.latest = null; // the server's last table
    this.handle = null;
    this.stopped = false;
    this.supported = "requestVideoFrameCallback" in HTMLVideoElement.prototype;
  }

  start() {
    if (!this.supported) return;
    const wall = (t) => (performance.timeOrigin + t) / 1000;
    const onFrame = (_now, m) => {
      if (this.stopped) return;
      if (m.rtpTimestamp !== undefined && m.receiveTime !== undefined && this.pending.length < 200) {
        this.pending.push({ rtp: m.rtpTimestamp, received: wall(m.receiveTime), presented: wall(m.presentationTime),
                            displayed: wall(m.expectedDisplayTime) });
      }
      this.handle = this.video.requestVideoFrameCallback(onFrame);
    };
    this.handle = this.video.requestVideoFrameCallback(onFrame);
  }

  stop() {
    this.stopped = true;
    if (this.handle !== null) this.video.cancelVideoFrameCallback(this.handle);
  }

  // Send what was displayed since the last report; returns the server's table (null before it has one).
  async report() {
    if (!this.supported || this.stopped) return null;
    const frames = this.pending.splice(0, this.pending.length);
    const sentAt = Date.now() / 1000;
    const answer = await this.send({ frames, offset_s: this.offset });
    const back = Date.now() / 1000;
    if (answer && typeof answer.server_time === "number" && back - sentAt < this.bestRtt) {
      this.bestRtt = back - sentAt;
      this.offset = answer.server_time - (sentAt + back) / 2;
    }
    this.latest = answer ? answer.latency : null;
    return this.latest;
  }
}
