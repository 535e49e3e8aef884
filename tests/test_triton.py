"""The render tier on Triton Inference Server: the exported model repository agrees with the one model
description (and the Triton 2.51 that PyTriton bundles accepts its configs and ensembles), the Triton backend
renders the same frames as in-process ONNX Runtime through a local `ideal triton`, a streamer session runs end
to end through it, and each fault: server unreachable at start, server gone mid-session (frames repeat, a
warning names it, fresh frames resume when it is back, nothing leaks), models of another avatar or version."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ideal.avatar.errors import BackendError, InputError

pytest.importorskip("onnxruntime")
TOL = 2.0 / 255.0  # the export parity tolerance (tests/test_export.py)


def _pytriton_missing() -> str | None:
    try:
        import pytriton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
    except ImportError as exc:
        return f"PyTriton / tritonclient not installed ({exc}): pip install 'ideal-nerf[triton]'"
    return None


needs_triton = pytest.mark.skipif(_pytriton_missing() is not None, reason=str(_pytriton_missing()))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TritonProcess:
    """`ideal triton` in its own process group (so a test can kill it like a crash, children included)."""

    def __init__(self, avatar: Path | None, ports: list[int], log_path: Path) -> None:
        self.ports, self.avatar, self.log_path = ports, avatar, log_path
        self.proc: subprocess.Popen | None = None
        # PyTriton's sockets live in its workspace: a short path (Unix sockets allow ~107 bytes), removed at the end
        # even after a SIGKILL, which leaves it behind
        self.workspaces = Path(tempfile.mkdtemp(prefix="itr-"))

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 180.0) -> None:
        cmd = [sys.executable, "-m", "ideal", "-q", "triton", "--grpc-port", str(self.ports[0]), "--http-port",
               str(self.ports[1]), "--metrics-port", str(self.ports[2]), "--tiers", "fast", "--no-int8",
               "--threads", "1", "--workspace", str(self.workspaces / str(time.time_ns()))]
        if self.avatar is not None:
            cmd += ["--avatar", str(self.avatar)]
        seen = self.log_path.stat().st_size if self.log_path.exists() else 0  # a restart appends to the log
        self._log = open(self.log_path, "ab")  # closed in kill()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"ideal triton: serving" in self.log_path.read_bytes()[seen:]:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.25)
        text = self.log_path.read_text(errors="replace")[-3000:]
        self.kill()
        raise AssertionError(f"ideal triton did not start:\n{text}")

    def kill(self) -> None:
        """SIGKILL to the whole process group: the server dies as in a crash, its Triton child with it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.workspaces, ignore_errors=True)


@pytest.fixture(scope="module")
def triton_server(default_avatar: Path, tmp_path_factory) -> TritonProcess:
    if _pytriton_missing():
        pytest.skip(_pytriton_missing())
    server = TritonProcess(None, _free_ports(3), tmp_path_factory.mktemp("triton") / "triton.log")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def frames(default_avatar: Path, new_speech_wav):
    """Real inputs of 3 frames: windows of speech the avatar never heard, its own tracked expressions and poses."""
    from ideal.avatar.audio.features import compute_features, windows_for_frames
    from ideal.avatar.audio.io import load_audio
    from ideal.avatar.loading import load_avatar

    loaded = load_avatar(default_avatar, device="cpu")
    mel = compute_features(load_audio(new_speech_wav)[:16000 * 3], loaded.mel_config)
    idx = np.array([20, 40, 60])
    windows = windows_for_frames(mel, 61, loaded.fps, loaded.window, loaded.mel_config)[idx]
    return windows, loaded.expression_track[idx], loaded.pose_track[idx]


# --- the repository ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repository(default_avatar: Path, tmp_path_factory) -> Path:
    from ideal.cli import main

    repo = tmp_path_factory.mktemp("repo") / "models"
    assert main(["-q", "export", "--target", "triton", "-o", str(repo)]) == 0
    return repo


