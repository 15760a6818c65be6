"""Training audio for the streaming CTC model: scenes of digits, strings, fillers and noise, cropped with
targets that are true for the crop.

A scene is a timeline of labelled segments (an FSDD take is one segment labelled with its digit; a
string said as one phrase is one segment labelled with all its digits; a tone or a non-digit sentence is
one segment labelled ``[filler]``) over silence, put through one voice shift, one room and one noise bed.
A training example is a crop of a scene. Crops cut segments; a cut segment must contribute no target, and
neither may the frames where its label could appear, so each example carries the frame range the CTC
loss reads (``frame_lo``..``frame_hi``) and the labels of the segments wholly inside it. Near the crop's
right edge a frame's right context runs into padding, which the daemon never shows a decided frame: a
segment ending within ``right_guard`` samples of the edge counts as cut.

Everything here is numpy, so scene making keeps up with the 2-core training box.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from digitspot.train.augment import change_speed, colored_noise, reverberate
from digitspot.train.frame_model import FILLER, digit_label

RATE = 8000


@dataclass(frozen=True)
class Segment:
    """A clip and its label sequence. ``source`` names the speaker or voice (strings use one source)."""

    audio: np.ndarray
    labels: tuple[int, ...]
    source: str
    kind: str  # "digit", "string", "filler"


@dataclass(frozen=True)
class Placed:
    """A segment's dry extent in a scene or crop (samples) and its labels."""

    start: int
    end: int
    labels: tuple[int, ...]


@dataclass
class Scene:
    """Speech (and sounds) as the microphone hears them before any noise, and where the segments lie."""

    speech: np.ndarray
    segments: list[Placed]
    kind: str
    level: float  # active RMS of the segments (linear): the reference for the noise's SNR


@dataclass
class SceneConfig:
    """Mix of scene kinds and the augmentation drawn for each scene."""

    p_single: float = 0.25
    p_string: float = 0.38
    p_filler: float = 0.12
    p_mixed: float = 0.15
    p_empty: float = 0.05
    p_bank_phrase: float = 0.15  # a bank string or digits-in-a-sentence said as one phrase (with a bank)
    p_fsdd_source: float = 0.5  # digits and strings: an FSDD speaker this often, else a bank voice (with a bank)
    string_len: tuple[int, int] = (2, 6)
    # between one segment's end and the next one's start (FSDD takes cut to their speech, as
    # ``fsdd_strings.StringConfig`` draws them); negative: the next starts before this one ends
    gap_s: tuple[float, float] = (-0.05, 0.30)
    p_zero_gap: float = 0.15  # exactly 0 on top of the range: the fluent case
    p_speed: float = 0.7
    cents: tuple[float, float] = (-300.0, 800.0)  # +: shorter vocal tract, higher voice (women, children)
    p_voice_shift: float = 0.5  # of the shifted scenes: formants and pitch apart (voice_shift), else resampling
    p_room: float = 0.35
    rt60_s: tuple[float, float] = (0.1, 0.8)  # fallback synthetic reverb when no RIR bank is cached
    p_noise: float = 0.6
    snr_db: tuple[float, float] = (0.0, 30.0)
    p_babble: float = 0.3  # of the noisy scenes, when a bank of talk is loaded
    level_dbfs: tuple[float, float] = (-40.0, -12.0)  # active RMS of the speech
    noise_floor_dbfs: tuple[float, float] = (-80.0, -55.0)
    p_digital_silence: float = 0.05  # no noise floor at all (a stream's zero-filled start)
    lengths_s: tuple[float, ...] = (1.0, 1.5, 2.5)
    length_weights: tuple[float, ...] = (0.45, 0.35, 0.2)
    p_whole: float = 0.85  # a scene shorter than the crop lies wholly inside it; else it may be cut
    # A stream's first windows: digital zeros (the daemon's empty buffer) before the first audio. Without
    # them in training a model reads the step from zeros to a quiet floor as a loud onset and fires on it.
    p_stream_start: float = 0.08
    max_phrase_s: float = 5.0  # longest crop a batch grows to so that a bank phrase keeps its targets
    left_margin_s: float = 0.1  # frames this long after a left-cut segment's end carry no target

    def to_dict(self) -> dict:
        return asdict(self)


# --- sounds that are not digits ------------------------------------------------------------------

