"""The avatars a server offers: one streamer engine each, loaded once at start-up, plus what a client needs to
know about them (name, frame size, fps, tiers) and the expression sources."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ideal.avatar.errors import InputError
from ideal.avatar.manifest import DEFAULT_AVATAR_DIR, resolve_avatar
from ideal.server.config import ServerConfig

log = logging.getLogger(__name__)

EngineFactory = Callable[[Path | None, ServerConfig], Any]
BASE_EXPRESSIONS = ("audio", "neutral")
PRIVATE_INFO = ("avatar_dir",)  # engine info a client never sees


def streamer_engine_factory(avatar: Path | None, config: ServerConfig) -> Any:
    from ideal.streamer.engine import StreamerEngine  # imported here: `ideal --help` must not load the renderer

    import torch

    torch.set_num_threads(config.threads)
    # a node that renders on Triton needs no graphs of its own, unless it may fall back to rendering locally
    local = not config.render_url or config.render_fallback == "local"
    if config.export and config.backend in ("auto", "onnxruntime") and local:
        from ideal.export.backends import ensure_onnx_export

        ensure_onnx_export(avatar)
    mouth = None
    if config.mouth_model:
        from ideal.avatar.mouth import load_mouth_model

        mouth = load_mouth_model(config.mouth_model)
    backend: Any = config.backend
    if config.render_url:
        backend = remote_backend(avatar, config)
    return StreamerEngine(avatar=avatar, backend=backend, device=config.device,
                          config=replace(config.streamer),  # a copy per engine, as each had its own
                          mouth_model=mouth)


def remote_backend(avatar: Path | None, config: ServerConfig) -> Any:
    """The avatar's render models on the Triton server of --render-url; unreachable or not serving this avatar:
    the BackendError stops the server, unless --render-fallback local asks for the in-process backend."""
    from ideal.avatar.errors import BackendError
    from ideal.export.triton_backend import TritonBackend

    assert config.render_url
    try:
        return TritonBackend(resolve_avatar(avatar), config.render_url, timeout_s=config.render_timeout_s)
    except BackendError as exc:
        if config.render_fallback != "local":
            raise
        log.warning("%s; rendering in this process instead (--render-fallback local, backend %s)", exc,
                    config.backend)
        return config.backend


@dataclass
class AvatarEntry:
    name: str
    path: Path
    engine: Any
    info: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        # Where the avatar lives on the server is the operator's business, not a client's.
        info = {k: v for k, v in self.info.items()
                if k not in PRIVATE_INFO and isinstance(v, (str, int, float, bool, list, dict, type(None)))}
        return {"name": self.name, **info}


class AvatarCatalog:
    def __init__(self, config: ServerConfig, engine_factory: EngineFactory | None = None) -> None:
        self.config = config
        self._factory = engine_factory or streamer_engine_factory
        self._entries: dict[str, AvatarEntry] = {}

    def load(self) -> None:
        """Create every engine now, so a broken avatar stops the server at start-up, not at the first call."""
        for spec in self.config.avatars:
            path = resolve_avatar(spec)
            name = "default" if path == DEFAULT_AVATAR_DIR else path.name
            while name in self._entries:
                name += "_"
            engine = self._factory(None if path == DEFAULT_AVATAR_DIR else path, self.config)
            info = dict(engine.info)
            self._entries[name] = AvatarEntry(name, path, engine, info)
            log.info("avatar %s: %s", name, {k: info.get(k) for k in ("backend", "fps", "tiers")})

    @property
    def default(self) -> AvatarEntry:
        return next(iter(self._entries.values()))

    def get(self, name: str | None) -> AvatarEntry:
        if not name:
            return self.default
        entry = self._entries.get(name)
        if entry is None:
            raise InputError(f"avatar {name!r}: not served here", f"pick one of {', '.join(self._entries)}")
        return entry

    def expressions(self) -> list[str]:
        return [*BASE_EXPRESSIONS, *(f"driver:{name}" for name in self.config.drivers)]

    def expression_source(self, spec: str | None) -> str:
        """A client's choice ("audio", "neutral", "driver:NAME") -> the streamer's ("audio", "neutral", "clip:PATH").

        Clients name drivers; they never pass paths, so a browser cannot make the server open arbitrary files."""
        spec = spec or "audio"
        if spec in BASE_EXPRESSIONS:
            return spec
        if spec.startswith("driver:") and spec[7:] in self.config.drivers:
            return f"clip:{self.config.drivers[spec[7:]]}"
        raise InputError(f"expression {spec!r}: unknown source", f"use one of {', '.join(self.expressions())}")

    def describe(self) -> dict[str, Any]:
        return {"default": self.default.name, "avatars": [e.describe() for e in self._entries.values()],
                "expressions": self.expressions()}

    async def aclose(self) -> None:
        for entry in self._entries.values():
            try:
                await entry.engine.aclose()
            except Exception:  # closing one engine must not keep the others open
                log.exception("closing avatar %s", entry.name)
        self._entries.clear()
