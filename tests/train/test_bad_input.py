"""Bad input: one clear line on stderr, the documented exit code, nothing half-written."""

from __future__ import annotations

import shutil

import pytest

from digitspot.edge.errors import EXIT_DATAERR, EXIT_NOINPUT, EXIT_USAGE


def assert_one_line_error(result, code: int, needle: str):
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("digitspot-train: error:") and needle in lines[0], lines[0]


@pytest.fixture
def small_fsdd(tmp_path, fsdd_dir):
    d = tmp_path / "fsdd"
    d.mkdir()
    for digit in range(10):
        for speaker, take in (("theo", 0), ("theo", 45), ("nicolas", 0), ("nicolas", 45)):
            name = f"{digit}_{speaker}_{take}.wav"
            shutil.copy(fsdd_dir / name, d / name)
    return d


def test_missing_data_dir(run_train, tmp_path):
    result = run_train(["data", "--run-dir", str(tmp_path / "run")], tmp_path / "nope", cwd=tmp_path)
    assert_one_line_error(result, EXIT_NOINPUT, "does not exist")


def test_no_data_dir_given(run_train, tmp_path):
    result = run_train(["data", "--run-dir", str(tmp_path / "run")], None, cwd=tmp_path)
    assert_one_line_error(result, EXIT_NOINPUT, "FSDD_DIR")


def test_empty_data_dir(run_train, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_train(["data", "--run-dir", str(tmp_path / "run")], tmp_path / "empty", cwd=tmp_path)
    assert_one_line_error(result, EXIT_NOINPUT, "is empty")


def test_wrong_file_name_pattern(run_train, tmp_path, small_fsdd):
    (small_fsdd / "seven.wav").write_bytes((small_fsdd / "7_theo_0.wav").read_bytes())
    result = run_train(["data", "--run-dir", str(tmp_path / "run")], small_fsdd, cwd=tmp_path)
    assert_one_line_error(result, EXIT_DATAERR, "seven.wav")


def test_non_audio_file(run_train, tmp_path, small_fsdd):
    (small_fsdd / "3_theo_7.wav").write_text("this is not audio\n")
    result = run_train(["fit", "--quick", "--no-synth", "--run-dir", str(tmp_path / "run")], small_fsdd,
                       cwd=tmp_path)
    assert_one_line_error(result, EXIT_DATAERR, "3_theo_7.wav")
    assert not (tmp_path / "run" / "teacher.pt").exists()


def test_unknown_speaker(run_train, tmp_path, small_fsdd):
    result = run_train(["data", "--split", "speaker:alice", "--run-dir", str(tmp_path / "run")], small_fsdd,
                       cwd=tmp_path)
    assert_one_line_error(result, EXIT_USAGE, "unknown speaker 'alice'")
    result = run_train(["loso", "--quick", "--speakers", "alice", "--run-dir", str(tmp_path / "loso")], small_fsdd,
                       cwd=tmp_path)
    assert_one_line_error(result, EXIT_USAGE, "unknown speaker 'alice'")


def test_missing_checkpoint(run_train, tmp_path, small_fsdd):
    result = run_train(["distill", "--quick", "--no-synth", "--run-dir", str(tmp_path / "run")], small_fsdd,
                       cwd=tmp_path)
    assert_one_line_error(result, EXIT_NOINPUT, "teacher.pt")


def test_model_sha_mismatch(run_train, tmp_path, quick_run, fsdd_dir):
    out = tmp_path / "out"
    shutil.copytree(quick_run["out"], out)
    data = bytearray((out / "digitspot.onnx").read_bytes())
    data[-1] ^= 0xFF
    (out / "digitspot.onnx").write_bytes(bytes(data))
    result = run_train(["evaluate", "--quick", "--run-dir", str(quick_run["run"]), "--out", str(out),
                        "--loso-results", str(tmp_path / "none.json")], fsdd_dir, cwd=tmp_path)
    assert_one_line_error(result, EXIT_DATAERR, "sha256")
    assert not list(out.glob("*.tmp"))
