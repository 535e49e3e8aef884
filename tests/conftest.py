"""Shared test set-up. Fixtures are grouped by the stage that owns them, one module each, so that the real
(slow) work -- preparing a short clip, training a tiny avatar -- happens once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IDEAL_SHARED_DATA", REPO.parent / "shared" / "data"))

from fixtures_data import *  # noqa: E402, F403  (datasets: owned by avatar.prepare)
from fixtures_avatar import *  # noqa: E402, F403  (avatars: owned by the model)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The larger read-only set of real clips and speech (../shared/data): other people and longer runs. The
    suite's own real data ships in tests/data (see fixtures_data.py); only the tests marked `shared` need this."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the larger real data set is not at {SHARED_DATA} (set IDEAL_SHARED_DATA to use it)")
    return SHARED_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Say how many tests ran on the larger real data set, so a run without it is never mistaken for a full one."""
    outcomes: dict[str, int] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if report.when in ("call", "setup") and "shared" in getattr(report, "keywords", {}):
                if outcome == "passed" and report.when == "setup":
                    continue
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if outcomes:
        found = "found" if SHARED_DATA.is_dir() else "not found"
        terminalreporter.write_line(f"tests on the larger real data set ({SHARED_DATA}, {found}): "
                                    + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())))


@pytest.fixture(scope="session")
def mouth_model_dir() -> Path:
    """The shipped audio-to-mouth model (IDEAL_MOUTH_MODEL overrides it, e.g. while it is being retrained)."""
    from ideal.avatar.manifest import MOUTH_MODEL_DIR

    path = Path(os.environ.get("IDEAL_MOUTH_MODEL", MOUTH_MODEL_DIR))
    if not (path / "mouth.json").exists():
        pytest.skip(f"the shipped audio-to-mouth model is missing ({path})")
    return path


def require_binary(name: str) -> str:
    """Path of a system binary, or skip the test saying what to install."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (the README's test command installs it when run as root)")
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system Chromium for the browser tests (driven by Playwright), or skip saying what to install."""
    path = require_binary("chromium")
    pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install playwright)")
    return path


@pytest.fixture(autouse=True)
def _no_global_torch_state_leaks():
    """A test (or the code under test) must not leave autograd switched off for the tests after it: a
    process-wide `torch.set_grad_enabled(False)` once broke every later training in the suite."""
    yield
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("autograd was left disabled process-wide; scope it with `torch.no_grad()`")


def live_instances(cls: type) -> int:
    """Objects of `cls` the garbage collector still holds (after a collection). Dead weakref proxies in
    gc.get_objects() raise ReferenceError on isinstance, so they are skipped rather than crashing the count."""
    import gc

    gc.collect()
    count = 0
    for obj in gc.get_objects():
        try:
            count += isinstance(obj, cls)
        except ReferenceError:
            continue
    return count
