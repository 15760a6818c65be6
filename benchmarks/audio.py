"""Labelled audio for the benchmarks: FSDD (or any labelled folder), noise, pitch shifts and streams.

Everything is seeded, so two runs build the same stream and differ only in what the machine does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from digitspot.edge.audio_io import load_audio
from digitspot.edge.devtools.fsdd import FsddTake
from digitspot.edge.devtools.speech_trim import speech_bounds

LABEL_PREFIX = re.compile(r"^(\d)[_\-.]")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    digit: int


def labelled_files(folder: str | Path, limit_per_digit: int | None = None) -> list[LabelledFile]:
    """The labelled test audio in ``folder``.

    An FSDD ``recordings`` folder (``{digit}_{speaker}_{take}.wav``) gives its official test split,
    takes 0-4 (300 files). Any other folder is labelled by a leading digit in the file name
    (``7_anything.wav``) or by a parent folder named after the digit (``7/anything.wav``).
    ``limit_per_digit`` keeps the first N per digit (short mode), spread over speakers.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder; set FSDD_DIR or pass --data-dir")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    fsdd = [t for t in map(FsddTake.parse, paths) if t is not None]
    out: list[LabelledFile] = []
    if fsdd:
        out = [LabelledFile(t.path, t.digit) for t in fsdd if t.is_official_test]
    else:
        for p in paths:
            m = LABEL_PREFIX.match(p.name)
            if m:
                out.append(LabelledFile(p, int(m.group(1))))
            elif p.parent.name.isdigit() and len(p.parent.name) == 1:
                out.append(LabelledFile(p, int(p.parent.name)))
    if not out:
        raise FileNotFoundError(f"{folder}: no labelled audio (FSDD names or 7_*.wav / 7/*.wav)")
    if limit_per_digit:
        # round-robin over speakers/takes: sort by take then speaker so a few files still mix voices
        def key(f: LabelledFile):
            take = FsddTake.parse(f.path)
            return (take.take, take.speaker) if take else (0, f.path.name)
        chosen = []
        for digit in range(10):
            chosen += sorted((f for f in out if f.digit == digit), key=key)[:limit_per_digit]
        out = sorted(chosen, key=lambda f: f.path.name)
    return out


def load_labelled(files: list[LabelledFile], rate: int) -> list[np.ndarray]:
    return [load_audio(f.path, rate) for f in files]


# -- noise ---------------------------------------------------------------------------------------

def colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: ``white`` (flat) or ``pink`` (power ~ 1/f), shaped in the frequency domain.

    The FFT-shaped noise is circular, so a buffer tiled end to end has no seam.
    """
    white = rng.standard_normal(n)
    if kind == "white":
        noise = white
    elif kind == "pink":
        spectrum = np.fft.rfft(white)
        f = np.arange(spectrum.size, dtype=np.float64)
        f[0] = 1.0
        spectrum /= np.sqrt(f)
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n)
    else:
        raise ValueError(f"unknown noise kind {kind!r}: use white or pink")
    noise = noise - noise.mean()
    return (noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)) + 1e-12)


def add_noise(clip: np.ndarray, snr_db: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``clip`` plus noise whose RMS is the clip's RMS (whole clip) minus ``snr_db`` dB.

    The same definition as the training evaluation (clip RMS over the whole FSDD file, which is
    trimmed close to the word). Peaks above full scale are avoided by scaling the sum down; the model
    normalises level, so that changes nothing but clipping.
    """
    noise = colored_noise(clip.size, kind, rng) * (rms(clip) / 10 ** (snr_db / 20))
    out = clip + noise
    peak = float(np.max(np.abs(out)))
    return (out / peak * 0.99 if peak > 0.99 else out).astype(np.float32)


