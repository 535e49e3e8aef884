"""Leave-one-speaker-out benchmark of the audio-to-mouth model on every shared speaker.

Clips: the seven of ../shared/data/train and drivers (Obama's two grouped) and the sixteen one-person clips of
../shared/data/speakers: 22 speakers, 23 clips. Each clip's A/V offset and the quality gate's verdict come from
a model trained by `ideal mouth train` (its mouth.json, `--offsets`): the bootstrap with the gate. Clips the gate
left out are used for no training and reported apart (scored at their estimated offset, not in the mean).

For every lookahead asked for, and every speaker, three scores of Pearson r between predicted and tracked mouth
opening on that speaker's clips (mean of its clips), each from a model that never heard the speaker:
- `nn`: the mouth net trained on the other 21 speakers (the configuration under test);
- `ridge`: the reference, ridge regression (alpha 1000) from the flattened feature window, same split;
- `six`: what the model knew before the extra speakers: for the six original speakers, the net trained on the
  other five of them; for the sixteen new ones, the net trained on all six.

Every (method, configuration) run is cached as json under OUT/runs, so the benchmark can be resumed or split
over processes (`--lookaheads`), and `--report` only gathers the runs into OUT/loso.json and OUT/loso.png.

    python benchmarks/mouth_loso.py --offsets BOOTSTRAP_MODEL/mouth.json --out benchmarks/mouth_results \\
        --lookaheads 0 20 40 60 80 100 120 160 200
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ideal.avatar.audio.features import AudioWindow
from ideal.avatar.evaluation.face_metrics import pearson
from ideal.avatar.mouth.augmentation import AugmentConfig
from ideal.avatar.mouth.bank import Sequence, build_bank
from ideal.avatar.mouth.config import MouthTrainConfig, NetConfig
from ideal.avatar.mouth.data import MouthClip, load_clip, shared_speaker_clips
from ideal.avatar.mouth.features import FeatureSpec
from ideal.avatar.mouth.model import MouthModel
from ideal.avatar.mouth.training import build_index, leave_one_speaker_out, predict_sequence, train_mouth_net

log = logging.getLogger("mouth_loso")
REPO = Path(__file__).resolve().parents[1]
SIX = ("andrew", "aoc", "german", "macron", "obama", "reagan")


def _mean(d: dict[str, float]) -> float:
    return float(np.mean(list(d.values()))) if d else float("nan")


def loso_nn(clips, seqs, spec, window, cfg, offsets, speakers: list[str], net: NetConfig = NetConfig()) -> dict:
    """Per-speaker r of the net trained without that speaker (only the clips in `seqs` train or are scored)."""
    res = leave_one_speaker_out(seqs, clips, spec, window, cfg, net, offsets_ms=offsets, raw=True)
    per_speaker = {k: v for k, v in res.per_speaker.items() if k in speakers}
    return {"per_speaker": per_speaker, "per_clip": res.per_clip, "per_clip_raw": res.per_clip_raw,
            "mean": _mean(per_speaker), "_preds": {k: v[:, 0] for k, v in res.predictions.items()}}


def score_unseen(clips, train_seqs, test_seqs, spec, window, cfg, offsets,
                 net: NetConfig = NetConfig()) -> dict[str, float]:
    """One net trained on `train_seqs`, r on the clean sequence of every clip of `test_seqs`."""
    module = train_mouth_net(train_seqs, spec, window, cfg, net, offsets_ms=offsets, progress=False)
    model = MouthModel(window=window, spec=spec, module=module)
    return {clips[s.clip].name: pearson(predict_sequence(model, s, offsets[s.clip])[s.valid, 0], s.mouth[s.valid, 0])
            for s in test_seqs if s.variant == 0}


def loso_ridge(clips, seqs: list[Sequence], window: AudioWindow, spec: FeatureSpec, offsets: dict[int, float],
               speakers: list[str], alpha: float = 1000.0) -> dict:
    """Reference: ridge regression from the flattened feature window to mouth opening (clean data)."""
    from sklearn.linear_model import Ridge

    clean = [s for s in seqs if s.variant == 0]
    out: dict = {"per_speaker": {}, "per_clip": {}}
    for spk in speakers:
        held = {i for i, c in enumerate(clips) if c.speaker == spk}
        tr = build_index([s for s in clean if s.clip not in held], window, spec, offsets)
        x = tr.features[tr.starts[:, None] + np.arange(tr.length)[None, :]].reshape(len(tr.starts), -1)
        ridge = Ridge(alpha=alpha).fit(x, tr.labels[:, 0])
        rs = []
        for s in clean:
            if s.clip in held:
                te = build_index([s], window, spec, offsets)
                xt = te.features[te.starts[:, None] + np.arange(te.length)[None, :]].reshape(len(te.starts), -1)
                out["per_clip"][clips[s.clip].name] = r = pearson(ridge.predict(xt), te.labels[:, 0])
                rs.append(r)
        out["per_speaker"][spk] = float(np.mean(rs))
    out["mean"] = _mean(out["per_speaker"])
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(16, 5), gridspec_kw={"width_ratios": [1, 2.2]})
    curve = results["lookahead"]
    xs = sorted(float(k) for k in curve)
    for key, label, style in (("nn", "mouth net, 22 speakers", "o-"), ("six", "mouth net, 6 speakers (before)", "s--"),
                              ("ridge", "ridge reference, 22 speakers", "^:")):
        ys = [curve[f"{x:g}"].get(key, {}).get("mean", np.nan) for x in xs]
        axes[0].plot(xs, ys, style, label=label)
        for x, y in zip(xs, ys):
            if key == "nn" and np.isfinite(y):
                axes[0].annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, -13), ha="center",
                                 fontsize=7)
    ship = results.get("shipped", {})
    if ship:
        xs_s = sorted(float(k) for k in ship)
        axes[0].plot(xs_s, [ship[f"{x:g}"]["mean"] for x in xs_s], "*", ms=12, color="C3",
                     label=f"shipped: ensemble of {next(iter(ship.values()))['members']}")
        for x in xs_s:
            axes[0].annotate(f"{ship[f'{x:g}']['mean']:.3f}", (x, ship[f"{x:g}"]["mean"]), textcoords="offset points",
                             xytext=(0, 7), ha="center", fontsize=7, color="C3")
    axes[0].axhline(0.6, color="k", ls=":", lw=0.8)
    axes[0].axhline(0.55, color="grey", ls=":", lw=0.8)
    axes[0].set_xlabel("audio lookahead (ms) = latency the model adds")
    axes[0].set_ylabel(f"mean leave-one-speaker-out r ({results['n_speakers']} speakers)")
    axes[0].set_title("mouth opening r against lookahead")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    chosen = results["chosen"]
    spk = sorted(results["table"], key=lambda s: results["table"][s]["ridge"][chosen["dub"]])
    w = 0.2
    after = "shipped" if results.get("shipped") else "nn"
    for j, (key, la, label) in enumerate((("ridge", chosen["dub"], "ridge"), ("six", chosen["dub"], "6 speakers"),
                                          (after, chosen["dub"], f"22 speakers ({after})"),
                                          (after, chosen["live"], f"22 speakers ({after}), live lookahead"))):
        vals = [results["table"][s].get(key, {}).get(la, np.nan) for s in spk]
        axes[1].bar(np.arange(len(spk)) + (j - 1.5) * w, vals, w, label=f"{label} ({la} ms)")
    axes[1].set_xticks(np.arange(len(spk)))
    axes[1].set_xticklabels(spk, rotation=60, ha="right", fontsize=8)
    axes[1].axhline(0.6, color="k", ls=":", lw=0.8)
    axes[1].set_ylabel("r, left-out speaker")
    axes[1].set_title("per speaker (each scored by models that never heard it)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


class Runner:
    """Runs (or reads back) one cached benchmark run per configuration."""

    def __init__(self, args, clips: list[MouthClip], offsets: dict[int, float], kept: list[int]) -> None:
        self.args, self.clips, self.offsets, self.kept = args, clips, offsets, kept
        self.banks: dict[str, list[Sequence]] = {}
        self.runs = args.out / "runs"
        self.runs.mkdir(parents=True, exist_ok=True)
        self.cfg = replace(MouthTrainConfig(), steps=args.steps)
        self.speakers = sorted({clips[i].speaker for i in kept})

    def bank(self, kind: str) -> list[Sequence]:
        if kind not in self.banks:
            self.banks[kind] = build_bank(self.clips, FeatureSpec(kind), AugmentConfig(n_variants=self.args.variants),
                                          cache_dir=self.args.cache, progress=False)
        return self.banks[kind]

    def key(self, method: str, kind: str, la: float, length: int, steps: int | None = None, members: int = 1) -> str:
        offs = json.dumps({c.name: round(self.offsets[i], 1) for i, c in enumerate(self.clips)}, sort_keys=True)
        tag = hashlib.sha1(f"{offs}{self.kept}{self.args.variants}".encode()).hexdigest()[:8]
        ens = f"-m{members}" if members > 1 else ""
        return f"{method}-{kind}-L{length}-la{la:g}-s{steps or self.args.steps}{ens}-{tag}"

    def run(self, method: str, kind: str, la: float, length: int = 24, steps: int | None = None,
            members: int | None = None, cached_only: bool = False) -> dict:
        members = members or self.args.members
        net = replace(NetConfig(), members=members)
        path = self.runs / f"{self.key(method, kind, la, length, steps, members)}.json"
        if path.exists():
            return json.loads(path.read_text())
        if self.args.report or cached_only:
            return {}
        t0 = time.time()
        spec, window = FeatureSpec(kind), AudioWindow(length, la)
        cfg = replace(self.cfg, steps=steps or self.args.steps)
        seqs = [s for s in self.bank(kind) if s.clip in self.kept]
        if method == "nn":
            res = loso_nn(self.clips, seqs, spec, window, cfg, self.offsets, self.speakers, net)
            preds = res.pop("_preds")
            # the left-out clips, scored by the net that heard every kept speaker but theirs
            held = [s for s in self.bank(kind) if s.clip not in self.kept]
            res["left_out"] = (score_unseen(self.clips, seqs, held, spec, window, cfg, self.offsets, net)
                               if held else {})
            if la in (self.args.dub, self.args.live) and length == 24 and steps is None:
                np.savez(self.runs / f"{path.stem}-preds.npz", **preds)
        elif method == "ridge":
            res = loso_ridge(self.clips, seqs, window, spec, self.offsets, self.speakers)
        elif method == "six":
            six = [s for s in seqs if self.clips[s.clip].speaker in SIX]
            new = [s for s in seqs if self.clips[s.clip].speaker not in SIX]
            inner = loso_nn(self.clips, six, spec, window, cfg, self.offsets, list(SIX), net)
            inner.pop("_preds")
            per_clip = score_unseen(self.clips, six, new, spec, window, cfg, self.offsets, net)
            per_speaker = dict(inner["per_speaker"])
            for spk in sorted({self.clips[s.clip].speaker for s in new}):
                per_speaker[spk] = float(np.mean([r for n, r in per_clip.items()
                                                  if any(c.name == n and c.speaker == spk for c in self.clips)]))
            res = {"per_speaker": per_speaker, "per_clip": {**inner["per_clip"], **per_clip},
                   "mean": _mean(per_speaker), "mean_six": inner["mean"],
                   "mean_new": _mean({k: v for k, v in per_speaker.items() if k not in SIX})}
        else:
            raise ValueError(method)
        res["seconds"] = round(time.time() - t0, 1)
        path.write_text(json.dumps(res, indent=2))
        log.info("%s: mean r=%.3f (%.0f s)", path.stem, res["mean"], res["seconds"])
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--speakers", type=Path, default=REPO / "benchmarks" / "mouth_results" / "speakers.json",
                    help="json {clip: speaker}")
    ap.add_argument("--offsets", type=Path, required=True,
                    help="mouth.json of the bootstrap model (`ideal mouth train` on the same clips): offsets + gate")
    ap.add_argument("--cache", type=Path, default=None, help="tracking/feature cache (default IDEAL_MOUTH_CACHE)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "mouth_results")
    ap.add_argument("--steps", type=int, default=MouthTrainConfig.steps)
    ap.add_argument("--variants", type=int, default=AugmentConfig.n_variants)
    ap.add_argument("--members", type=int, default=1, help="ensemble members of the net (NetConfig.members)")
    ap.add_argument("--feature", default="cepstral", help="the feature of the lookahead curve")
    ap.add_argument("--lookaheads", type=float, nargs="*", default=[0, 20, 40, 60, 80, 100, 120, 160, 200])
    ap.add_argument("--methods", nargs="+", default=["nn", "ridge", "six"])
    ap.add_argument("--extra", nargs="*", default=[], metavar="KIND:LOOKAHEAD[:LENGTH[:STEPS[:MEMBERS]]]",
                    help="further nn runs to compare, e.g. logmel:120 cepstral:120:32 cepstral:120:24:1600:3")
    ap.add_argument("--dub", type=float, default=120.0, help="the dubbing lookahead of the report (ms)")
    ap.add_argument("--live", type=float, default=40.0, help="the live lookahead of the report (ms)")
    ap.add_argument("--shipped-members", type=int, default=3,
                    help="the shipped configuration: the --extra runs with this many members at the dubbing and live "
                         "lookaheads are its rows of the table and plot")
    ap.add_argument("--report", action="store_true", help="only gather finished runs into loso.json / loso.png")
    ap.add_argument("--six", action="store_true", help="only the seven clips of the six original speakers")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from ideal.avatar.mouth.pipeline import read_clip_gate, read_offsets, read_speakers

    speakers = read_speakers(args.speakers)
    clips = [load_clip(v, a, speaker=speakers.get(v.stem, s), cache_dir=args.cache)
             for v, a, s in shared_speaker_clips(args.data) if not args.six or v.parent.name != "speakers"]
    known, gate = read_offsets(args.offsets), read_clip_gate(args.offsets) or {}
    offsets = {i: known[c.name] for i, c in enumerate(clips)}
    kept = [i for i, c in enumerate(clips) if gate.get(c.name, {}).get("kept", True)]
    runner = Runner(args, clips, offsets, kept)
    for la in args.lookaheads:
        for m in args.methods:
            runner.run(m, args.feature, la)
    extras = {}
    for item in args.extra:
        kind, la, *rest = item.split(":")
        length = int(rest[0]) if rest else 24
        steps = int(rest[1]) if len(rest) > 1 else None
        members = int(rest[2]) if len(rest) > 2 else None
        extras[item] = runner.run("nn", kind, float(la), length, steps, members)
    # gather every finished run of the curve
    curve: dict = {}
    for la in sorted(set(args.lookaheads) | {args.dub, args.live}):
        curve[f"{la:g}"] = {m: r for m in ("nn", "ridge", "six")
                            if (r := runner.run(m, args.feature, la, cached_only=True))}
    dub, live = f"{args.dub:g}", f"{args.live:g}"
    shipped = {f"{float(k.split(':')[1]):g}": v for k, v in extras.items()
               if v and k.startswith(f"{args.feature}:") and k.endswith(f":{args.shipped_members}")}
    table: dict = {}
    for spk in runner.speakers:
        table[spk] = {m: {la: round(curve[la][m]["per_speaker"][spk], 3) for la in (dub, live) if m in curve[la]}
                      for m in ("nn", "ridge", "six")}
        table[spk]["shipped"] = {la: round(v["per_speaker"][spk], 3) for la, v in shipped.items()}
    results = {
        "clips": {c.name: {"speaker": c.speaker, "frames": len(c.mouth), "av_offset_ms": offsets[i],
                           "kept": i in kept, "gate": gate.get(c.name)} for i, c in enumerate(clips)},
        "n_speakers": len(runner.speakers), "offsets_from": str(args.offsets.name),
        "train_config": runner.cfg.to_dict(),
        "feature": args.feature, "chosen": {"dub": dub, "live": live},
        "lookahead": {la: {m: {"mean": round(r["mean"], 3), "per_speaker": {k: round(v, 3) for k, v in
                                                                          r["per_speaker"].items()},
                               **({"left_out": r["left_out"]} if "left_out" in r else {}),
                               **({"mean_six": round(r["mean_six"], 3), "mean_new": round(r["mean_new"], 3)}
                                  if "mean_six" in r else {})}
                           for m, r in v.items()} for la, v in curve.items()},
        "extra": {k: {"mean": round(v["mean"], 3), "per_speaker": {s: round(x, 3) for s, x in v["per_speaker"].items()}}
                  for k, v in extras.items() if v},
        "table": table,
        "shipped": {la: {"mean": round(v["mean"], 3), "members": args.shipped_members} for la, v in shipped.items()},
    }
    (args.out / "loso.json").write_text(json.dumps(results, indent=2))
    if dub in curve and "nn" in curve[dub]:
        plot(results, args.out / "loso.png")
    print(f"{'lookahead':>9s} {'nn':>6s} {'ridge':>6s} {'six':>6s}")
    for la, v in curve.items():
        print(f"{la:>9s} " + " ".join(f"{v[m]['mean']:6.3f}" if m in v else "     -" for m in ("nn", "ridge", "six")))
    for k, v in results["extra"].items():
        print(f"{k:24s} mean r={v['mean']:.3f}")


if __name__ == "__main__":
    main()
