"""Training the audio-to-mouth network on precomputed feature sequences, and the per-clip A/V lag bootstrap.

Examples are (feature window, mouth slice) pairs of every tracked video frame of every variant; windows
are gathered from one concatenated feature array by index, so an epoch costs no copying of features.
Each clip's A/V offset shifts where its windows are cut (audio late by d ms: the window moves d ms on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from ideal.avatar.progress import progress_bar

from ideal.avatar.audio.features import AudioWindow
from ideal.avatar.evaluation.face_metrics import pearson
from ideal.avatar.mouth.bank import Sequence
from ideal.avatar.mouth.features import FeatureSpec, padding_value
from ideal.avatar.mouth.inference import frame_end_indices
from ideal.avatar.mouth.config import MouthTrainConfig, NetConfig
from ideal.avatar.mouth.model import MouthModel, MouthNet

log = logging.getLogger(__name__)


@dataclass
class ExampleIndex:
    """All training examples of a set of sequences: rows to gather + labels."""

    features: np.ndarray  # (R, D) all sequences concatenated, each padded with `length` silence rows both sides
    starts: np.ndarray  # (M,) first row of each example's window
    labels: np.ndarray  # (M, 10)
    length: int


def _clip_label_norm(seqs: list[Sequence]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per clip (mean, std) of the mouth labels (from its clean variant), and the pooled ones under key -1."""
    stats = {}
    for s in seqs:
        if s.variant == 0:
            m = s.mouth[s.valid]
            stats[s.clip] = (m.mean(0), m.std(0) + 1e-4)
    means = np.stack([v[0] for v in stats.values()])
    stds = np.stack([v[1] for v in stats.values()])
    stats[-1] = (means.mean(0), stds.mean(0))
    return stats


def build_index(seqs: list[Sequence], window: AudioWindow, spec: FeatureSpec,
                offsets_ms: dict[int, float] | None = None, label_norm: str = "none") -> ExampleIndex:
    length, pad = window.length, padding_value(spec)
    blocks, starts, labels, base = [], [], [], 0
    norm = _clip_label_norm(seqs) if label_norm == "clip" else None
    for s in seqs:
        t, d = s.features.shape
        block = np.concatenate([np.full((length, d), pad, np.float32), s.features,
                                np.full((length, d), pad, np.float32)])
        off = (offsets_ms or {}).get(s.clip, 0.0) / s.speed  # the variant's time base is sped up
        ends = frame_end_indices(len(s.mouth), s.fps, window, spec, off)
        keep = s.valid & (ends - length > -length) & (ends < t + length)
        starts.append(base + np.clip(ends[keep], 0, t + length))  # padded row of the window's first frame
        y = s.mouth[keep]
        if norm is not None:
            (m, sd), (pm, psd) = norm[s.clip], norm[-1]
            y = (y - m) / sd * psd + pm
        labels.append(y)
        blocks.append(block)
        base += len(block)
    return ExampleIndex(np.concatenate(blocks), np.concatenate(starts), np.concatenate(labels).astype(np.float32),
                        length)


def _batch(index: ExampleIndex, ids: np.ndarray, jitter: np.ndarray | None = None) -> torch.Tensor:
    starts = index.starts[ids] if jitter is None else np.clip(index.starts[ids] + jitter, 0,
                                                              len(index.features) - index.length)
    rows = starts[:, None] + np.arange(index.length)[None, :]
    return torch.from_numpy(index.features[rows])


