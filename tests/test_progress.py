"""Progress off a terminal: a log line per interval, never carriage-return redraws in a log file."""

from __future__ import annotations

import io
import logging

import pytest

from ideal.avatar import progress


def test_redirected_stderr_gets_a_few_log_lines_not_redraws(monkeypatch, caplog):
    stderr = io.StringIO()  # not a terminal, like CI's log or `2> train.log`
    monkeypatch.setattr("sys.stderr", stderr)
    clock = iter(float(t) for t in range(10_000))
    monkeypatch.setattr(progress, "_now", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="ideal.progress"):
        with progress.progress_bar(total=1000, desc="training", unit="step", mininterval=100.0) as bar:
            assert isinstance(bar, progress.LoggedProgress)
            for step in range(1000):
                bar.update(1)
                if step % 100 == 0:
                    bar.set_postfix(psnr=28.0)  # tqdm would redraw at once; here it waits for the interval
    lines = [r.getMessage() for r in caplog.records if r.name == "ideal.progress"]
    assert stderr.getvalue() == ""
    assert 1 <= len(lines) <= 12, lines  # one per interval and the final one, not one per update
    assert lines[-1].startswith("training: 1000/1000 step (100%)") and "psnr=28" in lines[-1]


def test_a_terminal_keeps_the_live_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    bar = progress.progress_bar(total=3, desc="x")
    try:
        assert not isinstance(bar, progress.LoggedProgress)
    finally:
        bar.close()


@pytest.mark.parametrize("disable", [True, False])
def test_disabled_and_iterable_forms(monkeypatch, caplog, disable):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with caplog.at_level(logging.INFO, logger="ideal.progress"):
        assert list(progress.progress_bar(range(5), desc="frames", unit="frame", disable=disable)) == list(range(5))
    lines = [r.getMessage() for r in caplog.records if r.name == "ideal.progress"]
    assert lines == ([] if disable else ["frames: 5/5 frame (100%)" + lines[0].split("(100%)", 1)[1]])
