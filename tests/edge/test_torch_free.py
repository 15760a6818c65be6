"""The architecture rule that keeps the Pi install light: ``digitspot.edge`` runs without torch.

A fresh venv gets only the base (edge) dependencies, exactly as a Pi would, and must classify real
FSDD recordings with the shipped model while ``import torch`` fails there.
"""

from __future__ import annotations

import ast
import json
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "artifacts" / "digitspot.onnx"


def test_edge_sources_never_import_torch():
    """Static guard: no module of the edge package names torch in an import statement."""
    offenders = []
    for path in sorted((ROOT / "edge").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in {"torch", "torchaudio", "train"}:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not offenders, offenders


@pytest.fixture(scope="module")
def edge_only_venv(tmp_path_factory) -> Path:
    """A venv with `pip install <repo>` (no extras): the Pi's install."""
    env_dir = tmp_path_factory.mktemp("edge-only") / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    result = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        check=False, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return env_dir


def test_torch_is_not_installed_by_the_edge_install(edge_only_venv: Path):
    py = edge_only_venv / "bin" / "python"
    probe = subprocess.run([str(py), "-c", "import torch"], check=False, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr


def test_edge_only_install_classifies_fsdd(edge_only_venv: Path, fsdd_test_files: list[Path]):
    files = fsdd_test_files[::15]  # 20 takes spread over digits and speakers
    cli = edge_only_venv / "bin" / "digitspot-edge"
    result = subprocess.run(
        [str(cli), "classify", "--model", str(MODEL), *map(str, files)],
        check=False, capture_output=True, text=True, timeout=300, cwd=edge_only_venv.parent,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(line["path"]).name for line in lines] == [f.name for f in files]
    correct = sum(line["digit"] == int(Path(line["path"]).name[0]) for line in lines)
    assert correct >= 0.9 * len(files), lines
    # and nothing the edge CLI loaded pulled torch in behind our back
    check = subprocess.run(
        [str(edge_only_venv / "bin" / "python"), "-c",
         ("import sys, digitspot.edge.cli, digitspot.edge.classifier, digitspot.edge.audio_io, digitspot.edge.card; "
          "assert 'torch' not in sys.modules; print('ok')")],
        check=False, capture_output=True, text=True, cwd=edge_only_venv.parent,
    )
    assert check.stdout.strip() == "ok", check.stderr
