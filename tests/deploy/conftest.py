"""Fixtures for the deploy tests: the built wheel, the model to ship, and an sshd on loopback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import ROOT, SSHD, VENV_BIN, Sshd


@pytest.fixture(scope="session")
def ship_model() -> Path:
    """The model `make deploy` ships: the committed artifact (DIGITSPOT_TEST_MODEL overrides it)."""
    model = Path(os.environ.get("DIGITSPOT_TEST_MODEL", ROOT / "artifacts" / "digitspot.onnx"))
    if not model.is_file() or not Path(f"{model}.json").is_file():
        pytest.fail(f"model {model} (+ .json card) not found: it is committed by the training work")
    return model


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make wheel`'s output, built the same way into a temporary dist/ (with constraints.txt)."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([str(ROOT / "deploy" / "build_wheel.sh"), str(out), str(VENV_BIN / "python")],
                          capture_output=True, text=True, check=True)
    return Path(proc.stdout.split()[-1])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    if not Path(SSHD).exists():
        pytest.fail("sshd not found: apt-get install openssh-server (make sysdeps)")
    if os.geteuid() != 0:
        pytest.skip("the loopback deployment logs in as root (CI runs as root)")
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
