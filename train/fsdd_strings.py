"""Digit strings made from FSDD takes: training strings with random gaps and overlaps, and the fixed
evaluation strings (0 / 50 / 100 / 200 ms gaps) the strings benchmark reads.

People say door codes and phone numbers at the rhythm of speech, 0-200 ms between digits, sometimes
running one digit into the next. FSDD has single digits only, so strings are made by joining one
speaker's takes:

- Each take is cut to its speech first (``digitspot.edge.devtools.speech_trim``, the rule the benchmarks'
  streams use: -35 dB below the loudest 10 ms frame, runs of >= 3 frames, so a click in the padding does
  not count) and faded in and out over 5 ms so a cut never clicks.
- The gap is measured between the end of one digit's speech and the start of the next: 0 means the
  next digit starts on the sample after the last one ends; a negative gap overlaps the two (mixed),
  as when a talker runs "six" into "seven". Training gaps are drawn from -50..+300 ms with an extra
  share of exactly 0.
- Every take in a string is set to one active speech level (ITU-T P.56, the string's median take),
  as one talker at one distance: FSDD's recording levels vary from take to take.
- A string's labels are its digits in order; ``starts`` / ``ends`` are the sample indices of each
  digit's speech in the joined signal, so latency can be measured per digit.
- Speakers and takes stay on their side of the split: the builders only ever see the takes they are
  given, and callers give them ``make_split(...).train`` or ``.test`` from ``digitspot.train.data``
  (official: takes 0-4 of every speaker are test; ``speaker:<name>``: that speaker is the whole test
  set). One string is always one speaker.

The silence around and between digits is digital zero; noise beds belong to whoever uses the strings
(training mixes its own, the benchmark its own). Numpy and scipy only: no torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import numpy as np

from digitspot.edge.audio_io import load_audio
from digitspot.edge.devtools.speech_trim import speech_bounds
from digitspot.train.rooms import RoomResponse, active_level_db

SAMPLE_RATE = 8000
FADE_MS = 5.0
EVAL_GAPS_MS: tuple[int, ...] = (0, 50, 100, 200)
EVAL_SEED = 20


class TakeLike(Protocol):
    """An FSDD take as ``digitspot.train.data.Utterance`` or ``digitspot.edge.devtools.fsdd.FsddTake`` has it."""

    digit: int
    speaker: str
    take: int
    path: str | os.PathLike[str]


@dataclass(frozen=True)
class SpokenDigit:
    """One FSDD take cut to its speech (float32 at 8 kHz, faded in and out)."""

    digit: int
    speaker: str
    take: int
    path: str
    speech: np.ndarray
    level_db: float  # active speech level (ITU-T P.56), dB re full scale; -inf for a silent take


@dataclass(frozen=True)
class DigitString:
    """A joined string: the audio, its digits in order and where each digit's speech lies.

    ``starts[i]`` is the first sample of digit ``i``'s speech and ``ends[i]`` one past its last;
    ``gaps_ms[i]`` is the gap between digit ``i`` and digit ``i + 1`` (negative: overlap).
    """

    samples: np.ndarray
    digits: tuple[int, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    sources: tuple[str, ...]
    speaker: str
    gaps_ms: tuple[float, ...]
    rate: int = SAMPLE_RATE

    @property
    def text(self) -> str:
        return "".join(str(d) for d in self.digits)


# -- takes ---------------------------------------------------------------------------------------


def _fade(speech: np.ndarray, rate: int) -> np.ndarray:
    n = min(int(rate * FADE_MS / 1000), speech.size // 2)
    out = speech.astype(np.float32, copy=True)
    if n > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)
        out[:n] *= ramp
        out[-n:] *= ramp[::-1]
    return out


def cut_take(take: TakeLike, samples: np.ndarray, rate: int = SAMPLE_RATE) -> SpokenDigit:
    start, stop = speech_bounds(samples, rate)
    speech = _fade(np.asarray(samples[start:stop], dtype=np.float32), rate)
    return SpokenDigit(int(take.digit), str(take.speaker), int(take.take), str(take.path), speech,
                       active_level_db(speech, rate))


def load_takes(takes: Iterable[TakeLike], progress: bool = False, rate: int = SAMPLE_RATE) -> list[SpokenDigit]:
    """Read and cut every take (sorted by path, so the result does not depend on the caller's order)."""
    ordered = sorted(takes, key=lambda t: str(t.path))
    if progress:
        from tqdm import tqdm

        ordered = tqdm(ordered, desc="cutting FSDD takes", leave=False)
    return [cut_take(t, load_audio(t.path, rate), rate) for t in ordered]


# -- joining -------------------------------------------------------------------------------------


def join(parts: Sequence[SpokenDigit], gaps_ms: Sequence[float], *, lead_ms: float, tail_ms: float,
         level_jitter_db: Sequence[float] | None = None, rate: int = SAMPLE_RATE) -> DigitString:
    """Join ``parts`` with ``gaps_ms[i]`` between part ``i`` and ``i + 1`` (see the module docstring).

    An overlap is capped at half the shorter of the two digits, so the digits stay in order.
    ``level_jitter_db`` (one value per part) moves each part's level from the common one.
    """
    if not parts:
        raise ValueError("a string needs at least one digit")
    if len(gaps_ms) != len(parts) - 1:
        raise ValueError(f"{len(parts)} digits need {len(parts) - 1} gaps, got {len(gaps_ms)}")
    finite = [p.level_db for p in parts if math.isfinite(p.level_db)]
    target = float(np.median(finite)) if finite else 0.0
    jitter = list(level_jitter_db) if level_jitter_db is not None else [0.0] * len(parts)
    pieces = []
    for p, extra in zip(parts, jitter):
        gain_db = target + extra - p.level_db if math.isfinite(p.level_db) else 0.0
        pieces.append(p.speech.astype(np.float64) * 10 ** (gain_db / 20))

    starts, ends, gaps_used = [], [], []
    position = round(lead_ms * rate / 1000)
    for i, piece in enumerate(pieces):
        if i > 0:
            gap = round(gaps_ms[i - 1] * rate / 1000)
            gap = max(gap, -(min(pieces[i - 1].size, piece.size) // 2))
            position = ends[-1] + gap
            gaps_used.append(gap * 1000 / rate)
        starts.append(position)
        ends.append(position + piece.size)
    total = max(ends) + round(tail_ms * rate / 1000)
    out = np.zeros(total, dtype=np.float64)
    for piece, s in zip(pieces, starts):
        out[s: s + piece.size] += piece
    return DigitString(np.clip(out, -1.0, 1.0).astype(np.float32), tuple(p.digit for p in parts), tuple(starts),
                       tuple(ends), tuple(p.path for p in parts), parts[0].speaker, tuple(gaps_used), rate)


def in_room(string: DigitString, room: RoomResponse, agc: bool = True) -> DigitString:
    """``string`` as a microphone in ``room`` hears it (``digitspot.train.rooms``), AGC included.

    ``starts`` / ``ends`` move by the direct-path delay: they still mark each digit's dry speech,
    where its direct sound arrives, so latency is measured from the end of the dry word; the
    reverberant tail after ``ends[i]`` is the room's, not the talker's.
    """
    wet = room.apply(string.samples, agc=agc)
    return replace(string, samples=wet.samples, starts=tuple(s + wet.offset for s in string.starts),
                   ends=tuple(e + wet.offset for e in string.ends))


def _by_speaker(takes: Iterable[SpokenDigit]) -> dict[str, list[SpokenDigit]]:
    groups: dict[str, list[SpokenDigit]] = {}
    for t in sorted(takes, key=lambda t: t.path):
        groups.setdefault(t.speaker, []).append(t)
    return groups


# -- training strings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StringConfig:
    """How random training strings are drawn (durations in ms)."""

    min_digits: int = 1
    max_digits: int = 7
    gap_ms: tuple[float, float] = (-50.0, 300.0)  # uniform, between one digit's speech and the next
    p_zero_gap: float = 0.15  # exactly 0 on top of the uniform range: the fluent case, not a rare draw
    lead_ms: tuple[float, float] = (50.0, 400.0)
    tail_ms: tuple[float, float] = (50.0, 400.0)
    level_jitter_db: float = 2.0  # per digit, uniform +-: nobody says every digit equally loud

    def to_dict(self) -> dict:
        return asdict(self)


class StringBuilder:
    """Random strings from the takes it is given; one speaker per string, speakers drawn uniformly."""

    def __init__(self, takes: Iterable[SpokenDigit], config: StringConfig = StringConfig()):
        self.config = config
        self.by_speaker = _by_speaker(takes)
        if not self.by_speaker:
            raise ValueError("no takes to build strings from: pass the training side of a split")
        self.speakers = sorted(self.by_speaker)

    def draw(self, rng: np.random.Generator) -> DigitString:
        cfg = self.config
        speaker = self.speakers[int(rng.integers(len(self.speakers)))]
        pool = self.by_speaker[speaker]
        n = int(rng.integers(cfg.min_digits, cfg.max_digits + 1))
        parts = [pool[int(i)] for i in rng.integers(len(pool), size=n)]
        gaps = [0.0 if rng.random() < cfg.p_zero_gap else float(rng.uniform(*cfg.gap_ms)) for _ in range(n - 1)]
        jitter = rng.uniform(-cfg.level_jitter_db, cfg.level_jitter_db, size=n)
        return join(parts, gaps, lead_ms=float(rng.uniform(*cfg.lead_ms)), tail_ms=float(rng.uniform(*cfg.tail_ms)),
                    level_jitter_db=jitter)

    def draw_many(self, count: int, seed: int) -> list[DigitString]:
        rng = np.random.default_rng(seed)
        return [self.draw(rng) for _ in range(count)]


# -- evaluation strings --------------------------------------------------------------------------


def evaluation_strings(takes: Iterable[SpokenDigit], gap_ms: float, *, seed: int = EVAL_SEED,
                       min_digits: int = 3, max_digits: int = 6, lead_ms: float = 300.0,
                       tail_ms: float = 700.0) -> list[DigitString]:
    """Held-out takes joined with exactly ``gap_ms`` between digits, 3-6 digits a string.

    Each speaker's takes are shuffled (by ``seed`` and the speaker's name, not by the gap) and dealt
    into strings, every take used once; leftovers too few for a string are not used. The strings
    therefore hold the same takes in the same order at every gap, and the gap is the only thing
    that changes between conditions.
    """
    strings = []
    for speaker, pool in sorted(_by_speaker(takes).items()):
        rng = np.random.default_rng([seed, *speaker.encode()])
        order = rng.permutation(len(pool))
        i = 0
        while len(order) - i >= min_digits:
            n = min(int(rng.integers(min_digits, max_digits + 1)), len(order) - i)
            parts = [pool[int(j)] for j in order[i: i + n]]
            strings.append(join(parts, [gap_ms] * (n - 1), lead_ms=lead_ms, tail_ms=tail_ms))
            i += n
    return strings


def evaluation_sets(takes: Iterable[SpokenDigit], gaps_ms: Sequence[float] = EVAL_GAPS_MS,
                    seed: int = EVAL_SEED) -> dict[float, list[DigitString]]:
    """``evaluation_strings`` for every gap of the strings benchmark."""
    takes = list(takes)
    return {gap: evaluation_strings(takes, gap, seed=seed) for gap in gaps_ms}