def _envelope(n: int, attack: float, decay: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / RATE
    env = np.minimum(1.0, t / max(attack, 1e-3))
    if rng.random() < 0.5:
        env *= np.exp(-t / max(decay, 1e-3))
    else:
        tail = max(1, int(0.02 * RATE))
        env[-tail:] *= np.linspace(1.0, 0.0, tail)
    return env


def _harmonic(f0: np.ndarray, n_harm: int, rng: np.random.Generator) -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    out = np.zeros_like(phase)
    for h in range(1, n_harm + 1):
        if f0.max() * h >= RATE / 2:
            break
        out += rng.uniform(0.2, 1.0) / h * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
    return out


def tone(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.uniform(0.08, 0.9) * RATE)
    f0 = np.full(n, rng.uniform(120, 1800))
    return _harmonic(f0, int(rng.integers(1, 6)), rng) * _envelope(n, 0.01, rng.uniform(0.1, 0.6), rng)


def beeps(rng: np.random.Generator) -> np.ndarray:
    f = rng.uniform(400, 2500)
    parts = []
    for _ in range(int(rng.integers(2, 5))):
        n = int(rng.uniform(0.05, 0.2) * RATE)
        parts.append(np.sin(2 * np.pi * f * np.arange(n) / RATE) * _envelope(n, 0.005, 1.0, rng))
        parts.append(np.zeros(int(rng.uniform(0.04, 0.15) * RATE)))
    return np.concatenate(parts)


def chime(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.uniform(0.4, 1.2) * RATE)
    t = np.arange(n) / RATE
    base = rng.uniform(300, 1500)
    out = np.zeros(n)
    for ratio in (1.0, 2.76, 5.4, 8.93)[: int(rng.integers(2, 5))]:
        if base * ratio < RATE / 2:
            out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * base * ratio * t) * np.exp(-t * rng.uniform(2, 8))
    return out


def melody(rng: np.random.Generator) -> np.ndarray:
    """Music-like: a few notes on a scale, with harmonics, vibrato and sometimes a second voice."""
    notes = []
    root = rng.uniform(110, 440)
    for _ in range(int(rng.integers(3, 8))):
        n = int(rng.uniform(0.08, 0.3) * RATE)
        semis = rng.choice([0, 2, 4, 5, 7, 9, 11, 12])
        f0 = root * 2 ** (semis / 12) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * np.arange(n) / RATE))
        note = _harmonic(f0, int(rng.integers(2, 8)), rng)
        if rng.random() < 0.3:
            note += 0.6 * _harmonic(f0 * 1.5, 3, rng)
        notes.append(note * _envelope(n, 0.01, 0.2, rng))
    return np.concatenate(notes)


def whistle(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.uniform(0.2, 0.8) * RATE)
    f0 = np.linspace(rng.uniform(500, 2500), rng.uniform(500, 2500), n)
    return np.sin(2 * np.pi * np.cumsum(f0) / RATE) * _envelope(n, 0.03, 0.4, rng)


NONSPEECH = (tone, beeps, chime, melody, whistle)


def nonspeech_segment(rng: np.random.Generator) -> Segment:
    make = NONSPEECH[int(rng.integers(len(NONSPEECH)))]
    x = make(rng).astype(np.float32)
    return Segment(x / (np.max(np.abs(x)) + 1e-9), (FILLER,), make.__name__, "nonspeech")


def clatter(n: int, rng: np.random.Generator) -> np.ndarray:
    """Household transients labelled blank: clicks, knocks, bursts of band-limited noise."""
    out = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(1, 6))):
        m = int(rng.uniform(0.003, 0.12) * RATE)
        burst = colored_noise(m, float(rng.uniform(0, 2)), rng) * np.exp(-np.arange(m) / (m / 4 + 1))
        at = int(rng.integers(0, max(1, n - m)))
        out[at:at + m] += burst[: n - at] * rng.uniform(0.2, 1.0)
    return out


# --- scene assembly ---------------------------------------------------------------------------------

def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12 if len(x) else 1e-12