def train_mouth_net(seqs: list[Sequence], spec: FeatureSpec, window: AudioWindow,
                    cfg: MouthTrainConfig = MouthTrainConfig(),
                    net: NetConfig = NetConfig(), offsets_ms: dict[int, float] | None = None,
                    progress: bool = True) -> MouthNet:
    """Fit a MouthNet on all examples of `seqs`; returns it in eval mode. With `net.members` > 1, that many
    nets are trained (seeds cfg.seed, cfg.seed + 1, ...) and averaged in one module."""
    if net.members > 1:
        from dataclasses import replace

        from ideal.avatar.mouth.model import assemble_members

        single = replace(net, members=1)
        members = [train_mouth_net(seqs, spec, window, replace(cfg, seed=cfg.seed + k), single, offsets_ms, progress)
                   for k in range(net.members)]
        return assemble_members(members, spec, window.length, net)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    index = build_index(seqs, window, spec, offsets_ms, cfg.label_norm)
    if len(index.starts) < cfg.batch_size:
        raise ValueError(f"only {len(index.starts)} training frames; need at least {cfg.batch_size}")
    module = MouthNet(spec, window.length, net)
    mean, std = index.labels.mean(0), index.labels.std(0) + 1e-4
    module.out_mean.copy_(torch.from_numpy(mean))
    module.out_std.copy_(torch.from_numpy(std))
    y_all = torch.from_numpy((index.labels - mean) / std)
    weights = torch.ones(index.labels.shape[1])
    weights[0] = cfg.mouth_open_weight
    weights = weights / weights.sum()
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15)
    module.train()
    d = index.features.shape[1]
    bar = progress_bar(range(cfg.steps), desc="training mouth model", disable=not progress, leave=False)
    for step in bar:
        ids = rng.integers(0, len(index.starts), cfg.batch_size)
        jitter = rng.integers(-cfg.time_jitter, cfg.time_jitter + 1, cfg.batch_size) if cfg.time_jitter else None
        x = _batch(index, ids, jitter)
        if cfg.feature_mask:
            width = torch.from_numpy(rng.integers(0, cfg.feature_mask + 1, cfg.batch_size))
            lo = torch.from_numpy(rng.integers(0, d, cfg.batch_size))
            bins = torch.arange(d)[None, :]
            mask = (bins >= lo[:, None]) & (bins < (lo + width)[:, None])
            x = x.masked_fill(mask[:, None, :], 0.0)
        pred = module.forward_normalised(x)
        loss = (((pred - y_all[ids]) ** 2) * weights).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    module.eval()
    return module


def predict_sequence(model: MouthModel, seq: Sequence, offset_ms: float = 0.0) -> np.ndarray:
    """(N, 10) predictions for every video frame of a sequence (clean sequences in evaluation)."""
    from ideal.avatar.mouth.inference import gather_windows

    ends = frame_end_indices(len(seq.mouth), seq.fps, model.window, model.spec, offset_ms / seq.speed)
    return model.predict(gather_windows(seq.features, ends, model.window.length, padding_value(model.spec)))


@dataclass
class LosoResult:
    """Leave-one-speaker-out scores: Pearson r of predicted against tracked mouth opening on the clean
    sequence of every clip, by a model trained without that clip's speaker."""

    per_speaker: dict[str, float]  # mean over the speaker's clips
    per_clip: dict[str, float]
    per_clip_raw: dict[str, float]  # the same model scored on the uncorrected A/V alignment (when asked for)
    predictions: dict[str, np.ndarray]  # clip -> (N, 10) on the corrected alignment

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.per_speaker.values())))


def leave_one_speaker_out(seqs: list[Sequence], clips, spec: FeatureSpec, window: AudioWindow,
                          cfg: MouthTrainConfig = MouthTrainConfig(), net: NetConfig = NetConfig(),
                          offsets_ms: dict[int, float] | None = None, raw: bool = False) -> LosoResult:
    """Train one model per speaker without that speaker's clips and score it on them (`raw`: also on the
    uncorrected alignment). The one LOSO loop of `ideal mouth train --loso` and benchmarks/mouth_loso.py."""
    offsets = offsets_ms or {i: 0.0 for i in range(len(clips))}
    result = LosoResult({}, {}, {}, {})
    for spk in sorted({clips[s.clip].speaker for s in seqs}):  # the speakers that have sequences
        held = {i for i, c in enumerate(clips) if c.speaker == spk}
        module = train_mouth_net([s for s in seqs if s.clip not in held], spec, window, cfg, net, offsets,
                                 progress=False)
        model = MouthModel(window=window, spec=spec, module=module)
        rs = []
        for s in seqs:
            if s.clip not in held or s.variant != 0:
                continue
            name = clips[s.clip].name
            pred = predict_sequence(model, s, offsets[s.clip])
            result.per_clip[name] = pearson(pred[s.valid, 0], s.mouth[s.valid, 0])
            result.predictions[name] = pred
            if raw:
                result.per_clip_raw[name] = pearson(predict_sequence(model, s, 0.0)[s.valid, 0], s.mouth[s.valid, 0])
            rs.append(result.per_clip[name])
        result.per_speaker[spk] = float(np.mean(rs))
        log.info("LOSO %s: r=%.3f", spk, result.per_speaker[spk])
    return result


