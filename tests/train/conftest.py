"""One ``digitspot-train all --quick`` run on real FSDD audio, shared by the tests of this directory.

It runs as a user would (the console script in a subprocess) into a temporary run directory, with
its own synthetic-voice cache, so the tests never touch the shipped artifacts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN_CLI = [sys.executable, "-m", "digitspot.train.cli"]


def run_train(args: list[str], fsdd_dir: Path | None, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("FSDD_DIR", None)
    if fsdd_dir is not None:
        args = args + ["--data-dir", str(fsdd_dir)]
    return subprocess.run(TRAIN_CLI + args + ["--no-progress", "--threads", "1"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session", name="run_train")
def run_train_fixture():
    """``run_train(args, fsdd_dir, cwd)``: the ``digitspot-train`` CLI in a subprocess."""
    return run_train


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, fsdd_dir):
    """Paths of a finished quick run: ``run`` (checkpoints, stage configs) and ``out`` (models, report)."""
    base = tmp_path_factory.mktemp("quick")
    run, out, cache = base / "run", base / "out", base / "cache"
    result = run_train(["all", "--quick", "--run-dir", str(run), "--out", str(out), "--cache-dir", str(cache),
                        "--loso-results", str(base / "none.json")], fsdd_dir, cwd=base)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"base": base, "run": run, "out": out, "cache": cache, "stdout": result.stdout, "stderr": result.stderr}
