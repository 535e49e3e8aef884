"""The browser extension (web/extension/) in headless Chromium, on a plain local page that knows nothing of it.

1. The page sees both devices next to the real ones; getUserMedia for the avatar camera gives the avatar (a face
   on the pictures) and, in the same call, the lip-aligned voice; other devices are untouched; a second call
   (the voice alone, as call apps ask) shares the one connection; stopping every track closes it on the server;
   choosing the avatar again opens a new one; switched off, the page sees exactly the browser's devices.
2. Failures a person can understand: microphone denied; server not running (the page's NotReadableError and the
   options page both say what to start); server full (503); the connection dropped (the camera shows a
   "reconnecting" picture, not a frozen one), a server that refuses the extension's origin (the picture says
   what to start), one that wants a token (the picture asks for it), then recovery on the same tracks once the
   token is given in the options.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf

from extension_browser import (GRAB_JS, StaticSite, configure, decode_pictures, extension_origin, launch,
                               wait_text)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CAMERA = "ideal-nerf-avatar"
VOICE = "ideal-nerf-avatar-voice"
PAGE = "<!doctype html><title>a call page</title><video id=v autoplay muted playsinline></video>"


@pytest.fixture(scope="module")
def mic_wav(new_speech_wav, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 kHz WAV for Chromium's fake microphone: 1 s of silence, then 6 s of speech."""
    from ideal.avatar.audio.io import load_audio, resample

    audio = np.concatenate([np.zeros(16_000, np.float32), load_audio(new_speech_wav)[: 6 * 16_000]])
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    sf.write(path, resample(audio, 16_000, 48_000), 48_000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("site")
    (folder / "index.html").write_text(PAGE)
    s = StaticSite(folder)
    yield s
    s.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(default_avatar: Path, port: int, **kw):
    from ideal.server.config import ServerConfig

    kw.setdefault("allow_origins", [extension_origin()])
    return ServerConfig(host="127.0.0.1", port=port, avatars=[str(default_avatar)], **kw)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(default_avatar: Path):
    from ideal.server.app import start_server

    s = await start_server(_config(default_avatar, 0, max_sessions=2))
    yield s
    await s.stop()


def _avatar_peers(server) -> list:
    return [p for p in server.state.peers.peers.values() if p.kind == "avatar"]


async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.1)


DEVICES_JS = "async () => (await navigator.mediaDevices.enumerateDevices()).map((d) => [d.kind, d.label, d.deviceId])"

# getUserMedia in the page; the stream is kept as window.streams[name]; returns its tracks or the error
GUM_JS = """async ([name, constraints]) => {
  try {
    const s = await navigator.mediaDevices.getUserMedia(constraints);
    (window.streams = window.streams || {})[name] = s;
    return {tracks: s.getTracks().map((t) => ({kind: t.kind, label: t.label, state: t.readyState,
                                               deviceId: t.getSettings().deviceId}))};
  } catch (e) { return {error: e.name, message: e.message}; }
}"""

STOP_JS = "(name) => window.streams[name].getTracks().forEach((t) => t.stop())"

SHOW_JS = """async (name) => { const v = document.getElementById('v'); v.srcObject = window.streams[name];
  await v.play();
  await new Promise((r) => { const f = () => v.currentTime > 0.5 ? r() : setTimeout(f, 50); f(); }); }"""


def _faces(grab: dict) -> float:
    from ideal.bench.mouth import mouth_openings

    return float(np.isfinite(mouth_openings(decode_pictures(grab["pictures"]))).mean())


