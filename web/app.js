// ideal-nerf browser client: join a call as an avatar. No build step: plain ES2020, served as is.
//
// One publishing connection sends the microphone and receives my own avatar (video only: no echo). In a room,
// one receive-only connection per other participant brings their avatar with their voice, lip-aligned by the
// server. The room list is polled, so joining or leaving never renegotiates anybody's connection.
"use strict";

const params = new URLSearchParams(location.search);
const ROOM = params.get("room");
const TOKEN = params.get("token");
const $ = (id) => document.getElementById(id);

const state = {
  config: null,        // GET /config
  catalog: null,       // GET /avatars
  mic: null,           // MediaStream from getUserMedia
  pc: null,            // my publishing RTCPeerConnection
  peerId: null,        // my id on the server (also my participant id in the room)
  peerSecret: null,    // the secret of my peer: the server answers /peers/ID/* only with it
  remotes: new Map(),  // participant id -> {pc, tile, peerId, peerSecret}
  joined: false,       // the user wants to be in the call (drives reconnects)
  reconnectAttempt: 0,
  reconnectTimer: null,
  timers: [],
  lastStats: {},
  shown: null,         // ShownFrameReporter of my preview (web/latency.js): the measured voice to lips
};
window.ideal = state; // for tests and for curious users in the console

// --- messages ------------------------------------------------------------------------------------------------
function say(text, kind = "info") {
  const el = $("message");
  el.textContent = text;
  el.className = "message" + (kind === "error" ? " error" : "");
  if (!text) el.className = "message hidden";
}
function setConnState(text, cls = "") {
  const el = $("conn-state");
  el.textContent = text;
  el.className = "pill " + cls;
}

class ServerError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// `secret`: the peer secret a /peers/ID/* route needs (from the answer to that peer's offer).
async function api(path, options = {}, secret = null) {
  const headers = Object.assign({}, options.headers || {});
  if (TOKEN) headers["Authorization"] = "Bearer " + TOKEN;
  if (secret) headers["X-Peer-Secret"] = secret;
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (err) {
    throw new ServerError(0, `Server unreachable at ${location.origin}: is \`ideal serve\` running? (${err.message})`);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    throw new ServerError(response.status, (body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

// --- set-up ----------------------------------------------------------------------------------------------------
async function init() {
  $("room-label").textContent = ROOM ? `room: ${ROOM}` : "private preview (add ?room=NAME to call others)";
  if (params.get("mode") === "watch") $("mode").value = "watch";
  if (params.get("name")) $("name").value = params.get("name");
  try {
    state.config = await api("/config");
    state.catalog = await api("/avatars");
  } catch (err) {
    say(err.message, "error");
    setConnState("server unreachable", "failed");
    setTimeout(init, 3000); // keep trying: the server may be starting
    return;
  }
  fillSelect($("avatar"), state.catalog.avatars.map((a) => [a.name, a.name]), state.catalog.default);
  fillSelect($("expression"), state.catalog.expressions.map((e) => [e, expressionLabel(e)]), "audio");
  if (params.get("expression")) $("expression").value = params.get("expression");
  await listMicrophones();
  say("");
  $("join").disabled = false;
}

function expressionLabel(e) {
  if (e === "audio") return "from my voice (audio)";
  if (e === "neutral") return "neutral (mouth only)";
  return "driver clip: " + e.replace(/^driver:/, "");
}

function fillSelect(select, items, selected) {
  select.innerHTML = "";
  for (const [value, label] of items) {
    const opt = document.createElement("option");
    opt.value = value;
    opt.textContent = label;
    if (value === selected) opt.selected = true;
    select.appendChild(opt);
  }
}

async function listMicrophones() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  const mics = devices.filter((d) => d.kind === "audioinput");
  const current = $("mic").value;
  fillSelect($("mic"), [["", "default microphone"],
    ...mics.filter((d) => d.deviceId && d.deviceId !== "default")
      .map((d, i) => [d.deviceId, d.label || `microphone ${i + 1}`])], current);
}

// --- microphone ----------------------------------------------------------------------------------------------
async function openMicrophone() {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("The microphone is only available on https or http://localhost. Open this page over https " +
      "(start the server with --cert/--key) or on the server's machine.");
  }
  const deviceId = $("mic").value;
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { deviceId: deviceId ? { exact: deviceId } : undefined, echoCancellation: true,
        noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      video: false,
    });
  } catch (err) {
    if (err.name === "NotAllowedError" || err.name === "SecurityError") {
      throw new Error("Microphone access was denied. Allow the microphone for this site (the icon in the " +
        "address bar), then press Join again.");
    }
    if (err.name === "NotFoundError" || err.name === "OverconstrainedError") {
      throw new Error("No microphone found" + (deviceId ? " (the chosen one is gone: pick another)" : "") +
        ". Plug one in, or join as a viewer.");
    }
    if (err.name === "NotReadableError") {
      throw new Error("The microphone is in use by another application or cannot be read.");
    }
    throw new Error(`Could not open the microphone: ${err.name}: ${err.message}`);
  }
}

