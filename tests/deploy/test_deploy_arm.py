"""`make arm-check` as a test: the edge package on aarch64 (qemu-user) must give the x86 digits.

Runs deploy/arm_check.py on 60 FSDD official test takes with the shipped model, and the daemon on a
stream of 8 of them. The first run on a
machine downloads Debian's arm64 python3.11 (+ libraries) and the aarch64 wheels into cache/arm
(gitignored); later runs are offline and take well under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deploy_helpers import ROOT

COUNT = 60


def test_edge_on_aarch64_matches_x86(tmp_path: Path, built_wheel: Path, ship_model: Path, fsdd_dir: Path) -> None:
    report = tmp_path / "arm-check.json"
    cmd = [sys.executable, str(ROOT / "deploy" / "arm_check.py"), "--cache", str(ROOT / "cache" / "arm"),
           "--count", str(COUNT), "--wheel", str(built_wheel), "--model", str(ship_model),
           "--fsdd", str(fsdd_dir), "--json", str(report)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    print(proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    result = json.loads(report.read_text())
    assert result["files"] == COUNT >= 50
    assert result["agree"] == COUNT, [r for r in result["rows"] if r["aarch64"] != r["x86_64"]]
    # Same digits is the requirement; confidences differ a little (INT8 kernels differ per CPU; 0.011 was
    # the largest difference over all 300 test takes with the first trained model).
    assert result["max_confidence_delta"] < 0.05
    # The daemon (VAD, resampler, segmenter, classifier) on a stream of spoken digits: same digits on both.
    daemon = result["daemon"]
    assert daemon["aarch64"] and daemon["equal"], daemon
