"""Bench output: what machine and versions a run was on, a terminal table, the JSON file and the plot.

The JSON carries everything needed to compare two runs (machine, library versions, git commit, settings) next
to the figures; the table and the plot are views of the same dict.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from ideal.streamer.stats import percentiles


def distribution(values: list[float] | np.ndarray) -> dict[str, float | None]:
    """{"p50": .., "p95": .., "p99": .., "mean": .., "n": ..} of the finite values, to 3 decimals; None entries
    when there are none."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return {**percentiles(arr, digits=3), "mean": round(float(arr.mean()), 3) if arr.size else None,
            "n": int(arr.size)}


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # an optional library that is absent or broken simply has no version
        return None
    return str(getattr(mod, "__version__", "unknown"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """Machine, GPU and library versions (only libraries already importable; nothing is installed)."""
    import torch

    info: dict[str, Any] = {
        "hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # other processes compete for the CPU on shared machines: figures taken under load are not comparable
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "git_commit": _git_commit(),
    }
    info["versions"] = {name: _version(name) for name in
                        ("torch", "numpy", "onnx", "onnxruntime", "tensorrt", "aiortc", "av", "ideal")}
    return info


def write_json(report: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Plain aligned text table. columns: (key, header); floats get 1 decimal, None shows as '-'."""
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3f}"
        return str(v)

    cells = [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, (_, h) in enumerate(columns)]
    line = lambda items: "  ".join(s.rjust(w) if i else s.ljust(w) for i, (s, w) in enumerate(zip(items, widths)))  # noqa: E731
    out = [line([h for _, h in columns]), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Per-stage bars (offline), latency histograms (realtime, webrtc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mode = report["mode"]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    if mode == "offline":
        rows = report["results"]
        labels = [f"{r['backend']}\n{r['tier']} x{r['batch']}" for r in rows]
        stages = [s for s in report.get("stages", []) if any(r["stage_ms"].get(s) for r in rows)]
        bottom = np.zeros(len(rows))
        for stage in stages:
            vals = np.array([r["stage_ms"].get(stage) or 0.0 for r in rows])
            ax.bar(labels, vals, bottom=bottom, label=stage)
            bottom += vals
        ax.set_ylabel("ms per frame (batch call / batch)")
        ax.set_title(f"ideal bench offline: time per frame by stage ({report['machine']['cpu'][:40]})")
        ax.legend(fontsize=8)
    else:
        series = report.get("latency_samples_ms", {})
        for label, values in series.items():
            if values:
                ax.hist(values, bins=40, alpha=0.6, label=f"{label} (n={len(values)})")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("frames" if mode == "realtime" else "trials")
        ax.set_title(f"ideal bench {mode}: {report.get('latency_definition', 'latency')}"[:90])
        if any(series.values()):
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no latency measured (every frame late?)", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
