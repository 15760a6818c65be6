"""Shared fixtures: where FSDD is, and the official test takes used across suites."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FSDD_PATTERN = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


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
    """Official test takes (0-4), sorted, as (path) list; the digit is the first character of the name."""
    files = []
    for p in sorted(fsdd_dir.glob("*.wav")):
        m = FSDD_PATTERN.match(p.name)
        if m and int(m.group(3)) <= 4:
            files.append(p)
    return files
