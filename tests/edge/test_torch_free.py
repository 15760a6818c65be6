"""The base install, exactly as a Pi gets it: the wheel alone in a fresh venv, used from outside the repository.

The wheel is built the way `make wheel` builds it (deploy/build_wheel.sh: `pip wheel --no-deps` from a
clean copy of the sources) and installed with only its base dependencies into one venv per session.
Every command then runs from an empty directory under /tmp with no DIGITSPOT_* settings, so nothing
can come from the repository: the model is the one packaged in the wheel, ``digitspot.edge`` runs with
no torch installed, and the training side says which extra it needs.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from digitspot.edge.errors import EXIT_DATAERR, EXIT_MISSING_EXTRA

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODEL = ROOT / "artifacts" / "digitspot.onnx"
FIXTURE_MODEL = ROOT / "tests" / "fixtures" / "fixture.onnx"
PACKAGES = {"edge", "train", "benchmarks", "artifacts"}  # the repository's folders, all under digitspot.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_edge_sources_never_import_torch():
    """Static guard: no module of the edge package names torch or the training side in an import."""
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
                if name.split(".")[0] in {"torch", "torchaudio", "train"} or name.startswith("digitspot.train"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not offenders, offenders


@dataclass(frozen=True)
class WheelInstall:
    wheel: Path
    bin: Path  # the venv's bin/: python, digitspot-edge, digitspot-train
    site: Path  # its site-packages
    workdir: Path  # an empty directory outside the repository: the cwd of every command

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
            ) -> subprocess.CompletedProcess[str]:
        """Run a program of the venv (``digitspot-edge``, ``python``, ...) from the work directory."""
        return subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.workdir,
                              env={**clean_env(), **(env or {})}, capture_output=True, text=True,
                              check=False, timeout=timeout)


def clean_env() -> dict[str, str]:
    """This process's environment minus everything that could point back at the repository or its venv."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "FSDD_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSPOT_") and k not in drop}
    env["PATH"] = SYSTEM_PATH
    return env


