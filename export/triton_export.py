"""`ideal export AVATAR --target triton -o REPO`: a Triton Inference Server model repository for an avatar.

    REPO/
      ideal-triton.json                      format version; per avatar namespace: fingerprint, tiers, models
      NS.condition/config.pbtxt              ONNX Runtime backend (cpu) or TensorRT plans (gpu), dynamic batching
      NS.condition/1/model.onnx              the exported graph (checked against export.json's sha256)
      NS.field.<tier>/...                    the same per tier
      NS.refine.<tier>/...
      NS.pack.<tier>/...                     float crop -> RGBA8, the wire format (a 9-node ONNX graph)
      NS.render.<tier>/config.pbtxt          ensemble: condition -> field.<tier> -> refine.<tier> -> pack.<tier>
      NS.render.<tier>/1/                    (empty: an ensemble has no file, Triton still wants the version)

With `--triton-device gpu` a stage model whose TensorRT engines were built (`ideal export AVATAR --target
tensorrt`) gets them as `1/model.<gpu>.sm<cc>.trt<ver>.<prec>.plan`, chosen per GPU by `cc_model_filenames`;
without engines it runs its ONNX graph with ONNX Runtime's TensorRT accelerator. Several avatars can share one
repository (each writes only its own namespace). Model names, tensors and parameters come from
`export.triton_models.model_specs`, the same description `ideal triton` serves.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ideal.avatar.errors import InputError
from ideal.avatar.manifest import sha256_file
from ideal.export.artifacts import ENGINES_DIR, check_graph_file, load_export_manifest, sidecar_path
from ideal.export.triton_models import (PACK, TRITON_FORMAT_VERSION, TRITON_MANIFEST, Deployment, ModelSpec,
                                        config_pbtxt, model_specs, namespace_for, pack_graph)

log = logging.getLogger(__name__)


def _plans(engine_dir: Path, spec: ModelSpec, graph_sha: str, fp16: bool) -> dict[str, Path]:
    """Compute capability ("8.9") -> engine built from exactly this graph in this precision (by its sidecar)."""
    found: dict[str, Path] = {}
    if spec.graph is None or not engine_dir.is_dir():
        return found
    for engine in sorted(engine_dir.glob(f"{spec.graph}.*.engine")):
        side = sidecar_path(engine)
        try:
            meta = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (meta.get("onnx_sha256") != graph_sha or meta.get("precision") != ("fp16" if fp16 else "fp32")
                or meta.get("engine_sha256") != sha256_file(engine)):
            continue
        major, minor = meta["compute_capability"]
        if f"{major}.{minor}" in found:
            log.warning("two engines for compute capability %s.%s of %s; keeping %s", major, minor, spec.graph,
                        found[f"{major}.{minor}"].name)
            continue
        found[f"{major}.{minor}"] = engine
    return found


def export_triton_repository(avatar_dir: str | Path, repository: str | Path, deployment: Deployment | None = None,
                             tiers: list[str] | None = None, max_batch_size: int | None = None) -> dict[str, Any]:
    """Write (or replace) the avatar's models in `repository`; returns the avatar's entry of ideal-triton.json."""
    avatar_dir = Path(avatar_dir)
    repo = Path(repository)
    deployment = deployment or Deployment()
    if deployment.device not in ("cpu", "gpu"):
        raise InputError(f"--triton-device {deployment.device}", "use cpu or gpu")
    if repo.exists() and not repo.is_dir():
        raise InputError(f"-o {repo}: is a file", "give a directory for the model repository")
    directory, manifest = load_export_manifest(avatar_dir)
    namespace = namespace_for(avatar_dir)
    specs = model_specs(manifest, namespace, avatar=namespace, tiers=tiers, max_batch_size=max_batch_size)
    repo.mkdir(parents=True, exist_ok=True)
    index = _read_index(repo)
    stage = Path(tempfile.mkdtemp(prefix=".ideal-triton.partial-", dir=repo))
    models: dict[str, Any] = {}
    try:
        for spec in specs:
            model_dir = stage / spec.name
            (model_dir / "1").mkdir(parents=True)
            plans: dict[str, str] = {}
            if spec.graph is not None:
                info = manifest.graphs[spec.graph]
                source = check_graph_file(directory, info, avatar_dir)
                found = _plans(directory / ENGINES_DIR, spec, info.sha256, deployment.fp16) \
                    if deployment.device == "gpu" else {}
                for cc, engine in found.items():
                    plans[cc] = engine.name[:-len(".engine")].replace(f"{spec.graph}.", "model.", 1) + ".plan"
                    shutil.copyfile(engine, model_dir / "1" / plans[cc])
                if not found:
                    shutil.copyfile(source, model_dir / "1" / "model.onnx")
                models[spec.name] = {"graph": spec.graph, "sha256": info.sha256,
                                     "runs": f"tensorrt plans for sm {', '.join(sorted(plans))}" if plans
                                     else "onnxruntime"}
            elif spec.builtin == PACK:
                import onnx

                onnx.save(pack_graph(spec.outputs[0].dims[0]), str(model_dir / "1" / "model.onnx"))
                models[spec.name] = {"builtin": PACK, "runs": "onnxruntime"}
            else:
                models[spec.name] = {"ensemble": [s[0] for s in spec.steps]}
            (model_dir / "config.pbtxt").write_text(config_pbtxt(spec, deployment, plans or None))
        # replace this avatar's models (and only them) now that all are written
        old = [p for p in repo.iterdir() if p.is_dir() and p.name.startswith(f"{namespace}.")
               and not p.name.startswith(".")]
        trash = Path(tempfile.mkdtemp(prefix=".ideal-triton.old-", dir=repo))
        for path in old:
            os.replace(path, trash / path.name)
        for spec in specs:
            os.replace(stage / spec.name, repo / spec.name)
        shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    entry = {"avatar_fingerprint": manifest.avatar_fingerprint, "avatar_dir_name": avatar_dir.resolve().name,
             "tiers": {s.tier: json.loads(s.parameters["ideal_tier"]) for s in specs if s.is_ensemble},
             "device": deployment.device, "fp16": deployment.fp16, "instances": deployment.instances,
             "queue_delay_us": deployment.queue_delay_us, "max_batch_size": specs[0].max_batch_size,
             "models": models, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    index["avatars"][namespace] = entry
    tmp = repo / (TRITON_MANIFEST + ".partial")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, repo / TRITON_MANIFEST)
    return entry


def _read_index(repo: Path) -> dict[str, Any]:
    path = repo / TRITON_MANIFEST
    fresh = {"triton_format_version": TRITON_FORMAT_VERSION, "avatars": {}}
    if not path.exists():
        return fresh
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})", "delete it (and the models it lists) or use another -o") \
            from exc
    if index.get("triton_format_version") != TRITON_FORMAT_VERSION:
        log.warning("%s: written by repository format %s; its entries are dropped, their models stay until "
                    "replaced", path, index.get("triton_format_version"))
        return fresh
    index.setdefault("avatars", {})
    return index
