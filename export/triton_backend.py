"""Triton backend: `avatar.backend.Backend` over a Triton Inference Server's gRPC API (`tritonclient`).

    backend = TritonBackend("avatars/obama", "grpc://render-1:8001")   # --render-url on serve / bench / dub
    backend.render(audio, expression, pose, "fast")                   # one request to NS.render.fast

One request per call: a frame, or the batch the streamer's render queue formed. The server runs the ensemble
condition -> field -> refine -> pack (`export.triton_models`) and batches requests of every session and node;
the reply is the crop in RGBA8 (a quarter of float32's bytes on the wire), unpacked here to the protocol's float
crop: the in-process backends' frames within half a level of 255.

At start the server must be live and serve this avatar's render models exported from the same weights
(fingerprint and repository format in each model's config); otherwise a BackendError says which and what to do.
While running, a call that fails (server gone, timed out after `timeout_s`, model unloaded) raises
`RenderUnavailable`: the streamer repeats the last frame. The client is then dropped, and calls fail at once
until a backoff (doubling from `retry_s` to `max_retry_s`) lets one try a fresh connection, which checks the
models again (a restarted server could hold another avatar). A warning names the server when it goes, at most
every `warn_every_s` while it stays away, and when it is back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ideal.avatar.backend import RenderOutput, RenderUnavailable, Tier
from ideal.avatar.errors import BackendError, InputError
from ideal.export.artifacts import avatar_fingerprint
from ideal.export.pipeline import StagedBackend
from ideal.export.triton_models import P_TIER, check_served_model, namespace_for, render_model, unpack_rgba

log = logging.getLogger(__name__)

# A reply later than this is dropped and the server treated as lost. Frames do not wait for it either way (the
# streamer repeats a frame whose render missed its deadline and shows the late picture in the next ones), so it
# only bounds how long a hung server holds the render thread; a crashed one refuses the connection at once. Generous
# enough for a loaded server's slowest tier.
DEFAULT_TIMEOUT_S = 5.0


def import_tritonclient() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise BackendError("tritonclient is not installed", "pip install 'ideal-nerf[triton]'") from exc
    return grpcclient


def parse_render_url(url: str) -> str:
    """`grpc://HOST:PORT` -> `HOST:PORT` (what tritonclient dials)."""
    parsed = urlparse(url)
    if parsed.scheme != "grpc" or not parsed.hostname or parsed.path not in ("", "/"):
        raise InputError(f"--render-url {url}: not a Triton gRPC URL", "use grpc://HOST:PORT, e.g. grpc://127.0.0.1:8001")
    try:
        port = parsed.port or 8001
    except ValueError:
        raise InputError(f"--render-url {url}: bad port", "use grpc://HOST:PORT with PORT 1-65535") from None
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{port}"


class TritonBackend(StagedBackend):
    """The avatar's render models on a Triton server; `render` follows `avatar.backend.Backend`."""

    name = "triton"

    def __init__(self, avatar_dir: str | Path, url: str, tiers: list[str] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, namespace: str | None = None, retry_s: float = 0.25,
                 max_retry_s: float = 4.0, warn_every_s: float = 10.0) -> None:
        from ideal.avatar.avatar_manifest import load_avatar_manifest

        self._grpc = import_tritonclient()
        self.url = url
        self.target = parse_render_url(url)
        self.avatar_dir = Path(avatar_dir)
        self.namespace = namespace or namespace_for(self.avatar_dir)
        self.fingerprint = avatar_fingerprint(self.avatar_dir)
        self.timeout_s = float(timeout_s)
        self.device = f"triton {self.target}"
        self._retry = (float(retry_s), float(max_retry_s))
        self._warn_every_s = float(warn_every_s)
        self._lock = threading.Lock()
        self._client: Any = None
        self._down_since: float | None = None
        self._next_try = 0.0
        self._backoff = 0.0
        self._reason = ""
        self._last_warning = 0.0
        self._closed = False
        self._prober: threading.Thread | None = None
        self._last_inputs: dict[str, np.ndarray] | None = None
        self.failures = 0  # calls that raised RenderUnavailable, for reports
        self.recoveries = 0
        wanted = list(tiers or load_avatar_manifest(self.avatar_dir).tiers)
        client = self._dial()
        try:
            served = self._check(client, wanted, strict=bool(tiers))
            metadata = served.pop("_metadata")
            super().__init__(served, {i.name: ["B", *map(int, i.shape[1:])] for i in metadata.inputs})
            self._warm_up(client, timeout_s=max(self.timeout_s, 30.0))
        except BaseException:
            client.close()
            raise
        self._client = client
        log.info("triton backend for %s: %s serves %s", self.avatar_dir, url,
                 ", ".join(render_model(self.namespace, t) for t in served))

    # --- connecting and checking --------------------------------------------------------------------------
    def _dial(self) -> Any:
        """A fresh client after checking the server is live (BackendError with the URL when it is not)."""
        client = self._grpc.InferenceServerClient(self.target)
        try:
            live = client.is_server_live(client_timeout=max(self.timeout_s, 2.0))
        except Exception as exc:  # InferenceServerException, or grpc's own on a bad address
            client.close()
            raise BackendError(f"Triton at {self.url} is not reachable ({_short(exc)})",
                               "start it (`ideal triton --avatar AVATAR` for a local one) or fix --render-url; "
                               "`--render-fallback local` renders in this process instead") from None
        if not live:
            client.close()
            raise BackendError(f"Triton at {self.url} answers but is not live", "check the server's log")
        return client

    def _check(self, client: Any, wanted: list[str], strict: bool) -> dict[str, Any]:
        """Tier name -> Tier for every render model of this avatar the server serves (its checks raise)."""
        served: dict[str, Any] = {}
        missing: dict[str, str] = {}
        for tier in wanted:
            name = render_model(self.namespace, tier)
            try:
                config = client.get_model_config(name, client_timeout=max(self.timeout_s, 2.0)).config
            except self._exception_type() as exc:
                missing[tier] = _short(exc)
                continue
            params = {k: v.string_value for k, v in config.parameters.items()}
            check_served_model(self.url, name, params, self.fingerprint, self.avatar_dir)
            if not client.is_model_ready(name, client_timeout=max(self.timeout_s, 2.0)):
                missing[tier] = "not ready"
                continue
            served[tier] = Tier.from_dict(json.loads(params[P_TIER]))
            served.setdefault("_metadata", client.get_model_metadata(name, client_timeout=max(self.timeout_s, 2.0)))
        if not served or (strict and missing):
            what = ", ".join(f"{render_model(self.namespace, t)} ({why})" for t, why in missing.items())
            raise BackendError(f"Triton at {self.url} does not serve avatar {self.namespace}'s render models: {what}",
                               f"load the repository of `ideal export {self.avatar_dir} --target triton -o REPO` "
                               f"(or run `ideal triton --avatar {self.avatar_dir}`)")
        return served

    def _exception_type(self) -> type[Exception]:
        from tritonclient.utils import InferenceServerException

        return InferenceServerException

    # --- the protocol -------------------------------------------------------------------------------------
    def render(self, audio: np.ndarray, expression: np.ndarray, pose: np.ndarray, tier: str) -> RenderOutput:
        """audio (B,W,M), expression (B,E), pose (B,3,4) float32 -> rgb (B,S,S,3), alpha (B,S,S,1); raises
        RenderUnavailable while the server cannot answer."""
        if tier not in self._tiers:
            raise InputError(f"unknown tier {tier!r}", f"one of {', '.join(self._tiers)}")
        arrays = {"audio": np.ascontiguousarray(audio, dtype=np.float32),
                  "expression": np.ascontiguousarray(expression, dtype=np.float32),
                  "pose": np.ascontiguousarray(pose, dtype=np.float32)}
        self._check_inputs(arrays["audio"], arrays["expression"], arrays["pose"])
        client = self._client_for_call()
        grpc = self._grpc
        inputs = []
        for name, value in arrays.items():
            item = grpc.InferInput(name, list(value.shape), "FP32")
            item.set_data_from_numpy(value)
            inputs.append(item)
        outputs = [grpc.InferRequestedOutput("rgba")]
        start = time.perf_counter()
        try:
            result = client.infer(render_model(self.namespace, tier), inputs, outputs=outputs,
                                  client_timeout=self.timeout_s)
        except Exception as exc:  # InferenceServerException (unavailable, deadline, unknown model) or grpc's own
            self._failed(client, _short(exc))
            raise RenderUnavailable(f"Triton at {self.url}: {_short(exc)}") from None
        rgba = result.as_numpy("rgba")
        ms = (time.perf_counter() - start) * 1e3
        if self._last_inputs is None:
            self._last_inputs = {k: v[:1].copy() for k, v in arrays.items()}  # for warming a returning server up
        t = time.perf_counter()
        rgb, alpha = unpack_rgba(rgba)
        return RenderOutput(rgb=rgb, alpha=alpha, timings_ms={"triton": ms, "unpack": (time.perf_counter() - t) * 1e3})

    # --- losing the server and getting it back ------------------------------------------------------------
    def _client_for_call(self) -> Any:
        """The connected client; while the server is away, RenderUnavailable at once. Getting it back happens
        off the render thread (`_probe`), so frames never wait on a reconnect nor on a fresh server's first,
        slow inference, and the streamer's cost model never sees either."""
        with self._lock:
            if self._client is not None:
                return self._client
            now = time.monotonic()
            self.failures += 1
            self._warn_while_down(now)
            if now >= self._next_try and (self._prober is None or not self._prober.is_alive()) and not self._closed:
                self._next_try = float("inf")  # set again by the probe's outcome
                self._prober = threading.Thread(target=self._probe, name="ideal-triton-probe", daemon=True)
                self._prober.start()
            raise RenderUnavailable(f"Triton at {self.url} is unavailable ({self._reason})")

    def _probe(self) -> None:
        """Dial afresh, check the models again (a restarted server may hold another avatar), render one frame of
        every tier (the new server's first calls are slow), then put the client back in service."""
        try:
            client = self._dial()
        except BackendError as exc:
            self._failed(None, exc.message)
            return
        try:
            self._check(client, list(self._tiers), strict=True)
            self._warm_up(client, timeout_s=max(self.timeout_s, 5.0))
        except Exception as exc:  # BackendError from the checks, InferenceServerException from the warm-up
            client.close()
            self._failed(None, exc.message if isinstance(exc, BackendError) else _short(exc))
            return
        with self._lock:
            if self._client is None and not self._closed:
                self._client, client = client, None
        if client is not None:
            client.close()  # closed meanwhile
            return
        self._succeeded()

    def _warm_up(self, client: Any, timeout_s: float) -> None:
        """One frame of every tier: a server's first calls of a model are slow (lazy initialisation), and that
        must neither fail a node's start nor land on a session's frames."""
        grpc = self._grpc
        for tier in self._tiers:
            inputs = []
            for name, value in self._warmup_inputs().items():
                item = grpc.InferInput(name, list(value.shape), "FP32")
                item.set_data_from_numpy(value)
                inputs.append(item)
            try:
                client.infer(render_model(self.namespace, tier), inputs, client_timeout=timeout_s)
            except self._exception_type() as exc:
                raise BackendError(f"Triton at {self.url}: {render_model(self.namespace, tier)} failed its first "
                                   f"frame ({_short(exc)})", "check the server's log") from None

    def _warmup_inputs(self) -> dict[str, np.ndarray]:
        last = self._last_inputs
        if last is not None:
            return last
        return {name: np.zeros([1, *map(int, shape[1:])], np.float32) for name, shape in self._input_shapes.items()
                if name in ("audio", "expression")} | {"pose": np.tile(np.eye(3, 4, dtype=np.float32), (1, 1, 1))}

    def _failed(self, client: Any, reason: str) -> None:
        with self._lock:
            now = time.monotonic()
            self.failures += 1
            self._reason = reason
            if client is not None and client is self._client:
                self._client = None
            else:
                client = None
            first = self._down_since is None
            if first:
                self._down_since = now
                self._backoff = self._retry[0]
            else:
                self._backoff = min(self._retry[1], self._backoff * 2)
            self._next_try = now + self._backoff
            if self._closed:
                pass  # a call that was in flight when the backend was closed: nothing to tell
            elif first:
                self._last_warning = now
                log.warning("render tier: Triton at %s is unavailable (%s); frames repeat until it answers again",
                            self.url, reason)
            else:
                self._warn_while_down(now)
        if client is not None:
            client.close()  # its channel and socket go now; the next try dials afresh

    def _warn_while_down(self, now: float) -> None:
        if not self._closed and self._down_since is not None and now - self._last_warning >= self._warn_every_s:
            self._last_warning = now
            log.warning("render tier: Triton at %s still unavailable after %.0f s (%s; %d calls failed)", self.url,
                        now - self._down_since, self._reason, self.failures)

    def _succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            away = time.monotonic() - self._down_since
            self._down_since, self._backoff, self._next_try = None, 0.0, 0.0
            self.recoveries += 1
        log.warning("render tier: Triton at %s is back after %.1f s", self.url, away)

    @property
    def available(self) -> bool:
        return self._down_since is None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
            self._next_try = float("inf")
            self._reason = "closed"
            if self._down_since is None:
                self._down_since = time.monotonic()
        if client is not None:
            client.close()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:200]
