"""Helpers of the browser-extension tests: the extension's fixed id, headless Chromium with it loaded, a static
site on loopback, the extension's options page driven like a person would, and the in-page picture and sound
grabbers the lip checks read."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import http.server
import json
import socketserver
import threading
from pathlib import Path

import numpy as np

EXT_DIR = Path(__file__).resolve().parent.parent / "web" / "extension"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
                  "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection"]


def extension_id() -> str:
    """Chrome's id of the unpacked extension: the manifest's public key, SHA-256, first 32 hex digits as a-p."""
    key = json.loads((EXT_DIR / "manifest.json").read_text())["key"]
    digest = hashlib.sha256(base64.b64decode(key)).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def extension_origin() -> str:
    return f"chrome-extension://{extension_id()}"


async def launch(playwright, chromium: str, profile: Path, *, extension: bool = True, wav: Path | None = None,
                 allow_media: bool = True):
    """A persistent Chromium context (extensions need one), with the extension loaded unless told not to."""
    args = list(CHROMIUM_FLAGS)
    if allow_media:
        args.append("--use-fake-ui-for-media-stream")
    if extension:
        args += [f"--disable-extensions-except={EXT_DIR}", f"--load-extension={EXT_DIR}"]
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav}")
    return await playwright.chromium.launch_persistent_context(str(profile), executable_path=chromium, args=args,
                                                               viewport={"width": 1280, "height": 900})


async def wait_text(page, selector: str, predicate, timeout: float = 15.0) -> str:
    """Poll an element's text until `predicate(text)` (extension pages forbid the eval wait_for_function uses)."""
    deadline = asyncio.get_running_loop().time() + timeout
    text = ""
    while asyncio.get_running_loop().time() < deadline:
        text = await page.inner_text(selector)
        if predicate(text):
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(f"{selector} never matched; last text: {text!r}")


async def configure(context, server_url: str, *, enabled: bool = True, default_camera: bool = False,
                    expect_running: bool = True, token: str = ""):
    """Set the extension's options in its own page, as a person would: returns that page (it shows live state)."""
    page = await context.new_page()
    await page.goto(f"{extension_origin()}/popup.html")
    await wait_text(page, "#server-state", lambda t: "checking" not in t)
    await page.fill("#server", server_url)
    await page.fill("#token", token)
    await page.set_checked("#enabled", enabled)
    await page.set_checked("#defaultCamera", default_camera)
    await page.click("#save")
    await wait_text(page, "#saved", lambda t: t == "saved")
    if expect_running:
        await wait_text(page, "#server-state", lambda t: "server running" in t)
    return page


class _Site(http.server.SimpleHTTPRequestHandler):
    overrides: dict[str, bytes] = {}

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        body = self.overrides.get(self.path.split("?", 1)[0])
        if body is None:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "application/javascript" if self.path.endswith(".js") else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StaticSite:
    """A folder served on 127.0.0.1 (a free port) from a thread; `overrides` maps paths to bodies served instead."""

    def __init__(self, folder: Path, overrides: dict[str, bytes] | None = None) -> None:
        handler = type("Handler", (_Site,), {"overrides": dict(overrides or {})})
        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), functools.partial(handler,
                                                                                           directory=str(folder)))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# Runs in a page: for `durationMs`, every picture the <video> `selector` presents (requestVideoFrameCallback) as a
# JPEG with its presentation time, and the loudness of the audio track `audioSelector` plays (or the video's own
# audio track) in 10 ms blocks as the page receives it (MediaStreamTrackProcessor): [read time, RMS, the block's
# own timestamp], all in seconds on performance.now()'s clock (+ timeOrigin: seconds since the epoch).
GRAB_JS = """
async ({selector, audioSelector, durationMs, everyNth}) => {
  const v = document.querySelector(selector);
  const a = audioSelector ? document.querySelector(audioSelector) : v;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const ctx = c.getContext('2d');
  const pictures = [], sound = [];
  const t0 = performance.now();
  let n = 0, stop = false;
  const onFrame = (now, meta) => {
    if (stop) return;
    if (n++ % everyNth === 0) {
      ctx.drawImage(v, 0, 0, c.width, c.height);
      pictures.push({t: meta.presentationTime / 1000, jpeg: c.toDataURL('image/jpeg', 0.9)});
    }
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
  const track = a.srcObject.getAudioTracks()[0];
  const copy = track.clone();
  const reader = new MediaStreamTrackProcessor({track: copy}).readable.getReader();
  const readSound = (async () => {
    while (!stop) {
      const {value, done} = await reader.read();
      if (done) break;
      const t = performance.now() / 1000;
      const x = new Float32Array(value.numberOfFrames);
      value.copyTo(x, {planeIndex: 0, format: 'f32-planar'});
      let s = 0; for (let i = 0; i < x.length; i++) s += x[i] * x[i];
      sound.push([t, Math.sqrt(s / x.length), value.timestamp / 1e6]);
      value.close();
    }
  })();
  await new Promise((r) => setTimeout(r, durationMs));
  stop = true;
  reader.cancel();
  await readSound.catch(() => {});
  copy.stop();
  return {pictures, sound, t0: t0 / 1000, timeOrigin: performance.timeOrigin / 1000};
}
"""


def delay_ms(t_from: np.ndarray, x_from: np.ndarray, t_to: np.ndarray, x_to: np.ndarray,
             max_ms: float = 1500.0, step_ms: float = 10.0) -> tuple[float, float] | None:
    """How much later the same signal shows up at `to` than at `from` (both on one clock): the lag in
    [0, max_ms] that maximises Pearson r of x_to(t + lag) with x_from(t) on a 10 ms grid; (lag ms, r)."""
    from ideal.avatar.evaluation.face_metrics import pearson

    ok_f, ok_t = np.isfinite(x_from), np.isfinite(x_to)
    t_from, x_from, t_to, x_to = t_from[ok_f], x_from[ok_f], t_to[ok_t], x_to[ok_t]
    if len(t_from) < 10 or len(t_to) < 10:
        return None
    grid = np.arange(max(t_from[0], t_to[0] - max_ms / 1000), min(t_from[-1], t_to[-1] - max_ms / 1000),
                     step_ms / 1000)
    if len(grid) < 100:
        return None
    ref = np.interp(grid, t_from, x_from)
    best: tuple[float, float] | None = None
    for lag in np.arange(0.0, max_ms + step_ms / 2, step_ms):
        other = np.interp(grid + lag / 1000, t_to, x_to)
        if other.std() < 1e-9 or ref.std() < 1e-9:
            continue
        r = pearson(ref, other)
        if best is None or r > best[1]:
            best = (float(lag), r)
    return best


def decode_pictures(pictures: list[dict]) -> list[np.ndarray]:
    import cv2

    out = []
    for p in pictures:
        data = np.frombuffer(base64.b64decode(p["jpeg"].split(",", 1)[1]), np.uint8)
        out.append(cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return out
