"""Session-scoped trained avatars for the tests (owned by the model stage).

`tiny_avatar`: the real `ideal train` on the `obama_dataset` fixture (7 s of obama_20s.mp4) for ~40 s of CPU
time at a 256 px crop, float32 weights. Good enough to render a recognisable head; far from converged.
`default_avatar`: the built-in avatar shipped in the repo (skips when this checkout has none yet).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_AVATAR_MINUTES = 1.0


@pytest.fixture(scope="session")
def tiny_avatar(obama_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An avatar dir trained on the obama_dataset fixture (~40 s)."""
    from ideal.cli import main

    out = tmp_path_factory.mktemp("avatars") / "tiny"
    code = main(["-q", "train", str(obama_dataset), "-o", str(out), "--consent", "--recipe", "quick",
                 "--minutes", str(TINY_AVATAR_MINUTES),
                 "--output-size", "256", "--eval-every", "30", "--checkpoint-every", "1000000", "--seed", "0"])
    assert code == 0, f"ideal train failed with exit code {code}"
    return out


@pytest.fixture(scope="session")
def default_avatar() -> Path:
    """The built-in avatar (avatar/assets/default_avatar)."""
    from ideal.avatar.manifest import AVATAR_MANIFEST, DEFAULT_AVATAR_DIR

    if not (DEFAULT_AVATAR_DIR / AVATAR_MANIFEST).exists():
        pytest.skip(f"the built-in avatar is not in this checkout yet ({DEFAULT_AVATAR_DIR})")
    return DEFAULT_AVATAR_DIR