// --- WebRTC ----------------------------------------------------------------------------------------------------
function newPeerConnection() {
  return new RTCPeerConnection({ iceServers: (state.config && state.config.ice_servers) || [] });
}

// The server (aiortc) does not trickle ICE: send the offer once every local candidate is in it.
function iceGatheringDone(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);
  });
}

async function negotiate(pc, fields) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc);
  const answer = await api("/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(Object.assign({ sdp: pc.localDescription.sdp, type: "offer" }, fields)),
  });
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  return answer;
}

async function join() {
  state.joined = true;
  $("join").disabled = true;
  $("leave").disabled = false;
  clearTimeout(state.reconnectTimer);
  try {
    if ($("mode").value === "avatar") {
      await publish();
    } else {
      document.querySelector(".tile.self").classList.add("hidden");
      setConnState(ROOM ? "watching" : "no room", ROOM ? "connected" : "");
      if (!ROOM) say("Viewer mode needs a room: open this page with ?room=NAME.", "error");
    }
    if (ROOM) startRoomPolling();
    startStats();
    state.reconnectAttempt = 0;
  } catch (err) {
    handleJoinError(err);
  }
}

async function publish() {
  say("Opening the microphone…");
  if (!state.mic) state.mic = await openMicrophone();
  listMicrophones(); // labels are known once permission is granted
  say("Connecting…");
  setConnState("connecting");
  const pc = newPeerConnection();
  state.pc = pc;
  for (const track of state.mic.getAudioTracks()) pc.addTrack(track, state.mic);
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (event) => {
    holdBriefly(event.receiver);
    if (event.track.kind === "video") {
      $("preview").srcObject = new MediaStream([event.track]);
      $("preview").play().catch(() => {});
    }
  };
  pc.onconnectionstatechange = () => onPublishState(pc);
  const answer = await negotiate(pc, {
    mode: "avatar", avatar: $("avatar").value, expression: $("expression").value, room: ROOM,
    name: $("name").value || "guest",
  });
  state.peerId = answer.peer_id;
  state.peerSecret = answer.peer_secret;
  state.shown = shownReporter($("preview"), answer.peer_id, answer.peer_secret);
}

// The server may ask for a jitter buffer target (ideal serve --jitter-buffer-target-ms); else the browser decides.
function holdBriefly(receiver) {
  const ms = state.config && state.config.jitter_buffer_target_ms;
  if (ms !== null && ms !== undefined && "jitterBufferTarget" in receiver) receiver.jitterBufferTarget = ms;
}

// The frames a <video> displays, reported to the server, which answers with the measured voice-to-lips table.
function shownReporter(video, peerId, secret) {
  const reporter = new ShownFrameReporter(video, (body) => api(`/peers/${peerId}/shown`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }, secret));
  reporter.start();
  return reporter;
}

function onPublishState(pc) {
  if (pc !== state.pc) return; // an old connection being torn down
  const s = pc.connectionState;
  if (s === "connected") {
    setConnState("connected", "connected");
    say("");
    state.reconnectAttempt = 0;
  } else if (s === "failed" || s === "closed") {
    connectionLost("The connection to the server " + (s === "failed" ? "failed." : "was closed."));
  } else if (s === "disconnected") {
    setConnState("reconnecting…", "failed");
    // "disconnected" often heals by itself within seconds; give it that chance first.
    setTimeout(() => { if (state.pc === pc && pc.connectionState === "disconnected") connectionLost("The connection dropped."); }, 4000);
  } else {
    setConnState(s);
  }
}

function handleJoinError(err) {
  if (err instanceof ServerError && [0, 429, 503].includes(err.status)) {
    // unreachable, too many tries, full or draining: all may pass, so keep trying (with back-off) and say why
    teardown(false);
    scheduleReconnect(err.status === 503 ? `The server is full: ${err.message}.` : err.message);
  } else {
    say(err.message || String(err), "error");
    state.joined = false;
    teardown(true);
    $("join").disabled = false;
    $("leave").disabled = true;
    setConnState("not connected", "failed");
  }
}

// The server closed the call: when its session policy did (410: too long, or no speech for long), say why and
// stay out rather than take the slot again; otherwise reconnect.
async function connectionLost(why) {
  if (!state.joined) return;
  if (state.peerId) {
    try {
      await api(`/peers/${state.peerId}`, {}, state.peerSecret);
    } catch (err) {
      if (err.status === 410) {
        leave();
        say(`${err.message}.`, "error");
        return;
      }
    }
  }
  if (!state.joined) return;
  teardown(false);
  scheduleReconnect(why);
}

