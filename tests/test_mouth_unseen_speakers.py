"""Lips from voices the audio-to-mouth model never heard (the larger real set, ../shared/data/speakers).

The shipped model has heard every speaker of the shared set, so on them it would be scored on its own training
data. Instead this test retrains with the shipped recipe (`ideal mouth train`, the shipped model's offsets and
gate verdicts) on twelve other speakers and scores three people left out of that training with `ideal mouth
evaluate`: one fold of the leave-one-speaker-out benchmark, end to end on real clips. It runs where the shared set
is present and is counted in the summary line (marker `shared`). Measured when written (r after each clip's A/V
offset): klobuchar 0.60, vlog_w1 0.54, markey 0.64; mean r at the recorded alignment 0.55.
"""

from __future__ import annotations

import json
from pathlib import Path

from ideal.avatar.manifest import MOUTH_MODEL_DIR
from ideal.cli import main

UNSEEN = ("klobuchar", "vlog_w1", "markey")  # a senator (HDTF), a webcam vlogger, a senator


def test_lips_follow_voices_the_mouth_model_never_heard(shared_data: Path, tmp_path: Path, capsys) -> None:
    shipped = json.loads((MOUTH_MODEL_DIR / "mouth.json").read_text())
    left_out = set(shipped.get("left_out", {}))
    train = [p for p in sorted((shared_data / "speakers").glob("*.mp4")) if p.stem not in UNSEEN + tuple(left_out)]
    assert len(train) >= 10, train
    model = tmp_path / "model"
    assert main(["-q", "mouth", "train", "--data", *map(str, train), "-o", str(model), "--variants", "1",
                 "--offsets", str(MOUTH_MODEL_DIR / "mouth.json"), "--cache", str(tmp_path / "cache")]) == 0
    heard = {d["name"] for d in json.loads((model / "mouth.json").read_text())["training_data"]}
    assert not heard & set(UNSEEN) and len(heard) == len(train)
    capsys.readouterr()
    clips = [str(shared_data / "speakers" / f"{name}.mp4") for name in UNSEEN]
    assert main(["-q", "mouth", "evaluate", "--model", str(model), "--cache", str(tmp_path / "cache"), *clips]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    after_offset = {name: float(rows[name][-1]) for name in UNSEEN}
    assert all(r > 0.3 for r in after_offset.values()), after_offset
    assert float(rows["mean"][-1]) > 0.45, rows["mean"]  # the mean row is r at the recorded alignment