@dataclass
class SegmentPool:
    """The material scenes are drawn from. Digits are grouped by speaker or voice, so a string is one voice."""

    digits_by_source: dict[str, list[Segment]] = field(default_factory=dict)
    phrases: list[Segment] = field(default_factory=list)  # strings said as one phrase, sentences with digits
    fillers: list[Segment] = field(default_factory=list)  # recorded non-digit speech, labelled [filler]
    talk: list[Segment] = field(default_factory=list)  # material for babble (labelled nothing)

    def add_digit(self, seg: Segment) -> None:
        self.digits_by_source.setdefault(seg.source, []).append(seg)

    @property
    def n_digits(self) -> int:
        return sum(len(v) for v in self.digits_by_source.values())

    def summary(self) -> dict:
        return {"digit_segments": self.n_digits, "digit_sources": len(self.digits_by_source),
                "phrases": len(self.phrases), "fillers": len(self.fillers), "talk": len(self.talk)}


class RoomSource:
    """RIRs from the cached room bank (``digitspot.train.rooms``) or, without one, synthetic decays."""

    def __init__(self, bank=None):
        self.bank = bank

    @property
    def kind(self) -> str:
        return "rir-bank" if self.bank is not None else "synthetic-decay"

    def apply(self, dry: np.ndarray, rng: np.random.Generator, cfg: SceneConfig) -> np.ndarray:
        """The wet scene, aligned with ``dry`` by its direct path and as long as ``dry``."""
        if self.bank is not None:
            wet = self.bank.draw(rng).apply(dry)
            return wet.samples[wet.offset:wet.offset + len(dry)]
        return reverberate(dry, rng.uniform(*cfg.rt60_s), rng, RATE)