function scheduleReconnect(why = "") {
  if (!state.joined) return;
  clearTimeout(state.reconnectTimer);
  const delay = Math.min(30, 2 ** state.reconnectAttempt);
  state.reconnectAttempt += 1;
  say(`${why} Reconnecting in ${delay} s (attempt ${state.reconnectAttempt})…`.trim(), "error");
  setConnState("reconnecting…", "failed");
  state.reconnectTimer = setTimeout(() => { if (state.joined) join(); }, delay * 1000);
}

// Close every connection; with `stopMic` also release the microphone (leaving, not reconnecting).
function teardown(stopMic) {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (state.shown) { state.shown.stop(); state.shown = null; }
  if (state.pc) {
    const pc = state.pc;
    state.pc = null;
    pc.close();
  }
  if (state.peerId) {
    api(`/peers/${state.peerId}/leave`, { method: "POST" }, state.peerSecret).catch(() => {});
    state.peerId = null;
    state.peerSecret = null;
  }
  for (const id of [...state.remotes.keys()]) dropRemote(id);
  $("preview").srcObject = null;
  $("stats").textContent = "";
  document.querySelector(".tile.self").classList.remove("hidden");
  if (stopMic && state.mic) {
    for (const t of state.mic.getTracks()) t.stop();
    state.mic = null;
  }
}

function leave() {
  state.joined = false;
  clearTimeout(state.reconnectTimer);
  teardown(true);
  $("join").disabled = false;
  $("leave").disabled = true;
  setConnState("not connected");
  say("You left the call.");
}

// --- rooms: one receive-only connection per other participant -------------------------------------------------
function startRoomPolling() {
  const poll = async () => {
    let room;
    try {
      room = await api(`/rooms/${encodeURIComponent(ROOM)}`);
    } catch (err) {
      if (err.status === 0) connectionLost(err.message);
      return;
    }
    const present = new Set(room.participants.map((p) => p.id));
    for (const p of room.participants) {
      if (p.id !== state.peerId && !state.remotes.has(p.id)) watch(p);
    }
    for (const id of [...state.remotes.keys()]) if (!present.has(id)) dropRemote(id);
  };
  poll();
  state.timers.push(setInterval(poll, 1500));
}

async function watch(participant) {
  const tile = document.createElement("figure");
  tile.className = "tile remote";
  tile.dataset.participant = participant.id;
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true; // not muted: this is how we hear them
  const caption = document.createElement("figcaption");
  caption.textContent = `${participant.name} (avatar: ${participant.avatar})`;
  const stats = document.createElement("pre");
  stats.className = "stats";
  tile.append(video, caption, stats);
  $("remotes").appendChild(tile);
  const pc = newPeerConnection();
  const entry = { pc, tile, stats, peerId: null, peerSecret: null };
  state.remotes.set(participant.id, entry);
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  video.srcObject = stream; // once: re-assigning it would abort a pending play()
  pc.ontrack = (event) => {
    holdBriefly(event.receiver);
    stream.addTrack(event.track);
    video.play().catch((err) => {
      if (err.name === "NotAllowedError") say("Click anywhere to hear the other participants (autoplay is blocked).");
    });
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed" || pc.connectionState === "closed") dropRemote(participant.id);
  };
  try {
    const answer = await negotiate(pc, { mode: "watch", room: ROOM, target: participant.id });
    entry.peerId = answer.peer_id;
    entry.peerSecret = answer.peer_secret;
    entry.shown = shownReporter(video, answer.peer_id, answer.peer_secret);
  } catch (err) {
    dropRemote(participant.id);
    if (err.status === 503) say(`Cannot show ${participant.name}: ${err.message}`, "error");
  }
}

function dropRemote(id) {
  const entry = state.remotes.get(id);
  if (!entry) return;
  state.remotes.delete(id);
  if (entry.shown) entry.shown.stop();
  entry.pc.close();
  entry.tile.remove();
  if (entry.peerId) api(`/peers/${entry.peerId}/leave`, { method: "POST" }, entry.peerSecret).catch(() => {});
}

document.addEventListener("click", () => {
  for (const v of document.querySelectorAll(".remote video")) v.play().catch(() => {});
});

