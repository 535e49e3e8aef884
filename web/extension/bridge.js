// ideal-nerf avatar camera: the bridge between page.js (the page's world: it may use RTCPeerConnection and
// getUserMedia, but has no chrome.* APIs) and the service worker (background.js). Runs in the extension's
// isolated world. page.js hands it a MessagePort; every request on it is forwarded to the service worker, which
// answers with data the page may see (never the token or a peer secret). Setting changes are pushed to the page.
"use strict";

(() => {
  let port = null;

  async function forward(op, args) {
    try {
      return await chrome.runtime.sendMessage({ op, args });
    } catch (err) {
      // the extension was reloaded or updated under this page
      return { ok: false, status: -1, error: "The ideal-nerf extension was reloaded: reload this page." };
    }
  }

  async function pushSettings() {
    if (!port) return;
    const r = await forward("settings", {});
    if (r && r.ok) port.postMessage({ type: "settings", settings: r.data });
  }

  window.addEventListener("message", (event) => {
    const data = event.data;
    if (event.source !== window || !data || data.idealNerf !== "connect" || port || !event.ports[0]) return;
    port = event.ports[0];
    port.onmessage = async (m) => {
      const { id, op, args } = m.data || {};
      if (typeof op !== "string") return;
      port.postMessage({ reply: id, value: await forward(op, args || {}) });
    };
    pushSettings();
  });
  // page.js may have run first: tell it the bridge is here (it then sends its port again)
  window.postMessage({ idealNerf: "bridge-ready" }, "*");

  chrome.storage.onChanged.addListener((changes, area) => {
    if (area === "local" && ("enabled" in changes || "defaultCamera" in changes)) pushSettings();
  });
})();
