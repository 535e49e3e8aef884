// ideal-nerf avatar camera: settings and live state. Settings live in chrome.storage.local; the live state of
// every page that uses the avatar comes from page.js through the service worker (chrome.storage.session).
"use strict";

const $ = (id) => document.getElementById(id);
const FIELDS = ["server", "token", "avatar", "expression", "enabled", "defaultCamera"];
const DEFAULTS = { server: "http://localhost:8080", token: "", avatar: "", expression: "audio", enabled: true,
  defaultCamera: false };

function ask(op, args = {}) {
  return chrome.runtime.sendMessage({ op, args });
}

function expressionLabel(e) {
  if (e === "audio") return "from my voice (audio)";
  if (e === "neutral") return "neutral (mouth only)";
  return "driver clip: " + e.replace(/^driver:/, "");
}

function fill(select, items, value) {
  select.innerHTML = "";
  for (const [v, label] of items) {
    const opt = document.createElement("option");
    opt.value = v;
    opt.textContent = label;
    select.appendChild(opt);
  }
  select.value = value;
  if (select.value !== value && items.length) select.value = items[0][0];
}

async function load() {
  const s = Object.assign({}, DEFAULTS, await chrome.storage.local.get(FIELDS));
  $("server").value = s.server;
  $("token").value = s.token;
  $("enabled").checked = s.enabled;
  $("defaultCamera").checked = s.defaultCamera;
  $("avatar").dataset.value = s.avatar;
  $("expression").dataset.value = s.expression;
  await checkServer();
}

async function checkServer() {
  const el = $("server-state");
  const r = await ask("catalog");
  if (!r || !r.ok) {
    el.className = "state error";
    el.textContent = (r && r.error) || "no answer from the extension";
    if (r && r.status === 403 || r && r.status === 0) {
      // offer the exact command
      const cmd = (await ask("serveCommand")).data;
      el.textContent += "\n";
      const code = document.createElement("code");
      code.textContent = cmd;
      el.appendChild(code);
    }
    return;
  }
  const avatars = r.data.avatars || [];
  fill($("avatar"), [["", `the server's default (${r.data.default})`], ...avatars.map((a) => [a.name, a.name])],
    $("avatar").dataset.value || "");
  fill($("expression"), (r.data.expressions || ["audio"]).map((e) => [e, expressionLabel(e)]),
    $("expression").dataset.value || "audio");
  const h = r.data.health || {};
  el.className = "state";
  el.textContent = `server running: ${avatars.length} avatar(s), ${h.sessions ?? "?"} session(s) in use`;
}

async function save(event) {
  event.preventDefault();
  let server = $("server").value.trim().replace(/\/+$/, "");
  let origin;
  try { origin = new URL(server).origin; } catch (_) { $("saved").textContent = "not a URL"; return; }
  const local = ["localhost", "127.0.0.1"].includes(new URL(server).hostname);
  if (!local) {
    // another machine: the extension needs the user's permission to reach it
    const granted = await chrome.permissions.request({ origins: [origin + "/*"] });
    if (!granted) { $("saved").textContent = `no permission to reach ${origin}`; return; }
  }
  const values = { server, token: $("token").value, avatar: $("avatar").value, expression: $("expression").value,
    enabled: $("enabled").checked, defaultCamera: $("defaultCamera").checked };
  const before = await chrome.storage.local.get(["expression"]);
  await chrome.storage.local.set(values);
  $("avatar").dataset.value = values.avatar;
  $("expression").dataset.value = values.expression;
  if ((before.expression || "audio") !== values.expression) await ask("expression", { expression: values.expression });
  $("saved").textContent = "saved";
  setTimeout(() => { $("saved").textContent = ""; }, 1500);
  await checkServer();
}

async function showLive() {
  const all = await chrome.storage.session.get(null);
  const now = Date.now();
  const lines = [];
  for (const [key, v] of Object.entries(all)) {
    if (!key.startsWith("live:") || !v || now - v.time > 5000) continue;
    const s = v.stats || {};
    const fmt = (x, d = 0) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
    lines.push(`${v.origin}\n  ${v.state}${v.state === "connected" ? "" : ": " + v.message}\n` +
      `  ${fmt(s.fps)} fps, render ${fmt(s.render_latency_ms)} ms, voice to screen ≈ ${fmt(s.voice_to_screen_ms)} ms`);
  }
  if (all.lastError && now - all.lastError.time < 60000 && !lines.length) {
    lines.push(`last failure (${all.lastError.origin}):\n  ${all.lastError.error}`);
  }
  $("live").textContent = lines.join("\n") || "no page uses the avatar now";
}

$("settings").addEventListener("submit", save);
load();
showLive();
setInterval(showLive, 1000);