@pytest.fixture(scope="session")
def wheel_install(tmp_path_factory) -> WheelInstall:
    base = tmp_path_factory.mktemp("wheel-install")
    built = subprocess.run([str(ROOT / "deploy" / "build_wheel.sh"), str(base / "dist"), sys.executable],
                           capture_output=True, text=True, check=False, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = Path(built.stdout.split()[-1])
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    # The wheel and its base dependencies only (no extras); pip's cache and the local index serve them.
    installed = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                               env=clean_env(), capture_output=True, text=True, check=False, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    workdir = base / "work"
    workdir.mkdir()
    assert not workdir.resolve().is_relative_to(ROOT)
    return WheelInstall(wheel=wheel, bin=env_dir / "bin", site=Path(site), workdir=workdir)


@pytest.fixture(scope="session")
def george_seven(wheel_install: WheelInstall, fsdd_dir: Path) -> str:
    """A copy of FSDD's 7_george_0.wav in the work directory; its name relative to it."""
    shutil.copy(fsdd_dir / "7_george_0.wav", wheel_install.workdir / "7_george_0.wav")
    return "7_george_0.wav"


def test_torch_is_not_installed_by_the_base_install(wheel_install: WheelInstall):
    probe = wheel_install.run("python", "-c", "import torch")
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr


def test_every_module_is_under_the_digitspot_namespace(wheel_install: WheelInstall):
    with zipfile.ZipFile(wheel_install.wheel) as zf:
        outside = [n for n in zf.namelist() if not n.startswith(("digitspot/", "digitspot-0.1.0.dist-info/"))]
    assert outside == []
    site = wheel_install.site
    assert not [name for name in PACKAGES if (site / name).exists() or (site / f"{name}.py").exists()]
    ours = {p.name for p in (site / "digitspot").iterdir() if p.name != "__pycache__"}
    assert ours == PACKAGES  # an implicit namespace package: no digitspot/__init__.py of its own


def test_the_shipped_model_and_card_are_package_data(wheel_install: WheelInstall):
    where = wheel_install.run("python", "-c",
                              "from digitspot.edge.classifier import shipped_model_path; print(shipped_model_path())")
    assert where.returncode == 0, where.stderr
    model = Path(where.stdout.strip())
    assert model.is_relative_to(wheel_install.site)
    assert model.read_bytes() == SHIPPED_MODEL.read_bytes()
    assert Path(f"{model}.json").read_bytes() == Path(f"{SHIPPED_MODEL}.json").read_bytes()


def dev_classify(model: Path, *files: str, cwd: Path) -> list[dict]:
    """The development install's verdicts (this interpreter's venv, the repository's files) for comparison."""
    proc = subprocess.run([str(Path(sys.executable).parent / "digitspot-edge"), "classify", "--model", str(model),
                           *files], cwd=cwd, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_classify_from_outside_the_repository_with_no_flags(wheel_install: WheelInstall, george_seven: str,
                                                            fsdd_test_files: list[Path]):
    one = wheel_install.run("digitspot-edge", "classify", george_seven)
    assert one.returncode == 0, one.stderr
    [verdict] = [json.loads(line) for line in one.stdout.splitlines()]
    assert verdict["path"] == george_seven and verdict["digit"] == 7
    assert [verdict] == dev_classify(SHIPPED_MODEL, george_seven, cwd=wheel_install.workdir)

    # 20 takes spread over digits and speakers: the same verdicts as the development install's shipped model
    files = [str(f) for f in fsdd_test_files[::15]]
    wheel_out = wheel_install.run("digitspot-edge", "classify", *files, timeout=300)
    assert wheel_out.returncode == 0, wheel_out.stderr
    assert [json.loads(line) for line in wheel_out.stdout.splitlines()] == dev_classify(
        SHIPPED_MODEL, *files, cwd=wheel_install.workdir)
    lines = [json.loads(line) for line in wheel_out.stdout.splitlines()]
    assert [Path(line["path"]).name for line in lines] == [Path(f).name for f in files]

    # nothing the edge CLI loads pulls torch in behind our back
    check = wheel_install.run("python", "-c", (
        "import sys, digitspot.edge.cli, digitspot.edge.classifier, digitspot.edge.audio_io, digitspot.edge.card; "
        "assert 'torch' not in sys.modules; print('ok')"))
    assert check.stdout.strip() == "ok", check.stderr


def run_file(wheel_install: WheelInstall, wav: str, *flags: str, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return wheel_install.run("digitspot-edge", "run", "--source", "file", "--input", wav, "--print", "--no-mqtt",
                             *flags, env=env)


def events(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_run_from_outside_the_repository_with_no_flags(wheel_install: WheelInstall, george_seven: str):
    [event] = events(run_file(wheel_install, george_seven))
    assert event["digit"] == 7
    assert event["model"] == {"name": "digitspot", "sha256": sha256(SHIPPED_MODEL)}


def test_model_flag_and_environment_override_the_shipped_model(wheel_install: WheelInstall, george_seven: str):
    fixture = {"name": "digitspot-test-fixture-fp32", "sha256": sha256(FIXTURE_MODEL)}
    missing = str(wheel_install.workdir / "no-such-model.onnx")

    [by_flag] = events(run_file(wheel_install, george_seven, "--model", str(FIXTURE_MODEL)))
    [by_env] = events(run_file(wheel_install, george_seven, env={"DIGITSPOT_MODEL": str(FIXTURE_MODEL)}))
    [flag_over_env] = events(run_file(wheel_install, george_seven, "--model", str(FIXTURE_MODEL),
                                      env={"DIGITSPOT_MODEL": missing}))
    assert by_flag["model"] == by_env["model"] == flag_over_env["model"] == fixture

    # classify honours both too: the fixture's verdict, not the shipped model's
    flag_line = wheel_install.run("digitspot-edge", "classify", "--model", str(FIXTURE_MODEL), george_seven)
    env_line = wheel_install.run("digitspot-edge", "classify", george_seven,
                                 env={"DIGITSPOT_MODEL": str(FIXTURE_MODEL)})
    assert flag_line.returncode == env_line.returncode == 0, flag_line.stderr + env_line.stderr
    [fixture_verdict] = dev_classify(FIXTURE_MODEL, george_seven, cwd=wheel_install.workdir)
    [shipped_verdict] = dev_classify(SHIPPED_MODEL, george_seven, cwd=wheel_install.workdir)
    assert fixture_verdict["confidence"] != shipped_verdict["confidence"]  # the two models are told apart
    assert json.loads(flag_line.stdout) == json.loads(env_line.stdout) == fixture_verdict

    # and DIGITSPOT_MODEL alone is what classify loads: a missing file is named in one line, exit 65
    bad_env = wheel_install.run("digitspot-edge", "classify", george_seven, env={"DIGITSPOT_MODEL": missing})
    assert bad_env.returncode == EXIT_DATAERR
    [line] = bad_env.stderr.splitlines()
    assert line.startswith("digitspot-edge: error: ") and missing in line


@pytest.mark.parametrize("stage", ["data", "all"])
def test_the_training_side_names_the_extra_it_needs(wheel_install: WheelInstall, stage: str):
    proc = wheel_install.run("digitspot-train", stage)
    assert proc.returncode == EXIT_MISSING_EXTRA, proc.stdout + proc.stderr
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("digitspot-train: error: ") and "`train` extra" in line
    assert "pip install 'digitspot[train]'" in line


def test_the_training_help_needs_no_torch(wheel_install: WheelInstall):
    proc = wheel_install.run("digitspot-train", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: digitspot-train") and "Traceback" not in proc.stderr


def test_the_demo_runs_on_the_base_install(wheel_install: WheelInstall):
    """`make demo`'s script from a torch-free install: a real Mosquitto, the daemon, the subscriber."""
    wav = wheel_install.workdir / "3_theo_1.wav"
    shutil.copy(ROOT / "artifacts" / "samples" / "3_theo_1.wav", wav)
    expect = wheel_install.workdir / "3_theo_1.expect"
    expect.write_text("3\n")
    proc = wheel_install.run("python", "-m", "digitspot.edge.devtools.demo", "--input", wav.name,
                             "--expect", expect.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "demo: OK: every digit heard as spoken: 3 (1 of 1)"
