"""A seeded fuzz run: corrupted WAV/FLAC/OGG files through ``classify`` and random byte streams through
``run --source stdin``. Whatever the bytes, the answer is a documented exit code and one clear line per
bad file: no traceback, no hang, no crash, no invalid JSON.

The corruptions start from real FSDD takes encoded in the formats and layouts users have (PCM 8/16/24,
float, stereo, 44.1 and 48 kHz, FLAC, Ogg Vorbis) and flip bits, overwrite, truncate, splice and extend
them, aim at header fields (sizes, rates, channel counts set to 0, 1 or all ones), or replace the file
with random bytes behind a real magic number. Files go through ``classify`` a few hundred per process,
so the run costs seconds of start-up, not minutes; every process has a deadline. The seed is fixed:
a failure names the file and the mutations that made it, and rerunning reproduces it.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from helpers import FIXTURE_MODEL, cli_command, run_cli

from digitspot.edge.audio_io import load_audio
from digitspot.edge.errors import EXIT_DATAERR, EXIT_NOINPUT, EXIT_OK

pytestmark = pytest.mark.slow

SEED = 20261202
N_FILES = 2400
PER_PROCESS = 300
N_STREAMS = 8
DEADLINE_S = 120  # per process: a hang fails the test instead of stalling the suite
TAKES = ["0_george_0.wav", "3_jackson_0.wav", "5_lucas_1.wav", "7_nicolas_2.wav", "8_theo_3.wav", "9_yweweler_4.wav"]
# (extension, soundfile format, subtype, rate, channels)
LAYOUTS = [
    ("wav", "WAV", "PCM_16", 8000, 1),
    ("wav", "WAV", "FLOAT", 16000, 2),
    ("wav", "WAV", "PCM_U8", 8000, 1),
    ("wav", "WAV", "PCM_24", 44100, 1),
    ("flac", "FLAC", "PCM_16", 8000, 1),
    ("flac", "FLAC", "PCM_24", 48000, 2),
    ("ogg", "OGG", "VORBIS", 16000, 1),
]
MAGIC = {"wav": b"RIFF\x24\x00\x00\x00WAVEfmt ", "flac": b"fLaC", "ogg": b"OggS\x00\x02"}


def encode(samples: np.ndarray, fmt: str, subtype: str, rate: int, channels: int) -> bytes:
    audio = soxr.resample(samples, 8000, rate) if rate != 8000 else samples
    if channels == 2:
        audio = np.stack([audio, audio * 0.5], axis=1)
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


# --- mutations: each takes the bytes and the generator, returns new bytes and a name for the report ----

def flip_bits(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    out = bytearray(data)
    n = int(rng.integers(1, 64))
    for pos in rng.integers(0, len(out), n):
        out[pos] ^= 1 << int(rng.integers(8))
    return bytes(out), f"flip{n}"


def overwrite(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    start = int(rng.integers(len(data)))
    length = int(rng.integers(1, 512))
    out = bytearray(data)
    out[start : start + length] = rng.integers(0, 256, min(length, len(data) - start), dtype=np.uint8).tobytes()
    return bytes(out), f"overwrite@{start}+{length}"


def truncate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    cut = int(rng.integers(0, len(data)))
    return data[:cut], f"truncate@{cut}"


def header(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """A 16- or 32-bit field of the header set to a value that breaks arithmetic: 0, 1, the top, all ones."""
    out = bytearray(data)
    pos = int(rng.integers(0, min(60, len(out) - 4)))
    width = int(rng.choice([2, 4]))
    value = int(rng.choice([0, 1, 2 ** (8 * width - 1) - 1, 2 ** (8 * width) - 1]))
    out[pos : pos + width] = value.to_bytes(width, str(rng.choice(["little", "big"])))
    return bytes(out), f"header@{pos}={value}"


def zero_region(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    start = int(rng.integers(len(data)))
    length = int(rng.integers(1, 4096))
    out = bytearray(data)
    out[start : start + length] = bytes(min(length, len(data) - start))
    return bytes(out), f"zeros@{start}+{length}"


def duplicate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    start = int(rng.integers(len(data)))
    piece = data[start : start + int(rng.integers(1, 2048))]
    at = int(rng.integers(len(data)))
    return data[:at] + piece * int(rng.integers(1, 4)) + data[at:], f"dup{len(piece)}@{at}"


def append(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    extra = rng.integers(0, 256, int(rng.integers(1, 8192)), dtype=np.uint8).tobytes()
    return data + extra, f"append{len(extra)}"


MUTATIONS: list[Callable[[bytes, np.random.Generator], tuple[bytes, str]]] = [
    flip_bits, overwrite, truncate, header, header, zero_region, duplicate, append]


def corrupted_files(fsdd_dir: Path, out_dir: Path, rng: np.random.Generator) -> dict[Path, str]:
    """N_FILES files, each with the mutations that made it (for the failure report)."""
    takes = [load_audio(fsdd_dir / name, 8000) for name in TAKES]
    bases = [(layout[0], encode(take, *layout[1:]), f"{name}:{layout[1]}/{layout[2]}/{layout[3]}/{layout[4]}")
             for take, name in zip(takes, TAKES) for layout in LAYOUTS]
    made: dict[Path, str] = {}
    for i in range(N_FILES):
        if rng.random() < 0.1:  # random bytes, half of them behind a real magic number
            ext = str(rng.choice(list(MAGIC)))
            data = rng.integers(0, 256, int(rng.integers(0, 8192)), dtype=np.uint8).tobytes()
            if rng.random() < 0.5:
                data = MAGIC[ext] + data
            how = f"random{len(data)}"
        else:
            ext, data, how = bases[int(rng.integers(len(bases)))]
            steps = []
            for _ in range(int(rng.integers(1, 4))):
                if not data:
                    break
                if rng.random() < 0.15:  # splice: this file's head on another's tail
                    other = bases[int(rng.integers(len(bases)))][1]
                    cut = int(rng.integers(len(data)))
                    data, step = data[:cut] + other[int(rng.integers(len(other))):], f"splice@{cut}"
                else:
                    data, step = MUTATIONS[int(rng.integers(len(MUTATIONS)))](data, rng)
                steps.append(step)
            how = f"{how} {' '.join(steps)}"
        path = out_dir / f"f{i:04d}.{ext}"
        path.write_bytes(data)
        made[path] = how
    return made


def strict_json(line: str) -> dict:
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=refuse)


def test_corrupted_files_through_classify(fsdd_dir, tmp_path):
    rng = np.random.default_rng(SEED)
    made = corrupted_files(fsdd_dir, tmp_path, rng)
    paths = list(made)
    outcomes = {"digit": 0, "error": 0}
    for start in range(0, len(paths), PER_PROCESS):
        batch = paths[start : start + PER_PROCESS]
        try:
            result = subprocess.run(cli_command() + ["classify", "--model", str(FIXTURE_MODEL), *map(str, batch)],
                                    capture_output=True, timeout=DEADLINE_S, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"classify hung on files {batch[0].name}..{batch[-1].name}")
        stderr = result.stderr.decode(errors="replace")
        assert "Traceback" not in stderr, stderr[-3000:]
        assert result.returncode >= 0, f"classify died of signal {-result.returncode} in {batch[0].name}.."
        lines = result.stdout.decode().splitlines()
        assert len(lines) == len(batch), f"{len(lines)} answers for {len(batch)} files; stderr: {stderr[-2000:]}"
        errors = 0
        for path, line in zip(batch, lines):
            answer = strict_json(line)
            assert answer["path"] == str(path), (answer, made[path])
            if "error" in answer:
                errors += 1
                assert set(answer) == {"path", "error"} and "\n" not in answer["error"], (answer, made[path])
                assert answer["error"].startswith(f"{path}: "), (answer, made[path])
            else:
                assert set(answer) == {"path", "digit", "confidence"}, (answer, made[path])
                assert answer["digit"] in range(10) and 0.0 <= answer["confidence"] <= 1.0, (answer, made[path])
        error_lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(error_lines) == errors and all(line.startswith("digitspot-edge: error: ") for line in error_lines)
        assert result.returncode == (EXIT_OK if errors == 0 else EXIT_DATAERR) or result.returncode == EXIT_NOINPUT
        outcomes["error"] += errors
        outcomes["digit"] += len(batch) - errors
    # Both kinds of answer happen: the corruptions neither all break the files nor all miss them.
    assert outcomes["error"] > N_FILES // 10 and outcomes["digit"] > N_FILES // 10, outcomes


def byte_streams(fsdd_dir: Path, rng: np.random.Generator) -> list[tuple[str, int, bytes]]:
    """(what, input rate, bytes) for ``run --source stdin``: noise, garbage, and speech gone wrong."""
    speech = np.concatenate([np.zeros(4000, np.float32)] + [
        np.concatenate([load_audio(fsdd_dir / name, 8000), np.zeros(6000, np.float32)]) for name in TAKES])
    pcm = (speech * 32767).astype("<i2").tobytes()
    flipped = bytearray(pcm)
    for pos in rng.integers(0, len(flipped), 2000):
        flipped[pos] ^= 1 << int(rng.integers(8))
    shifted = bytearray(pcm)
    for pos in sorted(rng.integers(0, len(shifted), 40), reverse=True):  # odd insertions: samples misaligned
        shifted[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 4)), dtype=np.uint8).tobytes()
    walk = np.cumsum(rng.normal(0, 800, 48000 * 3)).clip(-32768, 32767).astype("<i2").tobytes()
    extremes = np.tile(np.array([32767, -32768, 0, -1], "<i2"), 16000 * 2).tobytes()
    return [
        ("uniform random bytes", 16000, rng.integers(0, 256, 16000 * 2 * 4 + 1, dtype=np.uint8).tobytes()),
        ("speech with flipped bits", 8000, bytes(flipped)),
        ("speech with inserted bytes", 8000, bytes(shifted)),
        ("brown noise", 48000, walk),
        ("full-scale extremes", 16000, extremes),
        ("speech read at the wrong rate", 44100, pcm),
        ("one byte", 8000, b"\x01"),
        ("nothing", 16000, b""),
    ]


def test_random_byte_streams_through_run_stdin(fsdd_dir):
    rng = np.random.default_rng(SEED + 1)
    streams = byte_streams(fsdd_dir, rng)
    assert len(streams) == N_STREAMS
    for what, rate, data in streams:
        try:
            result = run_cli(["run", "--model", str(FIXTURE_MODEL), "--source", "stdin", "--input-rate", str(rate),
                              "--no-mqtt", "--print", "--log-level", "warning"], input=data, timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run --source stdin hung on {what}")
        stderr = result.stderr.decode(errors="replace")
        assert result.returncode == EXIT_OK, f"{what}: exit {result.returncode}: {stderr[-2000:]}"
        assert "Traceback" not in stderr and " ERROR " not in stderr, f"{what}: {stderr[-2000:]}"
        for line in result.stdout.decode().splitlines():
            event = strict_json(line)
            assert event["digit"] in range(10) and 0.0 <= event["confidence"] <= 1.0, (what, event)