class SceneMaker:
    """Draws scenes from a pool with the augmentation of :class:`SceneConfig`."""

    def __init__(self, pool: SegmentPool, cfg: SceneConfig, rooms: RoomSource | None = None,
                 voice_shift=None):
        if not pool.digits_by_source:
            raise ValueError("the segment pool holds no digits: load FSDD first")
        self.pool, self.cfg = pool, cfg
        self.rooms = rooms or RoomSource()
        self.voice_shift = voice_shift  # callable(audio, rng) -> audio; None: resample by cents
        self.sources = sorted(pool.digits_by_source)
        # FSDD's six speakers and the bank's many voices are drawn as two families, so that neither
        # drowns the other whatever their counts
        self.families = [f for f in ([s for s in self.sources if s.startswith("fsdd:")],
                                     [s for s in self.sources if not s.startswith("fsdd:")]) if f]

    def _shift(self, rng: np.random.Generator):
        """One voice transformation for the whole scene (one talker): the same draw for every segment."""
        if rng.random() >= self.cfg.p_speed:
            return lambda x: x
        if self.voice_shift is not None and rng.random() < self.cfg.p_voice_shift:
            seed = int(rng.integers(1 << 31))
            return lambda x: self.voice_shift(x, np.random.default_rng(seed))
        cents = rng.uniform(*self.cfg.cents)
        return lambda x: change_speed(x, cents)

    def _digits(self, rng: np.random.Generator, count: int) -> list[Segment]:
        family = self.families[0] if len(self.families) == 1 or rng.random() < self.cfg.p_fsdd_source \
            else self.families[1]
        source = family[int(rng.integers(len(family)))]
        takes = self.pool.digits_by_source[source]
        return [takes[int(i)] for i in rng.integers(0, len(takes), count)]

    def _filler(self, rng: np.random.Generator) -> Segment:
        if self.pool.fillers and rng.random() < 0.6:
            return self.pool.fillers[int(rng.integers(len(self.pool.fillers)))]
        return nonspeech_segment(rng)

    def _segments(self, kind: str, rng: np.random.Generator) -> list[Segment]:
        cfg = self.cfg
        if kind == "single":
            return self._digits(rng, 1)
        if kind == "string":
            return self._digits(rng, int(rng.integers(cfg.string_len[0], cfg.string_len[1] + 1)))
        if kind == "phrase":
            return [self.pool.phrases[int(rng.integers(len(self.pool.phrases)))]]
        if kind == "filler":
            return [self._filler(rng) for _ in range(int(rng.integers(1, 3)))]
        if kind == "mixed":
            segs = self._digits(rng, int(rng.integers(1, 4)))
            for _ in range(int(rng.integers(1, 3))):
                segs.insert(int(rng.integers(0, len(segs) + 1)), self._filler(rng))
            return segs
        return []

    def draw_kind(self, rng: np.random.Generator) -> str:
        cfg = self.cfg
        kinds = ["single", "string", "filler", "mixed", "empty"]
        weights = [cfg.p_single, cfg.p_string, cfg.p_filler, cfg.p_mixed, cfg.p_empty]
        if self.pool.phrases:
            kinds.append("phrase")
            weights.append(cfg.p_bank_phrase)
        w = np.asarray(weights) / sum(weights)
        return kinds[int(rng.choice(len(kinds), p=w))]

    def make(self, rng: np.random.Generator, kind: str | None = None, gap_s: tuple[float, float] | None = None,
             augment: bool = True, segments: list[Segment] | None = None) -> Scene:
        """One scene: segments joined by gaps (overlaps add), one voice shift, one room, one level."""
        cfg = self.cfg
        kind = kind or self.draw_kind(rng)
        segs = segments if segments is not None else self._segments(kind, rng)
        shift = self._shift(rng) if augment else (lambda x: x)
        lead = int(rng.uniform(0.05, 0.4) * RATE)
        parts, placed, pos = [], [], lead
        for i, seg in enumerate(segs):
            x = np.asarray(seg.audio if seg.kind == "nonspeech" else shift(seg.audio), dtype=np.float32)
            # speech segments at one level (+-3 dB); other sounds 10 dB either side of it
            level = rng.uniform(-3, 3) if seg.kind != "nonspeech" else rng.uniform(-10, 6)
            if not augment:
                level = 0.0
            x = x / _rms(x) * 10 ** (level / 20)
            if i > 0:
                lo, hi = gap_s or cfg.gap_s
                gap = 0.0 if gap_s is None and rng.random() < cfg.p_zero_gap else rng.uniform(lo, hi)
                # an overlap never exceeds half the shorter segment, so the labels stay in order
                gap_samples = max(round(gap * RATE), -min(len(x), placed[-1].end - placed[-1].start) // 2)
                pos = max(lead, pos + gap_samples)
            parts.append((pos, x))
            placed.append(Placed(pos, pos + len(x), seg.labels))
            pos += len(x)
        n = max(pos + int(rng.uniform(0.05, 0.4) * RATE), int(0.3 * RATE))
        dry = np.zeros(n, dtype=np.float32)
        for at, x in parts:
            dry[at:at + len(x)] += x
        if augment and rng.random() < 0.25:
            dry += clatter(n, rng) * rng.uniform(0.05, 0.5)
        if augment and parts and rng.random() < cfg.p_room:
            dry = self.rooms.apply(dry, rng, cfg)
        target = 10 ** (rng.uniform(*cfg.level_dbfs) / 20) if augment else 10 ** (-26 / 20)
        active = np.concatenate([dry[p.start:p.end] for p in placed]) if placed else dry
        gain = target / _rms(active) if _rms(active) > 1e-6 else 0.0
        return Scene((dry * gain).astype(np.float32), placed, kind, target)


def add_noise(speech: np.ndarray, level: float, rng: np.random.Generator, cfg: SceneConfig, pool: SegmentPool,
              force_noise: bool = False, snr_db: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A microphone noise floor under everything (the teacher hears it too), then with ``cfg.p_noise`` a
    noise bed at a random SNR against the speech's active level: coloured noise, or babble from the
    bank's talk. Returns (noisy, clean) clipped to [-1, 1]."""
    n = len(speech)
    clean = speech.copy()
    if rng.random() >= cfg.p_digital_silence:
        exponent = float(rng.choice([0.0, 1.0]))
        clean += colored_noise(n, exponent, rng) * 10 ** (rng.uniform(*cfg.noise_floor_dbfs) / 20)
    noisy = clean.copy()
    if force_noise or rng.random() < cfg.p_noise:
        snr = rng.uniform(*(snr_db or cfg.snr_db))
        if pool.talk and rng.random() < cfg.p_babble:
            bed = _babble(pool, n, rng)
        else:
            bed = colored_noise(n, float(rng.choice([0.0, 0.0, 1.0, 2.0, rng.uniform(0, 2)])), rng)
        noisy += bed / _rms(bed) * level / 10 ** (snr / 20)
    return np.clip(noisy, -1, 1).astype(np.float32), np.clip(clean, -1, 1).astype(np.float32)


def _babble(pool: SegmentPool, n: int, rng: np.random.Generator) -> np.ndarray:
    bed = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(3, 7))):
        x = pool.talk[int(rng.integers(len(pool.talk)))].audio
        x = x / _rms(x)
        at = int(rng.integers(-len(x) + 1, n))
        lo, hi = max(0, at), min(n, at + len(x))
        if hi > lo:
            bed[lo:hi] += x[lo - at:hi - at]
    return bed if _rms(bed) > 1e-6 else colored_noise(n, 1.0, rng)