@pytest.mark.asyncio(loop_scope="module")
async def test_the_avatar_is_a_camera_and_a_microphone_on_any_page(server, chromium, mic_wav, site, tmp_path):
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        ctx = await launch(pw, chromium, tmp_path / "profile", wav=mic_wav)
        try:
            options = await configure(ctx, server.url)
            page = ctx.pages[0]
            await page.bring_to_front()  # a background tab gets few frame callbacks
            await page.goto(site.url + "/index.html")
            devices = await page.evaluate(DEVICES_JS)

            # the avatar camera with audio in one call: avatar picture + lip-aligned voice, one connection
            both = await page.evaluate(GUM_JS, ["both", {"video": {"deviceId": {"exact": CAMERA}}, "audio": True}])
            await page.evaluate(SHOW_JS, "both")
            grab = await page.evaluate(GRAB_JS, {"selector": "#v", "audioSelector": None, "durationMs": 4000,
                                                 "everyNth": 3})
            peers = _avatar_peers(server)
            first_id = peers[0].id if peers else None
            voice_on_server = bool(peers) and peers[0].voice
            live = await wait_text(options, "#live", lambda t: "connected" in t and " fps" in t)

            # other devices: what the browser gives
            camera = await page.evaluate(GUM_JS, ["camera", {"video": True}])
            mic = await page.evaluate(GUM_JS, ["mic", {"audio": True}])
            # the voice alone (call apps ask for the microphone in a call of its own): the same connection
            voice = await page.evaluate(GUM_JS, ["voice", {"audio": {"deviceId": VOICE}}])
            peers_with_voice_call = len(_avatar_peers(server))

            await page.evaluate(STOP_JS, "both")
            await asyncio.sleep(1.0)
            still_open = len(_avatar_peers(server))  # the voice track still holds the connection
            await page.evaluate(STOP_JS, "voice")
            await _wait(lambda: not _avatar_peers(server), 5, "the connection to close once every track stopped")

            # choose the avatar again: a new connection
            again = await page.evaluate(GUM_JS, ["again", {"video": {"deviceId": CAMERA}}])
            await _wait(lambda: len(_avatar_peers(server)) == 1, 10, "a new connection")
            second_id = _avatar_peers(server)[0].id
            await page.evaluate(STOP_JS, "again")
            await _wait(lambda: not _avatar_peers(server), 5, "the second connection to close")

            # switched off: exactly the browser's own devices, and no avatar
            await configure(ctx, server.url, enabled=False)
            await page.reload()
            devices_off = await page.evaluate(DEVICES_JS)
            off = await page.evaluate(GUM_JS, ["off", {"video": {"deviceId": {"exact": CAMERA}}}])
            for name in ("camera", "mic"):
                await page.evaluate("(n) => window.streams && window.streams[n] && "
                                    "window.streams[n].getTracks().forEach((t) => t.stop())", name)
        finally:
            await ctx.close()

    ours = [d for d in devices if d[2] in (CAMERA, VOICE)]
    assert sorted(ours) == [["audioinput", "ideal-nerf avatar voice", VOICE],
                            ["videoinput", "ideal-nerf avatar", CAMERA]], devices
    assert [d for d in devices if d[2] not in (CAMERA, VOICE)] == devices_off, "other devices must be untouched"
    assert any(d[0] == "videoinput" for d in devices_off), "Chromium's fake camera is missing"

    assert both.get("tracks"), both
    tracks = {t["kind"]: t for t in both["tracks"]}
    assert tracks["video"]["label"] == "ideal-nerf avatar" and tracks["video"]["deviceId"] == CAMERA
    assert tracks["audio"]["label"] == "ideal-nerf avatar voice" and tracks["audio"]["deviceId"] == VOICE
    assert voice_on_server, "the extension did not ask the server for the voice"
    faces = _faces(grab)
    assert len(grab["pictures"]) >= 15 and faces > 0.9, (len(grab["pictures"]), faces)
    level = np.asarray(grab["sound"])[:, 1]
    assert level.max() > 0.01, f"the avatar voice carries no speech (max RMS {level.max():.4f})"
    assert "connected" in live

    assert camera["tracks"][0]["label"] not in ("ideal-nerf avatar",) and camera["tracks"][0]["kind"] == "video"
    assert mic["tracks"][0]["label"] != "ideal-nerf avatar voice" and mic["tracks"][0]["kind"] == "audio"
    assert voice["tracks"] == [{"kind": "audio", "label": "ideal-nerf avatar voice", "state": "live",
                                "deviceId": VOICE}], voice
    assert peers_with_voice_call == 1 and still_open == 1
    assert again.get("tracks") and second_id != first_id

    assert devices_off and not [d for d in devices_off if d[2] in (CAMERA, VOICE)]
    assert off.get("error") in ("OverconstrainedError", "NotFoundError"), off


