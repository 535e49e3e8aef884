"""The shipped audio-to-mouth model on people it never heard (the larger real set, ../shared/data/speakers).

The suite's own footage is one person; whether lips follow *any* voice needs other people, so this test runs
where the shared set is present and is counted in the summary line (marker `shared`). Measured when written
(`ideal mouth evaluate` on these three clips): r after each clip's A/V offset 0.47, 0.37, 0.70, mean 0.51.
"""

from __future__ import annotations

from pathlib import Path

from ideal.cli import main

UNSEEN = ("klobuchar", "vlog_w1", "markey")  # a senator (HDTF), a webcam vlogger, a senator: none in training


def test_lips_follow_voices_the_mouth_model_never_heard(shared_data: Path, tmp_path: Path, capsys) -> None:
    clips = [str(shared_data / "speakers" / f"{name}.mp4") for name in UNSEEN]
    assert main(["-q", "mouth", "evaluate", "--cache", str(tmp_path), *clips]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    after_offset = {name: float(rows[name][-1]) for name in UNSEEN}
    assert all(r > 0.25 for r in after_offset.values()), after_offset
    assert float(rows["mean"][-1]) > 0.4, rows["mean"]