def test_repository_configs_are_the_shared_description(default_avatar: Path, repository: Path):
    from ideal.export.artifacts import avatar_fingerprint, load_export_manifest
    from ideal.export.triton_models import (P_FINGERPRINT, P_FORMAT, TRITON_FORMAT_VERSION, TRITON_MANIFEST,
                                            model_specs, parse_pbtxt_summary)

    _, manifest = load_export_manifest(default_avatar)
    specs = model_specs(manifest, "default", avatar="default")
    written = sorted(p.name for p in repository.iterdir() if p.is_dir())
    assert written == sorted(s.name for s in specs)
    assert {f"default.render.{t}" for t in manifest.tiers} <= set(written)
    for spec in specs:
        summary = parse_pbtxt_summary((repository / spec.name / "config.pbtxt").read_text())
        assert summary["name"] == spec.name and summary["max_batch_size"] == spec.max_batch_size
        assert summary["inputs"] == {t.name: t.dims for t in spec.inputs}
        assert summary["outputs"] == {t.name: t.dims for t in spec.outputs}
        assert summary["parameters"] == spec.parameters
        assert summary["parameters"][P_FINGERPRINT] == avatar_fingerprint(default_avatar)
        assert summary["parameters"][P_FORMAT] == str(TRITON_FORMAT_VERSION)
        if spec.is_ensemble:
            assert summary["ensemble_steps"] == [s[0] for s in spec.steps]
            assert not any((repository / spec.name / "1").iterdir())
        elif spec.builtin == "pack":
            assert (repository / spec.name / "1" / "model.onnx").exists()
        else:
            graph = repository / spec.name / "1" / "model.onnx"
            from ideal.avatar.manifest import sha256_file

            assert sha256_file(graph) == manifest.graphs[spec.graph].sha256
    index = json.loads((repository / TRITON_MANIFEST).read_text())
    assert index["avatars"]["default"]["avatar_fingerprint"] == avatar_fingerprint(default_avatar)
    # the render ensemble's outputs are the refine graph's, its inputs the condition graph's plus the pose
    render = next(s for s in specs if s.name == "default.render.fast")
    assert [t.name for t in render.inputs] == ["audio", "expression", "pose"]
    assert [(t.name, t.dims, t.dtype) for t in render.outputs] == [("rgba", (512, 512, 4), "UINT8")]


