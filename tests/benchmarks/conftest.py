"""Fixtures for the benchmark tests: a model to measure (the shipped artifact, else the edge fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bench_model() -> Path:
    for candidate in (ROOT / "artifacts" / "digitspot.onnx", ROOT / "tests" / "fixtures" / "fixture.onnx"):
        if candidate.is_file() and Path(str(candidate) + ".json").is_file():
            return candidate
    pytest.fail("no model to benchmark: neither artifacts/digitspot.onnx nor tests/fixtures/fixture.onnx exists")