# --- crops and their targets -------------------------------------------------------------------------

def crop_targets(segments: list[Placed], length: int, margin_after: int, right_guard: int) -> tuple[list[int], int, int]:
    """Labels of the segments wholly inside the valid part ``[lo, hi)`` of a crop of ``length`` samples
    (segments in crop coordinates), and that part. A segment cut by the crop's left edge moves ``lo`` past
    its end (+ ``margin_after``); one cut by the right edge, or ending within ``right_guard`` of it,
    moves ``hi`` to its start; a segment straddling ``lo`` or ``hi`` is then cut too, until none does."""
    lo, hi = 0, length - right_guard
    changed = True
    while changed and lo < hi:
        changed = False
        for s in segments:
            if s.end <= lo or s.start >= hi:
                continue
            if s.start < lo:
                lo, changed = s.end + margin_after, True
            elif s.end > hi:
                hi, changed = s.start, True
    if lo >= hi:
        return [], 0, 0
    labels: list[int] = []
    for s in sorted(segments, key=lambda s: s.start):
        if s.start >= lo and s.end <= hi:
            labels.extend(s.labels)
    return labels, lo, hi


def crop_offset(n: int, length: int, rng: np.random.Generator, p_whole: float) -> int:
    """Where a ``length``-sample crop starts in an ``n``-sample scene (negative: padding before it).
    A scene that fits lies wholly inside the crop with ``p_whole``; otherwise the crop falls anywhere
    that keeps at least a third of it on the scene."""
    if n <= length and rng.random() < p_whole:
        return -int(rng.integers(0, length - n + 1))
    lo, hi = -length // 3, max(-length // 3 + 1, n - 2 * length // 3)
    return int(rng.integers(lo, hi))


def crop_scene(scene: Scene, length: int, offset: int, margin_after: int, right_guard: int, zero_prefix: int = 0
               ) -> tuple[np.ndarray, list[int], int, int]:
    """The crop's speech (zeros where it runs past the scene: the noise floor comes later), its labels and
    valid part. With ``zero_prefix`` the crop's first samples will be zeroed (a stream's start): the
    targets are then those of a crop that starts after them."""
    n = len(scene.speech)
    out = np.zeros(length, dtype=np.float32)
    src_lo, src_hi = max(0, offset), min(n, offset + length)
    if src_hi > src_lo:
        out[src_lo - offset:src_hi - offset] = scene.speech[src_lo:src_hi]
    segs = [Placed(p.start - offset - zero_prefix, p.end - offset - zero_prefix, p.labels) for p in scene.segments]
    labels, lo, hi = crop_targets(segs, length - zero_prefix, margin_after, right_guard)
    if hi > lo:
        lo, hi = lo + zero_prefix, hi + zero_prefix
    return out, labels, lo, hi


@dataclass
class Batch:
    audio: np.ndarray  # [B, L]
    clean: np.ndarray  # [B, L]
    targets: list[list[int]]
    frame_lo: np.ndarray  # [B] first frame with a target
    frame_hi: np.ndarray  # [B] one past the last
    kinds: list[str] = field(default_factory=list)


def frame_range(lo: int, hi: int, hop: int, frame_length: int, n_frames: int) -> tuple[int, int]:
    """Frames whose centre lies in ``[lo, hi)``."""
    if hi <= lo:
        return 0, 0
    half = frame_length // 2
    f_lo = min(n_frames, max(0, math.ceil((lo - half) / hop)))
    f_hi = min(n_frames, max(f_lo, math.floor((hi - half - 1) / hop) + 1))
    return f_lo, f_hi