def time_stretch(clip: np.ndarray, factor: float, frame: int = 256, tolerance: int = 64) -> np.ndarray:
    """Make ``clip`` ``factor`` times longer without changing its pitch (WSOLA).

    Waveform-similarity overlap-add: output frames of ``frame`` samples at half-frame hops, each taken
    from near its nominal input position, shifted by up to ``tolerance`` samples to the offset whose
    waveform best continues the previous frame (cross-correlation), then Hann-windowed and added.
    """
    clip = np.asarray(clip, dtype=np.float32)
    hop_out = frame // 2
    hop_in = hop_out / factor
    n_out = round(clip.size * factor)
    padded = np.concatenate([np.zeros(tolerance, np.float32), clip, np.zeros(frame + 2 * tolerance, np.float32)])
    window = np.hanning(frame).astype(np.float32)
    out = np.zeros(n_out + frame, dtype=np.float32)
    norm = np.zeros(n_out + frame, dtype=np.float32)
    previous = 0  # input position (in ``padded``) of the last frame taken
    for k in range(n_out // hop_out + 1):
        nominal = round(k * hop_in) + tolerance
        if k == 0:
            best = nominal
        else:
            natural = padded[previous + hop_out: previous + hop_out + frame]  # what would follow seamlessly
            lo, hi = max(0, nominal - tolerance), min(padded.size - frame, nominal + tolerance)
            if hi <= lo or natural.size < frame:
                best = min(max(nominal, 0), padded.size - frame)
            else:
                region = padded[lo: hi + frame]
                scores = np.correlate(region, natural, mode="valid")
                best = lo + int(np.argmax(scores))
        piece = padded[best: best + frame]
        if piece.size < frame:
            break
        at = k * hop_out
        out[at: at + frame] += piece * window
        norm[at: at + frame] += window
        previous = best
    norm[norm < 1e-3] = 1.0
    return (out / norm)[:n_out]


def pitch_shift(clip: np.ndarray, cents: float, rate: int, method: str = "wsola") -> np.ndarray:
    """Raise pitch by ``cents`` (1200 = an octave); torch- and librosa-free.

    ``resample``: the tape-speed shift. The clip is treated as recorded at ``rate * 2**(cents/1200)`` and
    converted to ``rate`` with soxr: pitch and formants rise by the factor and the word gets that much
    shorter (+500 cents: 1.33x faster).
    ``wsola`` (default): the same resampling after a WSOLA time-stretch by the factor, so the word keeps
    its duration, as with the duration-preserving shifter of the training report (audiomentations'
    PitchShift); pitch and formants still move together.
    """
    factor = 2.0 ** (cents / 1200.0)
    if method == "wsola":
        clip = time_stretch(clip, factor)
    elif method != "resample":
        raise ValueError(f"unknown pitch-shift method {method!r}: use wsola or resample")
    return soxr.resample(clip, rate * factor, rate, quality="HQ").astype(np.float32)


def trim(clip: np.ndarray, rate: int) -> np.ndarray:
    """The clip cut to its speech (``digitspot.edge.devtools.speech_trim``): in the stream, "the last
    sample of the utterance" must be the end of speech, or the daemon would look faster than it is."""
    start, stop = speech_bounds(clip, rate)
    return clip[start:stop]


# -- streams -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Utterance:
    digit: int
    start: int  # first sample of the word in the stream
    end: int  # one past the last sample of the word
    source: str  # file it came from


@dataclass
class LabelledStream:
    """Mono float32 audio at ``rate`` with the positions of the words in it (empty for noise only)."""

    audio: np.ndarray
    rate: int
    utterances: list[Utterance]
    description: dict

    @property
    def seconds(self) -> float:
        return self.audio.size / self.rate

    def pcm16(self) -> bytes:
        return (np.clip(self.audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def _noise_bed(n: int, kind: str, level_rms: float, rng: np.random.Generator) -> np.ndarray:
    period = min(n, 1 << 19)  # 65.5 s at 8 kHz, tiled seamlessly (circular FFT noise)
    loop = colored_noise(period, kind, rng) * level_rms
    reps = -(-n // period)
    return np.tile(loop, reps)[:n].astype(np.float32)


def build_stream(clips: list[np.ndarray], digits: list[int], names: list[str], rate: int, *,
                 snr_db: float, noise: str, seed: int, gap_s: tuple[float, float] = (0.5, 2.0),
                 lead_s: float = 2.0, tail_s: float = 2.0, repeat_to_s: float | None = None,
                 speech_level_dbfs: float = -20.0) -> LabelledStream:
    """Words (trimmed, levelled to ``speech_level_dbfs`` RMS) separated by random gaps, over a noise bed.

    The noise bed runs through the whole stream, gaps included, at ``snr_db`` below the speech level
    (speech RMS over the word vs noise RMS). ``repeat_to_s`` cycles through the clips in fresh random
    orders until the stream is that long (the hour-long throughput input).
    """
    rng = np.random.default_rng(seed)
    speech_rms = 10 ** (speech_level_dbfs / 20)
    prepared = []
    for clip in clips:
        word = trim(clip, rate)
        prepared.append((word / rms(word) * speech_rms).astype(np.float32))
    order: list[int] = list(rng.permutation(len(prepared)))
    pieces: list[tuple[int, int]] = []  # (clip index, start sample)
    pos = int(lead_s * rate)
    total_target = int(repeat_to_s * rate) if repeat_to_s else None
    i = 0
    while True:
        if i == len(order):
            if total_target is None or pos >= total_target:
                break
            order += list(rng.permutation(len(prepared)))
        k = order[i]
        pieces.append((k, pos))
        pos += prepared[k].size + int(rng.uniform(*gap_s) * rate)
        i += 1
        if total_target is not None and pos >= total_target:
            break
    n = pos + int(tail_s * rate)
    audio = _noise_bed(n, noise, speech_rms / 10 ** (snr_db / 20), rng)
    utterances = []
    for k, start in pieces:
        word = prepared[k]
        audio[start:start + word.size] += word
        utterances.append(Utterance(digits[k], start, start + word.size, names[k]))
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:
        audio *= 0.99 / peak
    return LabelledStream(audio, rate, utterances, {
        "utterances": len(utterances), "distinct_clips": len(clips), "seconds": round(n / rate, 2),
        "gap_s": list(gap_s), "noise": noise, "snr_db": snr_db, "speech_level_dbfs": speech_level_dbfs,
        "seed": seed, "trim": ("leading/trailing audio below -35 dB of the loudest 10 ms frame removed (runs of >= 3 "
                 "frames count as sound; isolated clicks do not)"),
    })


def noise_only_stream(seconds: float, rate: int, *, noise: str, snr_db: float, seed: int,
                      speech_level_dbfs: float = -20.0, bursts_per_minute: float = 6.0) -> LabelledStream:
    """Speech-free audio: the stream's noise bed plus non-speech bursts (band-limited noise, 0.1-0.6 s,
    up to 20 dB above the bed), so the VAD has something to open on and the classifier something to
    reject: stationary noise alone would trigger nothing and prove little."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    bed_rms = 10 ** (speech_level_dbfs / 20) / 10 ** (snr_db / 20)
    audio = _noise_bed(n, noise, bed_rms, rng)
    count = int(rng.poisson(bursts_per_minute * seconds / 60.0)) if bursts_per_minute > 0 else 0
    for _ in range(count):
        length = int(rng.uniform(0.1, 0.6) * rate)
        start = int(rng.integers(0, max(1, n - length)))
        burst = colored_noise(length, "white", rng)
        # crude band limit: a moving average (low-pass) or its complement (high-pass)
        k = int(rng.integers(2, 9))
        smooth = np.convolve(burst, np.ones(k) / k, mode="same")
        burst = smooth if rng.random() < 0.5 else burst - smooth
        burst *= np.hanning(length).astype(np.float32)
        burst *= bed_rms * 10 ** (rng.uniform(6, 20) / 20) / rms(burst)
        audio[start:start + length] += burst.astype(np.float32)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:
        audio *= 0.99 / peak
    return LabelledStream(audio, rate, [], {
        "seconds": round(n / rate, 2), "noise": noise, "noise_rms_dbfs": round(20 * np.log10(bed_rms), 1),
        "bursts": count, "burst_description": "band-limited noise bursts 0.1-0.6 s, 6-20 dB above the bed",
        "seed": seed,
    })
