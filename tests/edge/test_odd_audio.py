"""Bad and odd audio through `digitspot-edge run --source file`: right digits or one clear error, never a
crash or a hang."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from helpers import run_cli

from digitspot.edge.audio_io import load_audio

DIGITS = ["3_jackson_0.wav", "7_george_1.wav", "9_nicolas_2.wav"]
ARGS = ["--no-mqtt", "--print", "--log-level", "info"]


@pytest.fixture(scope="module")
def clean(fsdd_dir) -> np.ndarray:
    """Three digits with 0.7 s of faint noise around each, at 8 kHz."""
    rng = np.random.default_rng(0)
    parts = [np.zeros(4000, np.float32)]
    for name in DIGITS:
        parts += [load_audio(fsdd_dir / name, 8000), np.zeros(5600, np.float32)]
    audio = np.concatenate(parts)
    return (audio + rng.normal(0, 10 ** (-65 / 20), len(audio))).astype(np.float32)


EXPECTED = [int(n[0]) for n in DIGITS]


def run_file(path: Path, model: Path, timeout: float = 120):
    result = run_cli(["run", "--model", str(model), "--source", "file", "--input", str(path), *ARGS], timeout=timeout)
    import json

    events = [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]
    return result.returncode, [e["digit"] for e in events], result.stderr.decode()


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


def make(kind: str, clean: np.ndarray, tmp: Path, fsdd_dir: Path) -> Path:
    p = tmp / f"{kind}.wav"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "header_only":
        sf.write(str(p), np.zeros(0, np.float32), 8000, subtype="PCM_16")
    elif kind == "truncated_header":
        sf.write(str(p), clean, 8000, subtype="PCM_16")
        p.write_bytes(p.read_bytes()[:20])
    elif kind == "not_audio":
        p.write_text("these are not the samples you are looking for\n" * 50)
    elif kind == "pcm24":
        sf.write(str(p), clean, 8000, subtype="PCM_24")
    elif kind == "float_nan_inf":
        x = clean.copy()
        x[::997] = np.nan
        x[500::1999] = np.inf
        x[900::2503] = -np.inf
        sf.write(str(p), x, 8000, subtype="FLOAT")
    elif kind == "clipped":
        sf.write(str(p), np.clip(clean * 8, -1, 1), 8000, subtype="PCM_16")
    elif kind == "dc_offset":
        sf.write(str(p), np.clip(clean + 0.25, -1, 1), 8000, subtype="PCM_16")
    elif kind == "stereo":
        sf.write(str(p), np.stack([clean, clean * 0.5], axis=1), 8000, subtype="PCM_16")
    elif kind == "rate_44k1":
        sf.write(str(p), soxr.resample(clean, 8000, 44100), 44100, subtype="PCM_16")
    elif kind == "rate_48k_stereo_float":
        y = soxr.resample(clean, 8000, 48000)
        sf.write(str(p), np.stack([y, y], axis=1), 48000, subtype="FLOAT")
    elif kind == "flac":
        p = tmp / "flac.flac"
        sf.write(str(p), clean, 8000, format="FLAC")
    elif kind == "ogg":
        p = tmp / "ogg.ogg"
        sf.write(str(p), soxr.resample(clean, 8000, 16000), 16000, format="OGG", subtype="VORBIS")
    elif kind == "u8":
        sf.write(str(p), clean, 8000, subtype="PCM_U8")
    elif kind == "ten_minutes":
        rng = np.random.default_rng(1)
        noise = rng.normal(0, 10 ** (-60 / 20), 600 * 8000).astype(np.float32)
        noise[: len(clean)] += clean
        sf.write(str(p), noise, 8000, subtype="PCM_16")
    elif kind == "silence":
        sf.write(str(p), np.zeros(5 * 8000, np.float32), 8000, subtype="PCM_16")
    elif kind == "white_noise":
        sf.write(str(p), np.random.default_rng(2).normal(0, 0.1, 5 * 8000), 8000, subtype="PCM_16")
    elif kind == "five_ms":
        sf.write(str(p), clean[4100:4140], 8000, subtype="PCM_16")
    elif kind == "truncated_data":
        sf.write(str(p), clean, 8000, subtype="PCM_16")
        data = p.read_bytes()
        p.write_bytes(data[: len(data) * 2 // 3 + 1])  # header promises more than is there, odd length
    return p


CORRECT = ["pcm24", "float_nan_inf", "clipped", "dc_offset", "stereo", "rate_44k1", "rate_48k_stereo_float",
           "flac", "ogg", "u8", "ten_minutes"]
NOTHING = ["silence", "white_noise", "five_ms"]
ERRORS = ["empty", "header_only", "truncated_header", "not_audio"]


@pytest.mark.parametrize("kind", CORRECT)
def test_odd_but_valid_audio_gives_the_right_digits(kind, clean, tmp_path, fsdd_dir, fixture_model):
    code, digits, stderr = run_file(make(kind, clean, tmp_path, fsdd_dir), fixture_model)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert digits == EXPECTED, f"{kind}: {digits}"


@pytest.mark.parametrize("kind", NOTHING)
def test_audio_without_speech_gives_no_digits(kind, clean, tmp_path, fsdd_dir, fixture_model):
    code, digits, stderr = run_file(make(kind, clean, tmp_path, fsdd_dir), fixture_model)
    assert code == 0, stderr
    assert digits == [] and "Traceback" not in stderr


@pytest.mark.parametrize("kind", ERRORS)
def test_unreadable_audio_is_one_clear_error_exit_65(kind, clean, tmp_path, fsdd_dir, fixture_model):
    code, _, stderr = run_file(make(kind, clean, tmp_path, fsdd_dir), fixture_model)
    assert code == 65, stderr
    line = one_error_line(stderr)
    assert "digitspot-edge: error:" in line


def test_truncated_data_is_read_up_to_where_it_stops(clean, tmp_path, fsdd_dir, fixture_model):
    code, digits, stderr = run_file(make("truncated_data", clean, tmp_path, fsdd_dir), fixture_model)
    assert "Traceback" not in stderr
    assert code == 0 and digits == EXPECTED[:2], (code, digits, stderr)


def test_missing_input_exit_66(tmp_path, fixture_model):
    code, _, stderr = run_file(tmp_path / "nope.wav", fixture_model)
    assert code == 66 and "nope.wav" in one_error_line(stderr)
    code, _, stderr = run_file(tmp_path, fixture_model)
    assert code == 66


def test_stdin_odd_byte_count_and_garbage(fixture_model):
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, 16001, dtype=np.uint8).tobytes()  # 1 s of loud garbage, odd length
    result = run_cli(["run", "--model", str(fixture_model), "--source", "stdin", "--input-rate", "8000", *ARGS],
                     input=raw, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr.decode()


def test_unusable_model_exit_65(tmp_path, fixture_model, clean, fsdd_dir):
    bad = tmp_path / "model.onnx"
    shutil.copy(fixture_model, bad)
    shutil.copy(str(fixture_model) + ".json", str(bad) + ".json")
    with open(bad, "ab") as fh:
        fh.write(b"tampered")
    code, _, stderr = run_file(make("pcm24", clean, tmp_path, fsdd_dir), bad)
    assert code == 65 and "sha256" in one_error_line(stderr)
