"""metrics.json and the Markdown table of an evaluation run.

Per mode and role (ours / ablation / baseline) each metric is summarised over the avatars of that role
(training seeds): mean, min and max, and the per-seed values. The table prints mean +- half the seed range.
Two verdicts are computed, never asserted: "ahead of the baseline" per metric (the worst seed of ours still
better than the baseline) and "EAA ahead of concat beyond the seed spread" (the seed ranges do not overlap).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ideal.avatar.evaluation.face_metrics import AU_PROXIES
from ideal.avatar.evaluation.runner import HEADLINE, LOWER_IS_BETTER, MODES, EvalRun

ROLES = ("ours", "ablation", "baseline", "floor")
LABELS = {
    "l1": "L1", "psnr": "PSNR dB", "ssim": "SSIM", "lmd": "LMD px", "lmd_mouth": "LMD mouth px",
    "lmdv": "LMDV px", "lmdv_mouth": "LMDV mouth px", "au_error": "AU err", "pose_d": "Pose-D deg",
    "mouth_open_r": "mouth r", "face_found": "face found",
}


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def summarise(run: EvalRun) -> dict:
    """{mode: {role: {metric: {"mean", "min", "max", "seeds": {name: value}}}}}"""
    out: dict = {}
    for mode in MODES:
        out[mode] = {}
        for role in ROLES:
            runs = [r for r in run.runs if r.mode == mode and r.role == role]
            if not runs:
                continue
            metrics = runs[0].metrics.keys()
            out[mode][role] = {}
            for k in metrics:
                vals = {r.name: r.metrics[k] for r in runs}
                arr = np.array([v for v in vals.values() if v is not None and math.isfinite(v)])
                out[mode][role][k] = {
                    "mean": _finite(float(arr.mean())) if arr.size else None,
                    "min": _finite(float(arr.min())) if arr.size else None,
                    "max": _finite(float(arr.max())) if arr.size else None,
                    "seeds": {n: _finite(v) for n, v in vals.items()},
                }
    return out


def _better(metric: str, a: float, b: float) -> bool:
    if metric == "face_found":  # a rate that is usually 1.0 for everybody: not worse is what matters
        return a >= b
    return a < b if metric in LOWER_IS_BETTER else a > b


def verdicts(summary: dict) -> dict:
    """Ours vs baseline and ours vs ablation, per mode and headline metric (None where not computable)."""
    out: dict = {}
    for mode, roles in summary.items():
        ours = roles.get("ours")
        if not ours:
            continue
        v: dict = {"ahead_of_baseline": {}, "ahead_of_ablation_beyond_spread": {}}
        for k in HEADLINE:
            o = ours.get(k, {})
            worst = o.get("max") if k in LOWER_IS_BETTER else o.get("min")
            b = roles.get("baseline", {}).get(k, {}).get("mean")
            v["ahead_of_baseline"][k] = None if worst is None or b is None else _better(k, worst, b)
            a = roles.get("ablation", {}).get(k, {})
            a_best = a.get("min") if k in LOWER_IS_BETTER else a.get("max")
            v["ahead_of_ablation_beyond_spread"][k] = (None if worst is None or a_best is None
                                                       else _better(k, worst, a_best))
        out[mode] = v
    return out


def metrics_json(run: EvalRun, command: str) -> dict:
    held = run.held
    summary = summarise(run)
    return {
        "dataset": str(held.dataset),
        "command": command,
        "tier": run.tier,
        "render_size_px": held.size,
        "crop": {"x0": held.crop[0], "y0": held.crop[1], "side": held.crop[2]},
        "frame_size": list(held.frame_size),
        "heldout_frames": [int(held.index[0]), int(held.index[-1]) + 1],
        "n_heldout": int(len(held.index)),
        "lmd_units": "pixels of a frame scaled to 512 px wide",
        "real_face_found": float(run.real.found.mean()),
        "audio_drive": audio_drive_stats(run),
        "au_proxies": {a.name: {"facs": a.facs, "terms": dict(a.terms)} for a in AU_PROXIES},
        "avatars": run.avatars,
        "summary": summary,
        "verdicts": verdicts(summary),
        "timings_s": {k: round(v, 2) for k, v in run.timings_s.items()},
    }


def audio_drive_stats(run: EvalRun) -> dict:
    """How the audio mode's mouth (audio-to-mouth model, gated) compares with the tracked mouth it replaces,
    before any rendering: the mouth model's own lip-sync on these frames."""
    from ideal.avatar.evaluation.face_metrics import pearson
    from ideal.avatar.expression import mouth_opening

    tracked = mouth_opening(run.held.expression)
    audio = mouth_opening(run.audio_mouth)
    return {"tracked_mouth_open_mean": float(tracked.mean()), "tracked_mouth_open_std": float(tracked.std()),
            "audio_mouth_open_mean": float(audio.mean()), "audio_mouth_open_std": float(audio.std()),
            "r_audio_vs_tracked": _finite(pearson(tracked, audio)),
            "mean_abs_diff": float(np.abs(tracked - audio).mean())}


def _fmt(metric: str, cell: dict | None) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    digits = 4 if metric in ("l1", "ssim") else 2
    mean = f"{cell['mean']:.{digits}f}"
    if cell["min"] is not None and cell["max"] is not None and len(cell["seeds"]) > 1:
        return f"{mean} ± {(cell['max'] - cell['min']) / 2:.{digits}f}"
    return mean


def markdown_table(doc: dict, metrics: tuple[str, ...] = HEADLINE) -> str:
    """Rows: mode x role; columns: the headline metrics."""
    lines = ["| mode | method | n | " + " | ".join(LABELS.get(m, m) for m in metrics) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in metrics) + " |"]
    for mode, roles in doc["summary"].items():
        for role in ROLES:
            cells = roles.get(role)
            if not cells:
                continue
            n = len(next(iter(cells.values()))["seeds"])
            name = {"ours": "ours (EAA)", "ablation": "concat ablation", "baseline": "baseline (NN audio)",
                    "floor": "floor (real crop at render size)"}[role]
            lines.append(f"| {mode} | {name} | {n} | " + " | ".join(_fmt(m, cells.get(m)) for m in metrics) + " |")
    return "\n".join(lines)


def write_report(run: EvalRun, out_dir: Path, command: str) -> dict:
    doc = metrics_json(run, command)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")
    table = markdown_table(doc)
    au = markdown_table(doc, tuple(f"au_{a.name}" for a in AU_PROXIES))
    text = [f"# Evaluation of {', '.join(doc['avatars'])} on {doc['dataset']}", "",
            f"Command: `{command}`", "",
            f"Held-out frames {doc['heldout_frames'][0]}-{doc['heldout_frames'][1] - 1} ({doc['n_heldout']}), "
            f"tier `{doc['tier']}` at {doc['render_size_px']} px, head crop {doc['crop']}; LMD/LMDV in px at 512 px "
            f"frame width; values are mean ± half the seed range.", "", table, "",
            "AU-proxy errors (expression units: 1/10 of the neutral face height):", "", au, "",
            "Verdicts (ours' worst seed vs baseline; ours' worst seed vs ablation's best seed):", "",
            "```", json.dumps(doc["verdicts"], indent=1), "```", ""]
    (out_dir / "table.md").write_text("\n".join(text))
    return doc