@dataclass(frozen=True)
class ClipGate:
    """Per-clip quality gate: a clip is kept only if its tracked mouth and its audio agree at some offset.

    Measured on the lag curve of a model that never heard the clip's speaker: the peak r must reach `min_r`
    and stand `min_margin` above the best r at lags `far_ms` or more away from the peak (a clip whose audio
    matches its mouth equally well at any lag is not in sync anywhere)."""

    min_r: float = 0.25
    min_margin: float = 0.10
    far_ms: float = 300.0

    def judge(self, lags_ms: np.ndarray, curve: np.ndarray, offset_ms: float, peak: float) -> dict:
        far_mask = np.abs(np.asarray(lags_ms) - offset_ms) >= self.far_ms
        far = float(np.nanmax(np.where(far_mask, curve, np.nan))) if np.isfinite(curve[far_mask]).any() else 0.0
        reasons = []
        if peak < self.min_r:
            reasons.append(f"peak r {peak:.3f} < {self.min_r:.2f}")
        if peak - far < self.min_margin:
            reasons.append(f"peak r {peak:.2f} is not {self.min_margin:.2f} above r {far:.2f} at lags "
                           f">= {self.far_ms:.0f} ms away")
        return {"offset_ms": round(float(offset_ms), 1), "r": round(float(peak), 3), "r_far": round(far, 3),
                "kept": not reasons, "reason": "; ".join(reasons)}


def bootstrap_offsets(seqs: list[Sequence], clips, spec: FeatureSpec, window: AudioWindow,
                      cfg: MouthTrainConfig = MouthTrainConfig(), net: NetConfig = NetConfig(), rounds: int = 2,
                      progress: bool = True, gate: ClipGate | None = None
                      ) -> tuple[dict[int, float], list[dict]]:
    """Alternate fitting and a per-clip lag search to find every training clip's A/V offset.

    Each clip's lag is searched with a model trained *without that speaker* (so a model that has absorbed
    the clip's own misalignment cannot confirm it), on the other clips' current alignment. Bootstrapping
    fixes offsets only up to a shared constant, so they are anchored to a median of zero: most footage is
    assumed in sync, and the odd clip out is the one corrected.

    With a `gate`, every round also judges each clip (`ClipGate.judge`); a clip failing it is left out of the
    next round's training sets (and out of the median). Each history entry maps clip -> offset_ms, r, r_far,
    kept, reason; the last entry's `kept` is the gate's decision."""
    from ideal.avatar.mouth.offset import estimate_offset

    speakers = sorted({c.speaker for c in clips})
    offsets = {i: 0.0 for i in range(len(clips))}
    dropped: set[int] = set()
    history = []
    for rnd in range(rounds):
        new = dict(offsets)
        verdicts = {}
        for spk in progress_bar(speakers, desc=f"offset bootstrap round {rnd + 1}", disable=not progress, leave=False):
            held = {i for i, c in enumerate(clips) if c.speaker == spk}
            train = [s for s in seqs if s.clip not in held and s.clip not in dropped]
            module = train_mouth_net(train, spec, window, cfg, net, offsets, progress=False)
            model = MouthModel(window=window, spec=spec, module=module)
            for i in held:
                c = clips[i]
                est = estimate_offset(c.audio, c.mouth_open, c.fps, model=model, valid=c.valid)
                new[i] = est.offset_ms
                verdicts[i] = (gate or ClipGate(-1.0, -1.0)).judge(est.lags_ms, est.curve, est.offset_ms,
                                                                   est.confidence)
        if gate is not None:
            dropped = {i for i, v in verdicts.items() if not v["kept"]}
            if len(dropped) == len(clips):
                dropped = set()
        med = float(np.median([v for i, v in new.items() if i not in dropped]))
        offsets = {i: v - med for i, v in new.items()}
        history.append({clips[i].name: {**verdicts[i], "offset_ms": round(offsets[i], 1)} for i in offsets})
        log.info("bootstrap round %d: %s", rnd + 1, history[-1])
    return offsets, history
