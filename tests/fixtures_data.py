"""Session-scoped real datasets for the tests (owned by the prepare stage).

`obama_dataset` runs the real `ideal prepare` pipeline once per session on a 7 s excerpt of
train/obama_20s.mp4 (the public-domain clip) and returns the dataset dir. Other stages' tests (e.g. the tiny
trained avatar) build on it. The A/V offset estimator is skipped here (`no_av_offset`) so the fixture is
deterministic and does not depend on another stage; no preview, to keep it cheap (~10 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

OBAMA_EXCERPT_S = 7.0


@pytest.fixture(scope="session")
def obama_dataset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset dir of the first 7 s of obama_20s.mp4 (175 frames at 25 fps, 450x450)."""
    from ideal.avatar.prepare.dataset import PrepareConfig, prepare_dataset

    out = tmp_path_factory.mktemp("datasets") / "obama"
    prepare_dataset(PrepareConfig(video=shared_data / "train" / "obama_20s.mp4", output=out, start=0.0,
                                  duration=OBAMA_EXCERPT_S, no_av_offset=True, progress=False))
    return out
