"""Shared fixtures: paths to the reference material beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only reference material (``../shared``); required, never skipped."""
    assert SHARED.is_dir(), f"../shared must sit beside the repository; not found at {SHARED}"
    return SHARED


@pytest.fixture(scope="session")
def divvy_dir(shared_dir: Path) -> Path:
    """The real Divvy archive."""
    return shared_dir / "data" / "divvy"


@pytest.fixture(scope="session")
def gbfs_dir(shared_dir: Path) -> Path:
    """GBFS schemas and fixtures."""
    return shared_dir / "gbfs"
