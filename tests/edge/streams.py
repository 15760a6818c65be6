"""Labelled test streams: FSDD official-test takes separated by random silences, over background noise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from digitspot.edge.audio_io import load_audio
from digitspot.edge.devtools.fsdd import digit_of

RATE = 8000


@dataclass
class Placed:
    digit: int
    start: int  # sample offset in the stream
    end: int  # exclusive: the utterance's last sample is end - 1
    path: str


@dataclass
class Stream:
    audio: np.ndarray  # float32 mono at RATE
    utterances: list[Placed]
    noise_only: list[tuple[int, int]]  # stretches with nothing but background noise

    def write(self, path: Path) -> Path:
        sf.write(str(path), self.audio, RATE, subtype="PCM_16")
        return path

    def s16le(self) -> bytes:
        return (np.clip(self.audio, -1, 1) * 32767).astype("<i2").tobytes()


def pick_takes(files: list[Path], count: int, seed: int = 0) -> list[Path]:
    """``count`` test takes spread over digits and speakers, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    by_digit: dict[int, list[Path]] = {d: [] for d in range(10)}
    for f in files:
        by_digit[digit_of(f)].append(f)
    chosen: list[Path] = []
    for i in range(count):
        pool = by_digit[i % 10]
        chosen.append(pool[int(rng.integers(len(pool)))])
    rng.shuffle(chosen)
    return chosen


def build_stream(files: list[Path], seed: int = 0, gap_s: tuple[float, float] = (0.5, 1.5),
                 noise_dbfs: float = -55.0, noise_only_s: float = 0.0, lead_s: float = 1.0) -> Stream:
    """Speech at its recorded level, gaps of random length, white background noise at ``noise_dbfs`` RMS.

    ``noise_only_s`` > 0 inserts one extra stretch of noise alone (louder, at noise_dbfs + 20 dB)
    in the middle, to check that noise does not trigger digits.
    """
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = [np.zeros(int(lead_s * RATE), np.float32)]
    pos = len(pieces[0])
    placed: list[Placed] = []
    noise_only: list[tuple[int, int]] = []
    loud_noise: list[tuple[int, int]] = []
    for i, f in enumerate(files):
        clip = load_audio(f, RATE)
        placed.append(Placed(digit_of(f), pos, pos + len(clip), f.name))
        pieces.append(clip)
        pos += len(clip)
        gap = int(rng.uniform(*gap_s) * RATE)
        if noise_only_s and i == len(files) // 2:
            quiet = int(0.5 * RATE)
            n = int(noise_only_s * RATE)
            noise_only.append((pos + quiet, pos + quiet + n))
            loud_noise.append((pos + quiet, pos + quiet + n))
            gap = max(gap, n + 2 * quiet)
        pieces.append(np.zeros(gap, np.float32))
        pos += gap
    audio = np.concatenate(pieces).astype(np.float32)
    level = 10 ** (noise_dbfs / 20)
    audio += rng.normal(0, level, len(audio)).astype(np.float32)
    for a, b in loud_noise:
        # ramped so it starts like a fan switching on, not a click
        ramp = np.minimum(1.0, np.minimum(np.arange(b - a), np.arange(b - a)[::-1]) / (0.2 * RATE))
        audio[a:b] += (rng.normal(0, level * 10, b - a) * ramp).astype(np.float32)
    return Stream(np.clip(audio, -1, 1), placed, noise_only)


def match(stream: Stream, events: list[dict], tolerance_s: float = 0.6) -> dict:
    """Pair events (with ``audio_end_ms`` stream offsets) with utterances; count outcomes."""
    used = set()
    outcome = {"correct": 0, "wrong": 0, "missed": 0, "extra": 0, "in_noise": 0, "pairs": []}
    for u in stream.utterances:
        best = None
        for j, e in enumerate(events):
            if j in used:
                continue
            end = e["audio_end_ms"] / 1000 * RATE
            if u.start - 0.2 * RATE <= end <= u.end + tolerance_s * RATE:
                best = j
                break
        if best is None:
            outcome["missed"] += 1
            continue
        used.add(best)
        e = events[best]
        outcome["pairs"].append((u, e))
        outcome["correct" if e["digit"] == u.digit else "wrong"] += 1
    for j, e in enumerate(events):
        if j not in used:
            outcome["extra"] += 1
            end = e["audio_end_ms"] / 1000 * RATE
            if any(a <= end <= b + 0.3 * RATE for a, b in stream.noise_only):
                outcome["in_noise"] += 1
    return outcome