// --- stats overlay: WebRTC getStats() plus what the server knows (render tier, speech, pipeline latency) --------
async function collectStats(pc, peerId, secret, shown = null) {
  const s = { fps: null, size: null, codec: null, rttMs: null, jitterBufferMs: null };
  const report = await pc.getStats();
  const codecs = {};
  report.forEach((r) => { if (r.type === "codec") codecs[r.id] = r.mimeType; });
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      s.fps = r.framesPerSecond;
      s.size = r.frameWidth ? `${r.frameWidth}x${r.frameHeight}` : null;
      s.codec = codecs[r.codecId] || null;
      if (r.jitterBufferEmittedCount) s.jitterBufferMs = 1000 * r.jitterBufferDelay / r.jitterBufferEmittedCount;
      s.framesDecoded = r.framesDecoded;
    }
    if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) {
      s.rttMs = 1000 * r.currentRoundTripTime;
    }
  });
  const server = peerId ? await api(`/peers/${peerId}`, {}, secret) : null;
  const measured = shown ? await shown.report().catch(() => null) : null;
  return { client: s, server, measured };
}

function statsText({ client: s, server, measured }) {
  const stream = (server && server.stream) || {};
  const fmt = (v, d = 0) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  const total = measured && measured.total_ms ? measured.total_ms : null;
  // Without the measurement (no frames reported yet, or a browser without requestVideoFrameCallback) the page
  // says so and shows an estimate: the server's render latency + the round trip + the jitter buffer.
  const estimate = stream.latency_ms == null || s.rttMs == null || s.jitterBufferMs == null ? null
    : stream.latency_ms + s.rttMs + s.jitterBufferMs;
  const voice = total && total.p50 != null
    ? `${fmt(total.p50)} ms voice to lips (p95 ${fmt(total.p95)}; measured, ${measured.frames} frames)`
    : `≈ ${fmt(estimate)} ms voice to screen (estimate)`;
  const lines = [
    `fps      ${fmt(s.fps)} received, ${fmt(stream.picture_fps, 1)} rendered`,
    `tier     ${stream.tier || "–"}${stream.late ? " (late)" : ""}`,
    `latency  ${voice}`,
    `         ${fmt(stream.latency_ms)} ms render, ${fmt(s.rttMs)} ms rtt, ${fmt(s.jitterBufferMs)} ms buffer`,
    `video    ${s.size || "–"} ${s.codec ? s.codec.replace("video/", "") : ""}`,
  ];
  if (server && server.stream) lines.push(`voice    ${stream.speech ? "speech" : "silence"}`);
  return lines.join("\n");
}

function startStats() {
  const tick = async () => {
    if (state.pc) {
      try {
        state.lastStats = await collectStats(state.pc, state.peerId, state.peerSecret, state.shown);
        $("stats").textContent = statsText(state.lastStats);
        if (state.lastStats.server && state.lastStats.server.draining) {
          // the server is going down: leave now so the reconnect finds the next one
          state.reconnectAttempt = 0;
          connectionLost("The server is shutting down.");
        }
      } catch (err) {
        if (err.status === 404 || err.status === 410) connectionLost("The server closed this session.");
        else if (err.status === 0) connectionLost(err.message);
      }
    }
    for (const entry of state.remotes.values()) {
      if (!entry.peerId) continue;
      try {
        entry.stats.textContent = statsText(await collectStats(entry.pc, entry.peerId, entry.peerSecret, entry.shown));
      } catch (_) { /* the room poll drops tiles that went away */ }
    }
  };
  state.timers.push(setInterval(() => tick().catch(() => {}), 1000));
}

// --- wiring ----------------------------------------------------------------------------------------------------
$("join").addEventListener("click", join);
$("leave").addEventListener("click", leave);
$("mode").addEventListener("change", () => { $("mic").disabled = $("mode").value !== "avatar"; });
// Another avatar or microphone means another session: rejoin with it (the room sees the new avatar).
for (const id of ["avatar", "mic"]) {
  $(id).addEventListener("change", () => {
    if (!state.joined || $("mode").value !== "avatar") return;
    if (id === "mic" && state.mic) { for (const t of state.mic.getTracks()) t.stop(); state.mic = null; }
    teardown(false);
    join();
  });
}
$("expression").addEventListener("change", async () => {
  if (!state.peerId) return;
  try {
    await api(`/peers/${state.peerId}/expression`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ expression: $("expression").value }),
    }, state.peerSecret);
  } catch (err) { say(err.message, "error"); }
});
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", listMicrophones);
}
window.addEventListener("pagehide", () => {
  // A beacon carries no headers: the token and the peer secret go in the query.
  const peers = [[state.peerId, state.peerSecret], ...[...state.remotes.values()].map((r) => [r.peerId, r.peerSecret])];
  for (const [id, secret] of peers.filter(([id]) => id)) {
    const query = new URLSearchParams({ secret });
    if (TOKEN) query.set("token", TOKEN);
    navigator.sendBeacon(`/peers/${id}/leave?${query}`);
  }
});
$("join").disabled = true;
init();
