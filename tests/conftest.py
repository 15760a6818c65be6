"""Shared fixtures: where FSDD is, and the official test takes used across suites."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digitspot.edge.devtools.fsdd import list_takes

ROOT = Path(__file__).resolve().parent.parent


def _fsdd_dir() -> Path:
    env = os.environ.get("FSDD_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "fsdd" / "recordings"


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    path = _fsdd_dir()
    if not path.is_dir():
        pytest.fail(f"FSDD not found at {path}: set FSDD_DIR or run `make data`")
    return path


@pytest.fixture(scope="session")
def fsdd_test_files(fsdd_dir: Path) -> list[Path]:
    """Official test takes (0-4) as paths sorted by name; ``digitspot.edge.devtools.fsdd`` parses their names."""
    return [t.path for t in list_takes(fsdd_dir, official_test_only=True)]