def test_the_repository_packs_crops_as_ideal_triton_does(repository: Path, frames, default_avatar: Path):
    """The wire format: the repository's pack graph (ONNX Runtime) and `ideal triton`'s numpy give the same bytes
    on a real render, and unpacking returns the float crop within half a level of 255."""
    import onnxruntime as ort

    from ideal.export.onnx_backend import OnnxRuntimeBackend, OrtConfig
    from ideal.export.triton_models import pack_rgba, unpack_rgba

    audio, expression, pose = frames
    backend = OnnxRuntimeBackend(default_avatar, ["fast"], OrtConfig(device="cpu", int8=False))
    rgb, alpha, _ = backend.run_stages(audio, expression, pose, "fast")
    session = ort.InferenceSession(str(repository / "default.pack.fast" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    packed = session.run(None, {"rgb": rgb, "alpha": alpha})[0]
    assert packed.dtype == np.uint8 and packed.shape == (3, 512, 512, 4)
    assert np.array_equal(packed, pack_rgba(rgb, alpha))
    got_rgb, got_alpha = unpack_rgba(packed)
    assert float(np.abs(got_rgb - rgb.transpose(0, 2, 3, 1)).max()) <= 0.5 / 255 + 1e-6
    assert float(np.abs(got_alpha - alpha.transpose(0, 2, 3, 1)).max()) <= 0.5 / 255 + 1e-6


@needs_triton
def test_triton_accepts_the_repository_configs_and_ensembles(repository: Path, tmp_path: Path):
    """The real Triton 2.51 that PyTriton bundles parses every config.pbtxt and checks every ensemble; it has no
    ONNX Runtime backend (Python models only), so the stage models can go no further than finding that out."""
    import pytriton

    from ideal.export.triton_server import libpython_dir

    home = Path(pytriton.__file__).parent / "tritonserver"
    ports = _free_ports(3)
    env = dict(os.environ, LD_LIBRARY_PATH=":".join([libpython_dir(), os.environ.get("LD_LIBRARY_PATH", "")]))
    proc = subprocess.run([str(home / "bin" / "tritonserver"), f"--model-repository={repository}",
                           f"--backend-directory={home / 'backends'}", f"--grpc-port={ports[0]}",
                           f"--http-port={ports[1]}", f"--metrics-port={ports[2]}", "--exit-timeout-secs=1"],
                          capture_output=True, text=True, env=env, timeout=120)
    log = proc.stdout + proc.stderr
    loading = [line for line in log.splitlines() if "failed to load" in line or "ensemble '" in line]
    assert loading, log[-3000:]
    for line in loading:
        if "failed to load '" in line and "version 1:" in line:
            assert "unable to find backend library for backend 'onnxruntime'" in line, line
    ensembles = [line for line in log.splitlines() if "ensemble 'default.render." in line]
    assert len(ensembles) == 3, log[-3000:]
    for line in ensembles:  # got past parsing and structure checks to the composing models' state
        assert "depends on 'default." in line and "has no loaded version" in line, line
    assert "parse" not in log.lower() or "failed to parse" not in log.lower()


# The stage models' stand-in for the ONNX Runtime backend, which PyTriton's Triton build lacks: a Python-backend
# model running the very model.onnx the repository holds with onnxruntime.
ONNX_AS_PYTHON = """
import json
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.outputs = [o["name"] for o in json.loads(args["model_config"])["output"]]
        path = args["model_repository"] + "/" + args["model_version"] + "/model.onnx"
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {i.name: pb_utils.get_input_tensor_by_name(request, i.name).as_numpy()
                     for i in self.session.get_inputs()}
            out = dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds)))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, out[n]) for n in self.outputs]))
        return responses
"""


@needs_triton
def test_the_repository_ensemble_renders_in_triton(default_avatar: Path, repository: Path, frames, tmp_path: Path):
    """The exported repository in a real Triton 2.51, as written (ensemble scheduling, tensor maps, the pack model,
    dynamic batching, parameters) except that each ONNX stage model runs its model.onnx through the Python backend
    (the only one this Triton build has): the Triton backend's checks accept it and its frames are ONNX Runtime's
    in-process frames within the RGBA8 rounding."""
    import pytriton
    from pytriton.utils.distribution import get_libs_path

    from ideal.export.onnx_backend import OnnxRuntimeBackend, OrtConfig
    from ideal.export.triton_backend import TritonBackend
    from ideal.export.triton_server import libpython_dir

    home = Path(pytriton.__file__).parent / "tritonserver"
    work = Path(tempfile.mkdtemp(prefix="itr-"))
    try:
        server = work / "server"
        shutil.copytree(home, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
        stub = home / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy(stub / "triton_python_backend_stub", server / "backends" / "python")
        repo = work / "repo"
        shutil.copytree(repository, repo)
        for config in repo.glob("*/config.pbtxt"):
            text = config.read_text()
            if 'backend: "onnxruntime"' in text:
                config.write_text(text.replace('backend: "onnxruntime"\ndefault_model_filename: "model.onnx"',
                                               'backend: "python"'))
                (config.parent / "1" / "model.py").write_text(ONNX_AS_PYTHON)
        ports = _free_ports(3)
        env = dict(os.environ, LD_LIBRARY_PATH=":".join([libpython_dir(), str(get_libs_path()),
                                                          os.environ.get("LD_LIBRARY_PATH", "")]))
        log = open(work / "triton.log", "wb")  # closed below
        proc = subprocess.Popen([str(server / "bin" / "tritonserver"), f"--model-repository={repo}",
                                 f"--backend-directory={server / 'backends'}", f"--grpc-port={ports[0]}",
                                 f"--http-port={ports[1]}", f"--metrics-port={ports[2]}", "--exit-timeout-secs=2",
                                 "--model-control-mode=explicit", "--load-model=default.render.fast"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
            ready = False
            for _ in range(480):
                try:
                    ready = client.is_model_ready("default.render.fast")
                except Exception:  # not listening yet
                    ready = False
                if ready or proc.poll() is not None:
                    break
                time.sleep(0.25)
            client.close()
            assert ready, (work / "triton.log").read_text(errors="replace")[-3000:]
            audio, expression, pose = frames
            remote = TritonBackend(default_avatar, f"grpc://127.0.0.1:{ports[0]}", ["fast"])
            try:
                got = remote.render(audio, expression, pose, "fast")
            finally:
                remote.close()
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            log.close()
        local = OnnxRuntimeBackend(default_avatar, ["fast"], OrtConfig(device="cpu", int8=False))
        rgb, alpha, _ = local.run_stages(audio, expression, pose, "fast")
        assert float(np.abs(got.rgb - rgb.transpose(0, 2, 3, 1)).max()) <= 0.5 / 255 + 1e-6
        assert float(np.abs(got.alpha - alpha.transpose(0, 2, 3, 1)).max()) <= 0.5 / 255 + 1e-6
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_second_avatar_keeps_the_first_ones_models(default_avatar: Path, repository: Path, tmp_path: Path):
    from ideal.export.triton_export import export_triton_repository

    repo = tmp_path / "shared"
    shutil.copytree(repository, repo)
    other = tmp_path / "other"
    shutil.copytree(default_avatar, other)  # the copy carries its exported graphs
    entry = export_triton_repository(other, repo, tiers=["fast"])
    names = sorted(p.name for p in repo.iterdir() if p.is_dir())
    assert "other.render.fast" in names and "default.render.coarse" in names
    assert "other.render.coarse" not in names and set(entry["tiers"]) == {"fast"}
    index = json.loads((repo / "ideal-triton.json").read_text())
    assert set(index["avatars"]) == {"default", "other"}


def test_export_target_triton_needs_an_output(capsys):
    from ideal.cli import main

    assert main(["export", "--target", "triton"]) == 2
    assert "--target triton needs -o REPO" in capsys.readouterr().err


# --- the backend against a local Triton --------------------------------------------------------------------
def test_triton_renders_the_same_frames_as_onnxruntime(default_avatar: Path, triton_server: TritonProcess, frames):
    from ideal.avatar.evaluation.image_metrics import face_alpha
    from ideal.export.backends import create_backend

    audio, expression, pose = frames
    remote = create_backend(default_avatar, render_url=triton_server.url)
    local = create_backend(default_avatar, "onnxruntime", "cpu", tiers=["fast"], int8=False)
    try:
        assert remote.name == "triton" and list(remote.tiers) == ["fast"]
        assert remote.tiers["fast"] == local.tiers["fast"]
        got = remote.render(audio, expression, pose, "fast")
        ref = local.render(audio, expression, pose, "fast")
        assert got.rgb.shape == ref.rgb.shape == (3, 512, 512, 3) and got.alpha.shape == (3, 512, 512, 1)
        assert face_alpha(ref.alpha) > 0.95, "the head is not rendered; parity would be meaningless"
        rgb_diff = float(np.abs(got.rgb - ref.rgb).max())
        alpha_diff = float(np.abs(got.alpha - ref.alpha).max())
        print(f"max |triton - onnxruntime| rgb {rgb_diff:.2e} alpha {alpha_diff:.2e}")
        assert rgb_diff <= TOL and alpha_diff <= TOL
        one = remote.render(audio[:1], expression[:1], pose[:1], "fast")  # batch 1 as well as 3
        assert float(np.abs(one.rgb - ref.rgb[:1]).max()) <= TOL
        assert "triton" in one.timings_ms
        with pytest.raises(InputError, match="unknown tier"):
            remote.render(audio, expression, pose, "refined")
        with pytest.raises(InputError, match="audio has shape"):
            remote.render(audio[:, :3], expression, pose, "fast")
    finally:
        remote.close()


def _speech(path: Path, seconds: float) -> np.ndarray:
    from ideal.avatar.audio.io import load_audio

    return load_audio(path)[: int(16000 * seconds)]


async def _stream(session, pcm: np.ndarray, seconds: float, frames: list, chunk: int = 640,
                  done=lambda: False) -> None:
    """Push speech (and then silence) in real time for `seconds` (or until `done()`), collecting every frame the
    session emits."""

    async def consume() -> None:
        async for frame in session.frames():
            frames.append((time.monotonic(), frame))

    task = asyncio.ensure_future(consume())
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds and not done():
        block = pcm[i * chunk:(i + 1) * chunk]
        if len(block) < chunk:
            block = np.zeros(chunk, np.float32)
        session.push_audio(block, 16000, 1)
        i += 1
        await asyncio.sleep(max(0.0, start + i * chunk / 16000 - time.monotonic()))
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def test_a_serve_session_renders_end_to_end_through_triton(default_avatar: Path, triton_server: TritonProcess,
                                                                 new_speech_wav: Path):
    """What `ideal serve --render-url` builds per avatar (its engine factory), one session through it."""
    from ideal.server.avatars import streamer_engine_factory
    from ideal.server.config import ServerConfig

    config = ServerConfig(render_url=triton_server.url, export=False).validate()
    engine = streamer_engine_factory(None, config)
    try:
        assert engine.backend_name == "triton" and engine.info["backend"] == "triton"
        assert engine.ordered_tiers == ["fast"]
        session = engine.open_session(expression="audio")
        frames: list = []
        await _stream(session, _speech(new_speech_wav, 4.0), 4.0, frames)
        stats = session.stats
        await session.aclose()
    finally:
        await engine.aclose()
    emitted = [f for _, f in frames]
    fresh = [f for f in emitted if not f.late]
    assert len(emitted) >= 70, f"only {len(emitted)} frames in 4 s"
    # how many are on time is a figure of the machine (`ideal bench`), not of correctness: here, that they render
    assert len(fresh) >= 0.25 * len(emitted), f"{len(emitted) - len(fresh)} of {len(emitted)} late"
    assert all(f.tier == "fast" for f in fresh)
    assert any(f.speech for f in emitted)
    assert len({f.image.tobytes()[:4096] + f.image.tobytes()[-4096:] for f in fresh}) > 10  # the face moves
    assert stats.failure is None


async def test_a_webrtc_call_through_ideal_serve_on_triton(triton_server: TritonProcess, new_speech_wav: Path):
    """`ideal serve --render-url`: a WebRTC client speaks to the server, which renders on the local Triton; the
    client receives the avatar's video and the server's broadcast carries new pictures."""
    from ideal.avatar.audio.io import load_audio, resample
    from ideal.server.app import start_server
    from ideal.server.client import join, wait_connected
    from ideal.server.config import ServerConfig

    speech = resample(load_audio(new_speech_wav)[: 4 * 16_000], 16_000, 48_000)
    config = ServerConfig(host="127.0.0.1", port=0, render_url=triton_server.url, export=False).validate()
    server = await start_server(config)
    try:
        assert server.state.catalog.default.info["backend"] == "triton"
        speaker = await join(server.url, speech)
        await wait_connected(speaker, 30)
        await asyncio.sleep(4.0)
        broadcast = server.state.peers.peers[speaker.peer_id].broadcast
        frames, pictures = broadcast.frames, broadcast.pictures
        await speaker.close()
    finally:
        await server.stop()
    assert speaker.video_frames > 60, f"the client received {speaker.video_frames} frames in 4 s"
    assert frames > 60 and pictures > 20, (frames, pictures)


# --- faults ------------------------------------------------------------------------------------------------
@needs_triton
def test_unreachable_at_start_is_one_clear_line(default_avatar: Path):
    from ideal.export.triton_backend import TritonBackend

    port = _free_ports(1)[0]
    with pytest.raises(BackendError) as err:
        TritonBackend(default_avatar, f"grpc://127.0.0.1:{port}")
    text = str(err.value)
    assert f"Triton at grpc://127.0.0.1:{port} is not reachable" in text and "\n" not in text
    assert "--render-fallback local" in text


@needs_triton
def test_serve_stops_with_the_reason_or_falls_back_when_told(default_avatar: Path, capsys):
    from ideal.cli import main
    from ideal.server.avatars import remote_backend
    from ideal.server.config import ServerConfig

    port = _free_ports(1)[0]
    assert main(["serve", "--render-url", f"grpc://127.0.0.1:{port}", "--port", "0", "--no-export"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Triton at grpc://127.0.0.1:") and "not reachable" in err[0]
    config = ServerConfig(render_url=f"grpc://127.0.0.1:{port}", render_fallback="local").validate()
    assert remote_backend(None, config) == "auto"  # the in-process backend the engine then makes
    with pytest.raises(InputError, match="not a Triton gRPC URL"):
        ServerConfig(render_url="http://127.0.0.1:8000").validate()


def test_models_of_another_format_version_are_refused():
    from ideal.export.triton_models import P_AVATAR, P_FINGERPRINT, P_FORMAT, check_served_model

    with pytest.raises(BackendError, match="format version 0; this ideal-nerf reads version 1"):
        check_served_model("grpc://h:1", "a.render.fast", {P_FORMAT: "0", P_FINGERPRINT: "ab"}, "ab", "A")
    with pytest.raises(BackendError, match="not exported by ideal-nerf"):
        check_served_model("grpc://h:1", "a.render.fast", {}, "ab", "A")
    with pytest.raises(BackendError, match=r"another avatar or another version of it \(served: b"):
        check_served_model("grpc://h:1", "a.render.fast", {P_FORMAT: "1", P_FINGERPRINT: "cd", P_AVATAR: "b"},
                           "ab", "A")


def test_models_of_another_avatar_or_version_are_refused(default_avatar: Path, triton_server: TritonProcess,
                                                         tmp_path: Path):
    from ideal.export.triton_backend import TritonBackend

    # the same avatar name, other weights (a retrained version): same model names, another fingerprint
    retrained = tmp_path / "retrained" / "default"
    shutil.copytree(default_avatar, retrained, ignore=shutil.ignore_patterns("exported"))
    manifest = json.loads((retrained / "avatar.json").read_text())
    manifest["created"] = "a later training run"
    (retrained / "avatar.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendError, match="exported from another avatar or another version of it"):
        TritonBackend(retrained, triton_server.url, namespace="default")
    # another avatar: the server has none of its models
    other = tmp_path / "other"
    shutil.copytree(default_avatar, other, ignore=shutil.ignore_patterns("exported"))
    with pytest.raises(BackendError, match="does not serve avatar other's render models: other.render.fast"):
        TritonBackend(other, triton_server.url)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_triton_gone_mid_session_repeats_frames_warns_and_recovers(default_avatar: Path, tmp_path: Path,
                                                                        new_speech_wav: Path, caplog):
    """Kill the server (SIGKILL, children too) while a session streams: frames keep coming as repeats, one
    warning names the server, nothing crashes; start it again on the same ports: fresh frames resume. After the
    session and engine close, threads and file descriptors are back where they were."""
    if _pytriton_missing():
        pytest.skip(_pytriton_missing())
    from ideal.export.triton_backend import TritonBackend
    from ideal.streamer.engine import StreamerEngine

    server = TritonProcess(None, _free_ports(3), tmp_path / "triton.log")
    server.start()
    try:
        threads0, fds0 = threading.active_count(), _fds()
        backend = TritonBackend(default_avatar, server.url, retry_s=0.2, max_retry_s=1.0, warn_every_s=2.0)
        engine = StreamerEngine(None, backend=backend)
        session = engine.open_session(expression="audio")
        pcm = _speech(new_speech_wav, 30.0)
        frames: list = []
        events: dict[str, float] = {}

        async def chaos() -> None:
            await asyncio.sleep(2.5)
            events["killed"] = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, server.kill)
            await asyncio.sleep(3.0)
            events["restarting"] = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, server.start)
            events["restarted"] = time.monotonic()
            for _ in range(400):  # when the backend has the server back (the frames' times are compared with it)
                if backend.available:
                    events["back"] = time.monotonic()
                    return
                await asyncio.sleep(0.05)

        with caplog.at_level(logging.WARNING, logger="ideal.export.triton_backend"):
            task = asyncio.ensure_future(chaos())
            # the microphone goes on through the outage, as a caller's does
            await _stream(session, pcm, 60.0, frames, done=lambda: time.monotonic() > events.get("back", 1e18) + 9.0)
            task.cancel()
        stats = session.stats
        await session.aclose()
        await engine.aclose()
        down = [f for t, f in frames if events["killed"] + 0.5 < t < events["restarting"]]
        assert "back" in events, "the backend never got the server back"
        after = [f for t, f in frames if t > events["back"] + 1.0]
        assert len(down) >= 50, "frames stopped while the server was gone"  # 2.5 s at 25 fps: 62
        assert all(f.late for f in down), "frames rendered without a server?"
        def pictures(fs: list) -> int:
            return len({hash(f.image.tobytes()) for f in fs})

        print(f"server away {events['back'] - events['killed']:.1f} s; while away {len(down)} frames, "
              f"{pictures(down)} picture(s); after: {sum(not f.late for f in after)} of {len(after)} on time, "
              f"{pictures(after)} pictures")
        assert pictures(down) == 1, "the picture changed while no server rendered"
        # new pictures again once it is back (how many of them are on time is the loaded machine's figure)
        assert after and pictures(after) >= 5 and any(not f.late for f in after), \
            f"no new pictures after the server came back ({pictures(after)} in {len(after)} frames)"
        assert stats.failure is None
        warnings = [r.getMessage() for r in caplog.records]
        assert any(f"Triton at {server.url} is unavailable" in w for w in warnings), warnings
        assert any(f"Triton at {server.url} is back after" in w for w in warnings), warnings
        away = events["back"] - events["killed"]
        assert len(warnings) <= 3 + away / 2.0, f"warnings are not rate-limited: {len(warnings)} in {away:.1f} s"
        assert backend.recoveries >= 1 and backend.failures > 0
        for _ in range(50):  # executor threads of the closed engine finish their last task and exit
            if threading.active_count() <= threads0 + 1 and _fds() <= fds0 + 3:
                break
            await asyncio.sleep(0.2)
        assert threading.active_count() <= threads0 + 1, [t.name for t in threading.enumerate()]
        assert _fds() <= fds0 + 3, f"file descriptors: {fds0} -> {_fds()}"
    finally:
        server.cleanup()


def test_gpu_repository_takes_tensorrt_plans_per_compute_capability(default_avatar: Path, tmp_path: Path):
    """Engines built on two GPU types (as `ideal export --target tensorrt` leaves them, sidecars included) become
    one stage model's plans, chosen per GPU by compute capability; an engine of another graph version or
    precision is left out; a stage without engines runs its ONNX graph with the TensorRT accelerator. (The plans
    here are stand-in bytes: this machine has no TensorRT; what is checked is how they are picked and named.)"""
    from ideal.avatar.manifest import sha256_file
    from ideal.export.artifacts import load_export_manifest
    from ideal.export.triton_export import export_triton_repository
    from ideal.export.triton_models import Deployment, parse_pbtxt_summary

    avatar = tmp_path / "gpu_avatar"
    shutil.copytree(default_avatar, avatar)  # with its exported graphs
    directory, manifest = load_export_manifest(avatar)
    engines = directory / "engines"
    engines.mkdir(exist_ok=True)
    graph_sha = manifest.graphs["condition"].sha256
    builds = (("nvidia-l4", (8, 9), graph_sha, "fp16"), ("nvidia-h100", (9, 0), graph_sha, "fp16"),
              ("nvidia-a10", (8, 6), "0" * 64, "fp16"), ("nvidia-t4", (7, 5), graph_sha, "fp32"))
    for gpu, cc, sha, precision in builds:
        engine = engines / f"condition.{gpu}.sm{cc[0]}{cc[1]}.trt10.5.0.{precision}.engine"
        engine.write_bytes(f"plan for {gpu}".encode())
        engine.with_suffix(".json").write_text(json.dumps({
            "onnx_sha256": sha, "engine_sha256": sha256_file(engine), "gpu_name": gpu, "compute_capability": list(cc),
            "trt_version": "10.5.0", "precision": precision}))
    repo = tmp_path / "repo"
    entry = export_triton_repository(avatar, repo, Deployment(device="gpu", fp16=True), tiers=["fast"])
    text = (repo / "gpu_avatar.condition" / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in text and "KIND_GPU" in text
    assert 'cc_model_filenames { key: "8.9" value: "model.nvidia-l4.sm89.trt10.5.0.fp16.plan" }' in text
    assert 'cc_model_filenames { key: "9.0" value: "model.nvidia-h100.sm90.trt10.5.0.fp16.plan" }' in text
    assert "8.6" not in text and "7.5" not in text  # another graph version; another precision
    assert sorted(p.name for p in (repo / "gpu_avatar.condition" / "1").iterdir()) == [
        "model.nvidia-h100.sm90.trt10.5.0.fp16.plan", "model.nvidia-l4.sm89.trt10.5.0.fp16.plan"]
    assert entry["models"]["gpu_avatar.condition"]["runs"] == "tensorrt plans for sm 8.9, 9.0"
    field = (repo / "gpu_avatar.field.fast" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in field and 'name: "tensorrt"' in field and '"FP16"' in field
    assert parse_pbtxt_summary(field)["parameters"]["ideal_avatar"] == "gpu_avatar"