def make_batch(maker: SceneMaker, batch_size: int, rng: np.random.Generator, geometry: dict, n_frames_of,
               length: int | None = None) -> Batch:
    """Freshly drawn, augmented crops of one length (drawn from ``cfg.lengths_s`` unless given).

    A phrase from the bank is one segment without word times: a crop that cuts it leaves it no target,
    so a batch holding one grows (up to ``cfg.max_phrase_s``) until the phrase fits whole; the network is
    fully convolutional and trains on any length."""
    cfg = maker.cfg
    if length is None:
        w = np.asarray(cfg.length_weights) / sum(cfg.length_weights)
        length = int(cfg.lengths_s[int(rng.choice(len(w), p=w))] * RATE)
    scenes = [maker.make(rng) for _ in range(batch_size)]
    longest = max((len(s.speech) + geometry["right_context_samples"] for s in scenes if s.kind == "phrase"), default=0)
    length = max(length, min(longest, int(cfg.max_phrase_s * RATE)))
    n_frames = n_frames_of(length)
    audio, clean, targets, f_lo, f_hi, kinds = [], [], [], [], [], []
    for scene in scenes:
        whole = cfg.p_whole if scene.kind != "phrase" else 1.0
        offset = crop_offset(len(scene.speech), length, rng, whole)
        zeros = int(rng.uniform(0.1, 0.9) * length) if rng.random() < cfg.p_stream_start else 0
        speech, labels, lo, hi = crop_scene(scene, length, offset, int(cfg.left_margin_s * RATE),
                                            geometry["right_context_samples"], zeros)
        noisy, quiet = add_noise(speech, scene.level, rng, cfg, maker.pool, force_noise=scene.kind == "empty")
        noisy[:zeros], quiet[:zeros] = 0.0, 0.0
        a, b = frame_range(lo, hi, geometry["frame_hop_samples"], geometry["frame_length_samples"], n_frames)
        audio.append(noisy)
        clean.append(quiet)
        targets.append(labels)
        f_lo.append(a)
        f_hi.append(b)
        kinds.append(scene.kind)
    return Batch(np.stack(audio), np.stack(clean), targets, np.asarray(f_lo), np.asarray(f_hi), kinds)


# --- loading the material ----------------------------------------------------------------------------

def pool_from_takes(takes) -> SegmentPool:
    """FSDD takes (``FsddTake``) cut to their speech by ``fsdd_strings`` (a segment's extent is then its
    speech, so crops cut and keep words where they really are)."""
    from digitspot.train.fsdd_strings import load_takes

    pool = SegmentPool()
    for t in load_takes(takes):
        pool.add_digit(Segment(t.speech, (digit_label(t.digit),), f"fsdd:{t.speaker}", "digit"))
    return pool


def bank_label(label: int) -> int:
    """Speech-bank labels (digit ints, ``corpus.FILLER`` for non-digit speech) -> frame-model labels."""
    from digitspot.train.corpus import FILLER as BANK_FILLER

    return FILLER if label == BANK_FILLER else digit_label(int(label))


def add_bank(pool: SegmentPool, bank, validation: SegmentPool | None = None, validation_fraction: float = 0.05,
             progress: bool = False) -> dict:
    """The bank's training clips (never its held-out texts or voices, nor homophones of digits such as "won",
    whose audio is a digit's and whose label would contradict it): single digits and "oh" join the digits
    of their voice, strings and digit-with-words mixes become phrases, words/confusables/sentences become
    fillers, and sentences are also babble material. With ``validation``, a fixed ``validation_fraction``
    of them (by clip id) goes there instead: validation carved from training. Returns counts by kind."""
    from digitspot.train.corpus import stable_fraction

    records = bank.select(split="train", homophones=False)
    audio = bank.load(records, progress=progress)
    counts: dict[str, int] = {}
    for rec, x in zip(records, audio):
        labels = tuple(bank_label(lab) for lab in rec["labels"])
        kind, source = rec["kind"], f"bank:{rec['voice']}"
        x = np.asarray(x, np.float32)
        held = validation is not None and stable_fraction(rec["id"]) < validation_fraction
        target = validation if held else pool
        kind_key = f"{kind}{' (validation)' if held else ''}"
        counts[kind_key] = counts.get(kind_key, 0) + 1
        if kind in ("digit", "oh") and len(labels) == 1:
            target.add_digit(Segment(x, labels, source, "digit"))
        elif any(1 <= lab <= 10 for lab in labels):
            target.phrases.append(Segment(x, labels, source, "string"))
        else:
            seg = Segment(x, labels or (FILLER,), source, "filler")
            target.fillers.append(seg)
            if kind == "sentence":
                target.talk.append(seg)
    return counts
