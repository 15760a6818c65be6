"""What one benchmark run measures and with which settings, decided from the command line before anything runs."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitspot.benchmarks.report import Thresholds

SECTIONS = ("inference", "accuracy", "peer", "e2e", "throughput")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Counts:
    """How much of everything: full size by default, small counts in short mode, any of them overridable."""

    runs: int  # timed inference calls per runtime
    warmup: int  # untimed calls before them
    e2e_words: int | None  # words in the real-time stream (None: every test take)
    hour_seconds: float  # audio fed as fast as possible for throughput and false triggers
    idle_seconds: float  # real-time speech-free listening for CPU %
    per_digit: int | None  # test files per digit (None: every official test take)

    @classmethod
    def for_mode(cls, short: bool, runs: int | None = None, warmup: int | None = None,
                 e2e_words: int | None = None, hour_seconds: float | None = None,
                 idle_seconds: float | None = None) -> Counts:
        return cls(
            runs=runs or (200 if short else 2000),
            warmup=warmup if warmup is not None else (20 if short else 200),
            e2e_words=e2e_words or (20 if short else None),
            hour_seconds=hour_seconds or (60.0 if short else 3600.0),
            idle_seconds=idle_seconds or (8.0 if short else 120.0),
            per_digit=3 if short else None,
        )


@dataclass(frozen=True)
class BenchPlan:
    """One run of the benchmarks: the models, the audio, the sections and the gates."""

    model: Path  # INT8 ONNX with its card
    fp32_model: Path
    torchscript: Path
    data_dir: Path
    sections: tuple[str, ...]  # in the order they run
    only: bool  # sections were chosen with --only: targets of the others are not misses
    short: bool
    counts: Counts
    snr_db: float  # background noise of the streams, dB below speech
    noise: str  # its colour: pink or white
    seed: int
    pitch_method: str  # wsola (duration kept) or resample (tape-style)
    with_oh: bool  # PocketSphinx's grammar also accepts "oh" for 0
    broker: str | None  # HOST:PORT, or None for a private Mosquitto
    daemon_command: str | None  # None: this Python's `-m digitspot.edge run`
    thresholds: Thresholds
    out_dir: Path
    stem: str | None  # report file name stem; None: report_stem() once the model is known

    def wants(self, *names: str) -> bool:
        """Whether any of these sections runs."""
        return any(name in self.sections for name in names)

    def broker_address(self) -> tuple[str, int] | None:
        """``--broker HOST:PORT`` as (host, port); None when the run starts its own Mosquitto."""
        if not self.broker:
            return None
        host, _, port = self.broker.rpartition(":")
        return host or "127.0.0.1", int(port)

    def settings(self) -> dict[str, Any]:
        """The report's record of how the audio and the daemon were set up."""
        return {"snr_db": self.snr_db, "noise": self.noise, "seed": self.seed, "data_dir": str(self.data_dir),
                "pitch_method": self.pitch_method,
                "broker": self.broker or "private Mosquitto on a free loopback port",
                "daemon_command": self.daemon_command or "python -m digitspot.edge run"}


def default_data_dir() -> Path:
    """``$FSDD_DIR``, else the first FSDD checkout found beside the repository."""
    env = os.environ.get("FSDD_DIR")
    if env:
        return Path(env)
    for candidate in (ROOT / "data" / "fsdd" / "recordings", ROOT.parent / "shared" / "data" / "fsdd" / "recordings"):
        if candidate.is_dir():
            return candidate
    return ROOT / "data" / "fsdd" / "recordings"


def report_stem(host: str, when: dt.datetime, model_sha256: str) -> str:
    """``<host>-<UTC time to the second>-<first 8 hex digits of the model's sha256>``.

    Two runs never share a name unless they start in the same second, and the name says which model
    was measured, so a later run on the same day or with another model keeps the earlier report."""
    stamp = when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H%M%S")
    return f"{host}-{stamp}-{model_sha256[:8]}"
