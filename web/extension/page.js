// ideal-nerf avatar camera: runs in every page's own world at document_start, before the page's scripts.
//
// It wraps navigator.mediaDevices so that enumerateDevices() also lists a camera "ideal-nerf avatar" and a
// microphone "ideal-nerf avatar voice", and getUserMedia() for either returns tracks of one AvatarLink: the real
// microphone (the one the page asked for, or the default) goes over WebRTC to the local `ideal serve`, which sends
// back the avatar and the same voice delayed to match the lips. Anything else goes to the browser untouched.
//
// The tracks the page gets are MediaStreamTrackGenerator tracks fed from the received ones, so they outlive the
// connection: while it is down they show a "reconnecting" picture (and carry silence), and the same tracks carry
// the avatar again once a new connection is up. Signalling goes through bridge.js to the extension's service
// worker (extension origin, token and peer secrets stay there); the RTCPeerConnection itself lives here.
"use strict";

(() => {
  const md = navigator.mediaDevices;
  const MD = window.MediaDevices;
  if (!md || !MD || !MD.prototype.getUserMedia || window.top === undefined) return; // no camera API here
  const origGetUserMedia = MD.prototype.getUserMedia;
  const origEnumerate = MD.prototype.enumerateDevices;
  // Taken now: pages (and adapter.js) may replace the globals later.
  const RTCPC = window.RTCPeerConnection;
  const Processor = window.MediaStreamTrackProcessor;
  const Generator = window.MediaStreamTrackGenerator;
  const VideoFrameC = window.VideoFrame;
  const AudioContextC = window.AudioContext;
  const MediaStreamC = window.MediaStream;
  const AudioC = window.Audio;
  const DOMExceptionC = window.DOMException;
  const post = window.postMessage.bind(window);
  const perf = performance;

  const CAMERA_ID = "ideal-nerf-avatar";
  const VOICE_ID = "ideal-nerf-avatar-voice";
  const GROUP_ID = "ideal-nerf";
  const CAMERA_LABEL = "ideal-nerf avatar";
  const VOICE_LABEL = "ideal-nerf avatar voice";
  const AUDIO_RATE = 48000;

  // --- the bridge (bridge.js, isolated world) -------------------------------------------------------------------
  let port = null;
  let seq = 0;
  const pending = new Map();
  let settings = null;
  let settingsReady;
  const settingsPromise = new Promise((resolve) => { settingsReady = resolve; });

  function connectBridge() {
    if (port) return;
    const channel = new MessageChannel();
    channel.port1.onmessage = (event) => {
      const m = event.data || {};
      port = channel.port1;
      if (m.type === "settings") {
        const changed = settings && (settings.enabled !== m.settings.enabled);
        settings = m.settings;
        settingsReady();
        if (changed) md.dispatchEvent(new Event("devicechange"));
      } else if (pending.has(m.reply)) {
        pending.get(m.reply)(m.value);
        pending.delete(m.reply);
      }
    };
    post({ idealNerf: "connect" }, "*", [channel.port2]);
    connectBridge.last = channel.port1;
  }
  window.addEventListener("message", (event) => {
    if (event.source === window && event.data && event.data.idealNerf === "bridge-ready" && !port) connectBridge();
  });
  connectBridge();

  function call(op, args = {}) {
    const p = port || connectBridge.last;
    if (!p) return Promise.resolve({ ok: false, status: -1, error: "the ideal-nerf extension is not ready" });
    const id = ++seq;
    return new Promise((resolve) => {
      pending.set(id, resolve);
      p.postMessage({ id, op, args });
    });
  }

  // The settings, once the bridge has sent them (a page without the bridge behaves as without the extension).
  async function currentSettings() {
    if (!settings) await Promise.race([settingsPromise, new Promise((r) => setTimeout(r, 1500))]);
    return settings || { enabled: false, defaultCamera: false };
  }

  // --- devices ------------------------------------------------------------------------------------------------
  function fakeDevice(kind, deviceId, label) {
    const Proto = window.InputDeviceInfo || window.MediaDeviceInfo;
    const d = Object.create(Proto.prototype);
    const fields = { deviceId, kind, label, groupId: GROUP_ID };
    for (const [k, v] of Object.entries(fields)) Object.defineProperty(d, k, { value: v, enumerable: true });
    Object.defineProperty(d, "toJSON", { value: () => Object.assign({}, fields) });
    Object.defineProperty(d, "getCapabilities", { value: () => capabilities(kind) });
    return d;
  }

  function capabilities(kind) {
    if (kind === "videoinput") {
      return { deviceId: CAMERA_ID, groupId: GROUP_ID, width: { min: 1, max: 1920 }, height: { min: 1, max: 1080 },
        frameRate: { min: 1, max: 30 }, facingMode: ["user"], resizeMode: ["none"] };
    }
    return { deviceId: VOICE_ID, groupId: GROUP_ID, channelCount: { min: 1, max: 1 },
      sampleRate: { min: AUDIO_RATE, max: AUDIO_RATE }, echoCancellation: [false], autoGainControl: [false],
      noiseSuppression: [false] };
  }

  MD.prototype.enumerateDevices = async function enumerateDevices() {
    const devices = await origEnumerate.call(this);
    const s = await currentSettings();
    if (!s.enabled) return devices;
    const out = [...devices];
    const lastOf = (kind) => out.map((d) => d.kind).lastIndexOf(kind);
    out.splice(lastOf("videoinput") + 1 || out.length, 0, fakeDevice("videoinput", CAMERA_ID, CAMERA_LABEL));
    out.splice(lastOf("audioinput") + 1 || 0, 0, fakeDevice("audioinput", VOICE_ID, VOICE_LABEL));
    return out;
  };

  // deviceId constraint (string, [..], {exact}, {ideal}, advanced) -> the ids it names
  function namedIds(c) {
    if (!c || typeof c !== "object") return [];
    const ids = [];
    const add = (v) => {
      if (typeof v === "string") ids.push(v);
      else if (Array.isArray(v)) v.forEach(add);
      else if (v && typeof v === "object") { add(v.exact); add(v.ideal); }
    };
    add(c.deviceId);
    if (Array.isArray(c.advanced)) for (const a of c.advanced) add(a && a.deviceId);
    return ids;
  }

  // --- getUserMedia ----------------------------------------------------------------------------------------------
  MD.prototype.getUserMedia = async function getUserMedia(constraints) {
    const s = await currentSettings();
    if (!s.enabled || !constraints || typeof constraints !== "object") {
      return origGetUserMedia.call(this, constraints);
    }
    const { video, audio } = constraints;
    const videoIds = namedIds(video);
    const audioIds = namedIds(audio);
    const camera = !!video && (videoIds.includes(CAMERA_ID) || (s.defaultCamera && videoIds.length === 0));
    const voiceNamed = !!audio && audioIds.includes(VOICE_ID);
    if (!camera && !voiceNamed) return origGetUserMedia.call(this, constraints);
    // With the avatar camera, any audio the same call asks for is the avatar's voice (the microphone it named is
    // the one that drives the avatar).
    const voice = voiceNamed || (camera && !!audio);
    const micConstraints = audio && !voiceNamed ? audio : true;
    const tracks = [];
    if (video && !camera) {
      tracks.push(...(await origGetUserMedia.call(this, { video })).getVideoTracks());
    }
    let link;
    try {
      link = await AvatarLink.get(micConstraints);
    } catch (err) {
      for (const t of tracks) t.stop();
      throw err;
    }
    if (camera) tracks.push(link.handOut("video"));
    if (voice) tracks.push(link.handOut("audio"));
    link.checkUsers();
    return new MediaStreamC(tracks);
  };

  function domError(name, message) {
    return new DOMExceptionC(`ideal-nerf avatar: ${message}`, name);
  }

  // --- the connection and the tracks the page holds ------------------------------------------------------------
  let current = null; // the page's AvatarLink (one per page: the camera and the voice share it)

  function iceGatheringDone(pc, timeoutMs = 3000) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(done, timeoutMs);
    });
  }

  function connected(pc, timeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error("the connection to the avatar server did not come up")),
        timeoutMs);
      const finish = (err) => {
        clearTimeout(timer);
        pc.removeEventListener("connectionstatechange", check);
        if (err) reject(err); else resolve();
      };
      const check = () => {
        if (pc.connectionState === "connected") finish();
        else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
          finish(new Error(`the connection to the avatar server ${pc.connectionState}`));
        }
      };
      pc.addEventListener("connectionstatechange", check);
      check();
    });
  }

  class LinkError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  class AvatarLink {
    static async get(micConstraints) {
      if (current && !current.closed) {
        await current.ready; // a call made while the first one is still connecting waits for it
        return current;
      }
      if (!Processor || !Generator || !VideoFrameC || !RTCPC) {
        throw domError("NotSupportedError", "this browser lacks MediaStreamTrackGenerator (Chrome/Edge 94 or later " +
          "is needed)");
      }
      const link = new AvatarLink();
      current = link;
      link.ready = link.open(micConstraints).catch((err) => {
        link.close("failed");
        throw err;
      });
      await link.ready;
      return link;
    }

    constructor() {
      this.closed = false;
      this.state = "connecting";
      this.message = "connecting to the avatar server…";
      this.video = new Generator({ kind: "video" });
      this.videoWriter = this.video.writable.getWriter();
      // The voice goes through Web Audio: its destination's track outlives the connections (silence between
      // them), and it adds ~10 ms where a MediaStreamTrackGenerator fed from a MediaStreamTrackProcessor added
      // ~200 ms of buffering on the way to the call's encoder (measured in the Janus test).
      this.audioContext = new AudioContextC({ latencyHint: "interactive", sampleRate: AUDIO_RATE });
      this.audioOut = this.audioContext.createMediaStreamDestination();
      this.audioOut.channelCount = 1;
      this.audio = this.audioOut.stream.getAudioTracks()[0];
      this.resumeAudio = () => { if (this.audioContext.state === "suspended") this.audioContext.resume(); };
      this.resumeAudio(); // allowed once the page has had a click (as a call's join button gives it)
      window.addEventListener("pointerdown", this.resumeAudio, true);
      window.addEventListener("keydown", this.resumeAudio, true);
      this.users = new Set(); // the tracks the page holds (handed out and their clones)
      this.generation = 0; // one per connection attempt: stale callbacks of older connections do nothing
      this.pc = null;
      this.peerId = null;
      this.attempt = 0;
      this.lastFrameAt = -Infinity; // when the last received picture went out
      this.lastFrame = null; // a copy of it, for the reconnecting picture
      this.clockOffsetUs = 0; // received pictures' clock minus performance.now() (µs)
      this.size = [512, 512];
      this.stats = {};
      this.timers = [setInterval(() => this.tick(), 100), setInterval(() => this.poll(), 1000)];
      this.voiceSources = [];
    }

    async open(micConstraints) {
      try {
        this.mic = await origGetUserMedia.call(md, { audio: micConstraints === true ? {
          echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 } : micConstraints });
      } catch (err) {
        if (err && (err.name === "NotAllowedError" || err.name === "SecurityError")) {
          throw domError("NotAllowedError", "microphone access was denied: the avatar is driven by your " +
            "microphone, so allow it for this site (the icon in the address bar) and choose the avatar again.");
        }
        throw domError(err && err.name || "NotReadableError", `cannot open the microphone (${err && err.message})`);
      }
      for (const t of this.mic.getAudioTracks()) {
        t.addEventListener("ended", () => this.lost("the microphone stopped", false));
      }
      try {
        await this.connect();
      } catch (err) {
        throw domError("NotReadableError", err.message);
      }
    }

    async connect() {
      const gen = ++this.generation;
      this.setState(this.attempt ? "reconnecting" : "connecting", this.attempt
        ? `reconnecting to the avatar server (attempt ${this.attempt})…` : "connecting to the avatar server…");
      const prep = await call("prepare");
      if (!prep.ok) throw new LinkError(prep.status, prep.error);
      if (prep.data.output_size) this.size = prep.data.output_size;
      const pc = new RTCPC({ iceServers: prep.data.ice_servers || [] });
      this.pc = pc;
      for (const t of this.mic.getAudioTracks()) pc.addTrack(t, this.mic); // sendrecv: the voice comes back on it
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.ontrack = (event) => {
        if (gen !== this.generation) return;
        if (event.track.kind === "video") this.pumpVideo(event.track, gen);
        else this.connectVoice(event.track, gen);
      };
      pc.onconnectionstatechange = () => this.onConnectionState(pc, gen);
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc);
      if (gen !== this.generation) return;
      const answer = await call("offer", { sdp: pc.localDescription.sdp });
      if (!answer.ok) {
        pc.close();
        throw new LinkError(answer.status, answer.error);
      }
      this.peerId = answer.data.peer_id;
      await pc.setRemoteDescription({ type: answer.data.type, sdp: answer.data.sdp });
      await connected(pc, 10000);
      this.attempt = 0;
      this.setState("connected", "connected");
    }

    onConnectionState(pc, gen) {
      if (gen !== this.generation) return;
      const s = pc.connectionState;
      if (s === "failed" || s === "closed") this.lost(`the connection to the avatar server ${s}`);
      else if (s === "disconnected") {
        setTimeout(() => {
          if (gen === this.generation && pc.connectionState === "disconnected") this.lost("the connection dropped");
        }, 2000);
      }
    }

    // Received pictures -> the page's camera track, as they are. Their timestamps are Chrome's monotonic clock
    // (µs), which the call's encoder takes as capture times and its receiver's lip sync compares with the
    // voice's: the "reconnecting" pictures are stamped on the same clock (performance.now() + the offset the
    // last received picture showed), so the track's timestamps keep increasing across connections.
    async pumpVideo(track, gen) {
      const reader = new Processor({ track }).readable.getReader();
      try {
        for (;;) {
          const { value: frame, done } = await reader.read();
          if (done) break;
          if (gen !== this.generation || this.closed) { frame.close(); break; }
          const out = frame;
          this.clockOffsetUs = out.timestamp - Math.round(perf.now() * 1000);
          this.size = [out.displayWidth, out.displayHeight];
          if (this.lastFrame) this.lastFrame.close();
          this.lastFrame = out.clone();
          this.lastFrameAt = perf.now();
          this.pictures = (this.pictures || 0) + 1;
          await this.videoWriter.write(out);
        }
      } catch (err) {
        if (!this.closed) console.debug("ideal-nerf avatar: video pump stopped", err);
      } finally {
        reader.cancel().catch(() => {});
      }
    }

    // The returned voice -> the page's microphone track.
    connectVoice(track, gen) {
      // Chrome hands a received audio track's samples to other sinks only while a media element plays it
      const sink = new AudioC();
      sink.muted = true;
      sink.srcObject = new MediaStreamC([track]);
      sink.play().catch(() => {});
      const source = this.audioContext.createMediaStreamSource(new MediaStreamC([track]));
      source.connect(this.audioOut);
      this.resumeAudio();
      const disconnect = () => { source.disconnect(); sink.srcObject = null; };
      track.addEventListener("ended", disconnect);
      this.voiceSources.push({ gen, disconnect });
    }

    // Every 100 ms: without a received picture for a second, the camera shows what is going on instead of
    // freezing on the last picture (the voice is silent then: nothing feeds its Web Audio graph).
    tick() {
      if (this.closed) return;
      const now = perf.now();
      if (now - this.lastFrameAt > 1000) {
        this.writeCard();
      }
    }

    writeCard() {
      const [w, h] = this.size;
      if (!this.canvas || this.canvas.width !== w || this.canvas.height !== h) {
        this.canvas = new OffscreenCanvas(w, h);
      }
      const ctx = this.canvas.getContext("2d");
      ctx.fillStyle = "#1d2530";
      ctx.fillRect(0, 0, w, h);
      if (this.lastFrame) {
        ctx.globalAlpha = 0.25;
        ctx.drawImage(this.lastFrame, 0, 0, w, h);
        ctx.globalAlpha = 1;
      }
      const title = { connecting: "connecting…", reconnecting: "reconnecting…", ended: "avatar stopped",
        connected: "waiting for the avatar…" }[this.state] || this.state;
      ctx.fillStyle = "#ffffff";
      ctx.textAlign = "center";
      ctx.font = `bold ${Math.round(h / 12)}px sans-serif`;
      ctx.fillText(title, w / 2, h / 2);
      ctx.font = `${Math.round(h / 28)}px sans-serif`;
      ctx.fillStyle = "#cfd8e3";
      wrap(ctx, this.message, w * 0.85).forEach((line, i) => ctx.fillText(line, w / 2, h / 2 + (i + 1.5) * h / 24));
      ctx.fillText("ideal-nerf avatar", w / 2, h - h / 20);
      const frame = new VideoFrameC(this.canvas, { timestamp: Math.round(perf.now() * 1000) + this.clockOffsetUs });
      this.videoWriter.write(frame).catch(() => {});
    }

    setState(state, message) {
      this.state = state;
      this.message = message;
      this.report();
    }

    // The connection is gone: show it, let the server go, and connect again (with back-off) unless the server
    // ended the call on purpose.
    lost(why, retry = true) {
      if (this.closed || this.state === "reconnecting" && this.reconnectTimer) return;
      this.generation += 1;
      this.dropConnection();
      if (!retry) { this.setState("ended", why); return; }
      this.attempt += 1;
      const delay = Math.min(10, 2 ** (this.attempt - 1));
      this.setState("reconnecting", `${String(why).replace(/\.$/, "")}; reconnecting in ${delay} s ` +
        `(attempt ${this.attempt})…`);
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = setTimeout(async () => {
        this.reconnectTimer = null;
        if (this.closed) return;
        try {
          await this.connect();
        } catch (err) {
          this.dropConnection();
          if (err.status === 410) this.setState("ended", err.message);
          else this.lost(err.message);
        }
      }, delay * 1000);
    }

    dropConnection() {
      for (const v of this.voiceSources.splice(0)) v.disconnect();
      if (this.pc) { this.pc.close(); this.pc = null; }
      if (this.peerId) { call("leave", { peer_id: this.peerId }); this.peerId = null; }
    }

    // Every second: the server's view (render latency, fps) for the popup, and whether the server still has us.
    async poll() {
      if (this.closed) return;
      this.checkUsers();
      const pc = this.pc;
      const peerId = this.peerId;
      if (!pc || !peerId || this.state !== "connected") { this.report(); return; }
      const client = { fps: null, rttMs: null, jitterBufferMs: null };
      let voiceBuffer = null;
      try {
        (await pc.getStats()).forEach((r) => {
          if (r.type === "inbound-rtp" && r.kind === "audio") voiceBuffer = [r.jitterBufferDelay, r.jitterBufferEmittedCount];
          if (r.type === "inbound-rtp" && r.kind === "video") {
            client.fps = r.framesPerSecond;
            if (r.jitterBufferEmittedCount) client.jitterBufferMs = 1000 * r.jitterBufferDelay / r.jitterBufferEmittedCount;
          }
          if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) {
            client.rttMs = 1000 * r.currentRoundTripTime;
          }
        });
      } catch (_) { /* closed meanwhile */ }
      this.alignPicture(pc, voiceBuffer);
      const server = await call("stats", { peer_id: peerId });
      if (peerId !== this.peerId) return;
      if (!server.ok) {
        if (server.status === 410) { this.generation += 1; this.dropConnection(); this.setState("ended", server.error); }
        else if (server.status === 404 || server.status === 0) this.lost(server.status ? "the server closed the call"
          : "the avatar server went away");
        return;
      }
      if (server.data.draining) { this.lost("the avatar server is shutting down"); return; }
      const latency = server.data.latency_ms;
      this.stats = { fps: client.fps, render_latency_ms: latency, rtt_ms: client.rttMs,
        picture_hold_ms: this.pictureHoldMs,
        buffer_ms: client.jitterBufferMs, tier: server.data.tier, speech: server.data.speech,
        voice_to_screen_ms: latency == null || client.rttMs == null || client.jitterBufferMs == null ? null
          : latency + client.rttMs + client.jitterBufferMs };
      this.report();
    }

    // The server sends picture and voice with equal timestamps, but Chrome does not hold a received picture back
    // for its voice when the picture goes on into another connection rather than to the screen: the voice waits
    // in its jitter buffer (~50-250 ms), the picture does not. So the picture's jitter buffer is told to wait as
    // long as the voice's did over the last second (RTCRtpReceiver.jitterBufferTarget).
    alignPicture(pc, voiceBuffer) {
      if (!voiceBuffer || !(voiceBuffer[1] >= 0)) return;
      const last = this.lastVoiceBuffer;
      this.lastVoiceBuffer = { pc, value: voiceBuffer };
      if (!last || last.pc !== pc || voiceBuffer[1] - last.value[1] < 10) return;
      const voiceMs = 1000 * (voiceBuffer[0] - last.value[0]) / (voiceBuffer[1] - last.value[1]);
      const receiver = pc.getReceivers().find((r) => r.track && r.track.kind === "video");
      if (!receiver || !("jitterBufferTarget" in receiver) || !(voiceMs >= 0)) return;
      this.pictureHoldMs = Math.min(1000, Math.round(voiceMs));
      try { receiver.jitterBufferTarget = this.pictureHoldMs; } catch (_) { /* out of range */ }
    }

    report() {
      call("report", { state: this.closed ? "closed" : this.state, message: this.message, stats: this.stats,
        users: this.users.size });
    }

    // Hand the page a track of `kind`: a clone of the generator's (so each can be stopped on its own), with the
    // label and settings of a device.
    handOut(kind) {
      const track = (kind === "video" ? this.video : this.audio).clone();
      this.adopt(track, kind);
      return track;
    }

    adopt(track, kind) {
      const link = this;
      const id = kind === "video" ? CAMERA_ID : VOICE_ID;
      const stop = track.stop;
      const clone = track.clone;
      const getSettings = track.getSettings;
      Object.defineProperty(track, "label", { value: kind === "video" ? CAMERA_LABEL : VOICE_LABEL });
      track.stop = function () { stop.call(this); link.checkUsers(); };
      track.clone = function () { const c = clone.call(this); link.adopt(c, kind); return c; };
      track.getSettings = function () {
        const s = Object.assign({}, getSettings.call(this), { deviceId: id, groupId: GROUP_ID });
        if (kind === "video") Object.assign(s, { width: link.size[0], height: link.size[1], frameRate: 25 });
        else Object.assign(s, { sampleRate: AUDIO_RATE, channelCount: 1 });
        return s;
      };
      track.getCapabilities = () => capabilities(kind === "video" ? "videoinput" : "audioinput");
      this.users.add(track);
      this.everHanded = true;
    }

    // When the page has stopped every track it got, the connection closes (choosing the avatar again opens one).
    checkUsers() {
      for (const t of [...this.users]) if (t.readyState === "ended") this.users.delete(t);
      if (!this.everHanded) return; // the first getUserMedia is still resolving
      if (!this.users.size && !this.closed) {
        clearTimeout(this.closeTimer);
        this.closeTimer = setTimeout(() => { if (!this.users.size) this.close("stopped"); }, 200);
      } else {
        clearTimeout(this.closeTimer);
      }
    }

    close(why) {
      if (this.closed) return;
      this.closed = true;
      this.generation += 1;
      for (const t of this.timers) clearInterval(t);
      clearTimeout(this.reconnectTimer);
      clearTimeout(this.closeTimer);
      this.dropConnection();
      if (this.mic) for (const t of this.mic.getTracks()) t.stop();
      for (const t of this.users) t.stop.call(t);
      this.video.stop();
      this.audio.stop();
      window.removeEventListener("pointerdown", this.resumeAudio, true);
      window.removeEventListener("keydown", this.resumeAudio, true);
      this.audioContext.close().catch(() => {});
      if (this.lastFrame) { this.lastFrame.close(); this.lastFrame = null; }
      this.state = "closed";
      this.report();
      if (current === this) current = null;
    }
  }

  function wrap(ctx, text, width) {
    const lines = [];
    let line = "";
    for (const word of String(text || "").split(/\s+/)) {
      const next = line ? line + " " + word : word;
      if (ctx.measureText(next).width > width && line) { lines.push(line); line = word; } else line = next;
    }
    if (line) lines.push(line);
    return lines.slice(0, 6);
  }

  // for tests and the curious: the page's link (state, stats), never a secret
  Object.defineProperty(window, "__idealNerfAvatar", { value: { link: () => current, CAMERA_ID, VOICE_ID } });
})();
