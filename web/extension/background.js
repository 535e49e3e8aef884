// ideal-nerf avatar camera: the extension's service worker. It alone talks HTTP to `ideal serve` (the signalling:
// offer, stats, leave, expression), with the extension's own origin and the user's token, so neither the token
// nor a peer's secret ever reaches the call page. The page's RTCPeerConnection (page.js) gets SDP answers only.
"use strict";

const DEFAULTS = {
  server: "http://localhost:8080", token: "", avatar: "", expression: "audio", enabled: true, defaultCamera: false,
};
const PAGE_SETTINGS = ["enabled", "defaultCamera"]; // all a call page learns of the settings

async function settings() {
  return Object.assign({}, DEFAULTS, await chrome.storage.local.get(Object.keys(DEFAULTS)));
}

function serveCommand() {
  return `ideal serve --allow-origin chrome-extension://${chrome.runtime.id}`;
}

// What a person should read for each refusal of the server (the server's own message follows it).
function explain(status, message, server) {
  const said = message ? ` (${message})` : "";
  switch (status) {
    case 0: return `The avatar server is not running at ${server}: start it with \`${serveCommand()}\`, or set ` +
      "its address in the extension's options.";
    case 401: return `The avatar server at ${server} needs an access token: enter it in the extension's options${said}.`;
    case 403: return `The avatar server at ${server} refuses this extension${said}: start it with \`${serveCommand()}\`.`;
    case 410: return `The avatar server ended this call${said}.`;
    case 429: return `The avatar server refuses new connections for a while${said}.`;
    case 503: return `The avatar server is full${said}. Try again later, or start another server.`;
    default: return `The avatar server answered ${status}${said}.`;
  }
}

// One request to the server: {ok, status, data} or {ok: false, status (0: unreachable), error}.
async function api(path, { method = "GET", body = null, secret = null } = {}) {
  const s = await settings();
  let url;
  try {
    url = new URL(path, s.server);
  } catch (_) {
    return { ok: false, status: 0, error: `The server address ${JSON.stringify(s.server)} is not a URL: fix it in ` +
      "the extension's options (e.g. http://localhost:8080)." };
  }
  const headers = {};
  if (s.token) headers.Authorization = "Bearer " + s.token;
  if (secret) headers["X-Peer-Secret"] = secret;
  if (body !== null) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, { method, headers, body: body === null ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit" });
  } catch (err) {
    return { ok: false, status: 0, error: explain(0, "", s.server) };
  }
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    return { ok: false, status: response.status, error: explain(response.status, data && data.error, s.server) };
  }
  return { ok: true, status: response.status, data };
}

// Peers this extension opened: id -> {secret, tab, frame}, in session storage (extension pages only; it survives the
// worker being stopped between events, not a browser restart).
async function peerOf(id, sender) {
  const key = "peer:" + id;
  const entry = (await chrome.storage.session.get(key))[key];
  if (!entry) return null;
  if (sender.tab && (entry.tab !== sender.tab.id || entry.frame !== sender.frameId)) return null;
  return entry;
}

async function setError(sender, error) {
  if (!sender.tab) return;
  await chrome.storage.session.set({ lastError: { error, origin: originOf(sender), time: Date.now() } });
}

function originOf(sender) {
  try { return new URL(sender.url || sender.origin).origin; } catch (_) { return ""; }
}

