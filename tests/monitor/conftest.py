"""Monitor test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository, or beside a parent (a worktree under ``wt/``)."""
    for parent in HERE.parents[2:]:
        candidate = parent / "shared"
        if (candidate / "seeds").is_dir():
            return candidate
    raise AssertionError(f"no shared/ directory beside {HERE.parents[2]} or its parents")