@pytest.mark.asyncio(loop_scope="module")
async def test_failures_say_what_to_do_and_a_dropped_connection_recovers(default_avatar, chromium, mic_wav, site,
                                                                        tmp_path):
    from playwright.async_api import async_playwright

    from ideal.server.app import start_server

    port = _free_port()
    config = _config(default_avatar, port, max_sessions=1)
    down_url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    server = await start_server(config)
    avatar_gum = ["a", {"video": {"deviceId": {"exact": CAMERA}}, "audio": True}]
    link_js = "() => { const l = window.__idealNerfAvatar.link(); return l && {state: l.state, message: l.message}; }"
    try:
        async with async_playwright() as pw:
            # microphone denied (no fake consent UI: Chromium refuses the prompt)
            ctx = await launch(pw, chromium, tmp_path / "denied", wav=mic_wav, allow_media=False)
            await configure(ctx, server.url)
            page = ctx.pages[0]
            await page.goto(site.url + "/index.html")
            denied = await page.evaluate(GUM_JS, avatar_gum)
            await ctx.close()

            ctx = await launch(pw, chromium, tmp_path / "profile", wav=mic_wav)
            # server not running: the page's error and the options page say what to start
            options = await configure(ctx, down_url, expect_running=False)
            options_down = await wait_text(options, "#server-state", lambda t: "not running" in t)
            page = ctx.pages[0]
            await page.goto(site.url + "/index.html")
            down = await page.evaluate(GUM_JS, avatar_gum)
            await options.reload()
            options_last = await wait_text(options, "#live", lambda t: "last failure" in t)

            # running: connected; a second page finds the server full
            await configure(ctx, server.url)
            await page.bring_to_front()
            await page.reload()
            first = await page.evaluate(GUM_JS, avatar_gum)
            await page.evaluate(SHOW_JS, "a")
            other = await ctx.new_page()
            await other.goto(site.url + "/index.html")
            full = await other.evaluate(GUM_JS, avatar_gum)
            await other.close()
            await page.bring_to_front()

            # the server goes away: the camera shows "reconnecting", it does not freeze
            await server.stop()
            await page.wait_for_function("() => window.__idealNerfAvatar.link().state === 'reconnecting'",
                                         timeout=15_000)
            await asyncio.sleep(1.5)
            frames_before = await page.evaluate("document.getElementById('v').getVideoPlaybackQuality()"
                                                ".totalVideoFrames")
            card = await page.evaluate(GRAB_JS, {"selector": "#v", "audioSelector": None, "durationMs": 1000,
                                                 "everyNth": 1})
            frames_after = await page.evaluate("document.getElementById('v').getVideoPlaybackQuality()"
                                               ".totalVideoFrames")
            shot = tmp_path / "reconnecting.png"
            await page.screenshot(path=str(shot))
            print(f"screenshot of the reconnecting picture: {shot}")

            # back, but refusing the extension's origin: the picture says what to start
            server = await start_server(_config(default_avatar, port, max_sessions=1, allow_origins=[]))
            await page.wait_for_function("() => (window.__idealNerfAvatar.link().message || '')"
                                         ".includes('--allow-origin')", timeout=30_000)
            refused = await page.evaluate(link_js)
            await server.stop()

            # back with an access token: the picture asks for it; given in the options, the same tracks show the
            # avatar again
            config = _config(default_avatar, port, max_sessions=1, token="s3cret-token")
            server = await start_server(config)
            await page.wait_for_function("() => (window.__idealNerfAvatar.link().message || '')"
                                         ".includes('access token')", timeout=30_000)
            needs_token = await page.evaluate(link_js)
            await configure(ctx, server.url, token="s3cret-token")
            await page.bring_to_front()
            await page.wait_for_function("() => window.__idealNerfAvatar.link().state === 'connected'",
                                         timeout=40_000)
            await asyncio.sleep(2.0)
            recovered = await page.evaluate(GRAB_JS, {"selector": "#v", "audioSelector": None, "durationMs": 1500,
                                                      "everyNth": 2})
            track_state = await page.evaluate("window.streams.a.getVideoTracks()[0].readyState")
            await ctx.close()
    finally:
        await server.stop()

    assert denied.get("error") == "NotAllowedError" and "microphone access was denied" in denied["message"], denied
    assert down.get("error") == "NotReadableError", down
    assert "not running" in down["message"] and "ideal serve --allow-origin " + extension_origin() in down["message"]
    assert "ideal serve --allow-origin " + extension_origin() in options_down, options_down
    assert "not running" in options_last, options_last
    assert first.get("tracks"), first
    assert full.get("error") == "NotReadableError" and "full" in full["message"], full

    assert frames_after > frames_before + 5, "the camera froze while the server was gone"
    images = decode_pictures(card["pictures"])
    assert images, "no picture while reconnecting"
    lum = np.mean([im.mean() for im in images])
    assert lum < 70, f"the reconnecting picture is not the dark status card (mean {lum:.0f})"
    assert refused["state"] == "reconnecting" and f"--allow-origin {extension_origin()}" in refused["message"]
    assert "needs an access token" in needs_token["message"], needs_token
    assert track_state == "live"
    assert _faces(recovered) > 0.9, "the avatar did not come back on the same track"