const handlers = {
  // page.js: what it needs to know (on/off, avatar as the default camera).
  async settings() {
    const s = await settings();
    return { ok: true, data: Object.fromEntries(PAGE_SETTINGS.map((k) => [k, s[k]])) };
  },

  // page.js, before it makes its offer: ICE servers and the picture size of the chosen avatar.
  async prepare(args, sender) {
    const config = await api("/config");
    if (!config.ok) { await setError(sender, config.error); return config; }
    const catalog = await api("/avatars");
    if (!catalog.ok) { await setError(sender, catalog.error); return catalog; }
    const s = await settings();
    const avatars = catalog.data.avatars || [];
    const avatar = avatars.find((a) => a.name === s.avatar) || avatars.find((a) => a.name === catalog.data.default)
      || avatars[0];
    return { ok: true, data: { ice_servers: config.data.ice_servers || [], output_size: avatar && avatar.output_size,
      avatar: avatar && avatar.name } };
  },

  // page.js: its offer (microphone out, avatar and lip-aligned voice back) -> the server's answer.
  async offer(args, sender) {
    const s = await settings();
    const r = await api("/offer", { method: "POST", body: {
      sdp: String(args.sdp || ""), type: "offer", mode: "avatar", voice: true, avatar: s.avatar || undefined,
      expression: s.expression || "audio", name: "ideal-nerf extension" } });
    if (!r.ok) { await setError(sender, r.error); return r; }
    const id = r.data.peer_id;
    await chrome.storage.session.set({ ["peer:" + id]: { secret: r.data.peer_secret, tab: sender.tab && sender.tab.id,
      frame: sender.frameId, origin: originOf(sender), opened: Date.now() }, lastError: null });
    return { ok: true, data: { sdp: r.data.sdp, type: r.data.type, peer_id: id, avatar: r.data.avatar } };
  },

  // page.js, every second while connected: the server's view of the peer (render latency, fps, tier, speech).
  async stats(args, sender) {
    const peer = await peerOf(String(args.peer_id), sender);
    if (!peer) return { ok: false, status: 404, error: "not a peer of this page" };
    const r = await api(`/peers/${encodeURIComponent(args.peer_id)}`, { secret: peer.secret });
    if (!r.ok) return r;
    const stream = r.data.stream || {};
    return { ok: true, data: { latency_ms: stream.latency_ms, picture_fps: stream.picture_fps, tier: stream.tier,
      speech: stream.speech, draining: r.data.draining, expression: r.data.expression } };
  },

  async leave(args, sender) {
    const peer = await peerOf(String(args.peer_id), sender);
    if (!peer) return { ok: false, status: 404, error: "not a peer of this page" };
    await chrome.storage.session.remove("peer:" + args.peer_id);
    return api(`/peers/${encodeURIComponent(args.peer_id)}/leave`, { method: "POST", body: {}, secret: peer.secret });
  },

  // page.js, every second: the live state the popup shows.
  async report(args, sender) {
    const key = `live:${sender.tab ? sender.tab.id : "-"}:${sender.frameId || 0}`;
    if (args.state === "closed") {
      await chrome.storage.session.remove(key);
    } else {
      await chrome.storage.session.set({ [key]: Object.assign({}, args, { origin: originOf(sender),
        time: Date.now() }) });
    }
    return { ok: true };
  },

  // popup: the server's health and catalog.
  async catalog() {
    const health = await api("/healthz");
    if (!health.ok && health.status === 0) return health;
    const catalog = await api("/avatars");
    if (!catalog.ok) return catalog;
    return { ok: true, data: Object.assign({ health: health.data }, catalog.data) };
  },

  // popup: a new expression source applies to every live call at once.
  async expression(args) {
    const all = await chrome.storage.session.get(null);
    const out = [];
    for (const [key, peer] of Object.entries(all)) {
      if (!key.startsWith("peer:")) continue;
      out.push(await api(`/peers/${key.slice(5)}/expression`, { method: "POST",
        body: { expression: String(args.expression) }, secret: peer.secret }));
    }
    return { ok: out.every((r) => r.ok), data: out.length };
  },

  async serveCommand() {
    return { ok: true, data: serveCommand() };
  },
};

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (sender.id !== chrome.runtime.id) return false;
  const handler = message && Object.prototype.hasOwnProperty.call(handlers, message.op) && handlers[message.op];
  if (!handler) {
    sendResponse({ ok: false, status: -1, error: `unknown request ${message && message.op}` });
    return false;
  }
  // popup-only requests must not come from a content script (the popup may be open in a tab: judge by its URL)
  const fromExtensionPage = (sender.url || "").startsWith(chrome.runtime.getURL(""));
  if (!fromExtensionPage && ["catalog", "expression", "serveCommand"].includes(message.op)) {
    sendResponse({ ok: false, status: -1, error: "not allowed from a page" });
    return false;
  }
  handler(message.args || {}, sender).then(sendResponse, (err) => sendResponse({ ok: false, status: -1,
    error: String(err && err.message || err) }));
  return true; // answered asynchronously
});

// A closed tab leaves no live entry or peer secret behind (its peer connection is gone with it; the server closes
// the peer when the connection fails).
chrome.tabs.onRemoved.addListener(async (tabId) => {
  const all = await chrome.storage.session.get(null);
  const stale = Object.entries(all).filter(([key, v]) => (key.startsWith("live:" + tabId + ":"))
    || (key.startsWith("peer:") && v && v.tab === tabId)).map(([key]) => key);
  if (stale.length) await chrome.storage.session.remove(stale);
});
