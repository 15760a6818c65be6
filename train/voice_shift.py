"""Voices of other sizes from the voices we have: vocal-tract length and pitch perturbation on raw audio.

Women's vocal tracts are ~15% shorter than men's and children's ~25-30% shorter, which raises every
formant by about that factor; their voices are also higher, by ~1.7x (women) to ~2x and more
(children). FSDD's six adult men do not cover that, and a pitch shift alone (the resampling in
``digitspot.train.augment``) moves formants and pitch by the same factor and shortens the word, which
is a small adult speaking fast, not a woman. So this module moves the two independently:

- ``warp_formants``: the spectral envelope (cepstrally smoothed log spectrum, 2.5 ms lifter, below a
  400 Hz voice's pitch period) of every 32 ms frame is stretched along frequency by the factor and the
  frame is filtered by new / old envelope (capped at +-24 dB); the harmonics, so the pitch, stay put.
- ``shift_pitch_and_formants``: "tape speed" resampling (soxr), which moves pitch and formants by the
  factor, with the duration restored by a WSOLA time-stretch, so the word keeps its length.
- ``shift_voice(formant, pitch)`` combines them: formants warped by formant / pitch, then both moved
  by pitch, which leaves the formants at ``formant`` and the pitch at ``pitch``.
- ``child_like``: pitch and formants x1.25, as the evaluation of child-like voices defines it. The
  duration is restored by default: children speak no faster than adults (rather slower), and a
  shortened word would confound a child's voice with a fast talker; ``keep_duration=False`` gives
  the plain resampled (1.25x shorter) clip.
- ``random_voice_shift`` draws a milder perturbation per training clip (formants 0.85-1.2, pitch
  0.85-1.7, each log-uniform) from the caller's generator: the same generator state gives the same clip.

``mean_f0`` (normalised autocorrelation on voiced 40 ms frames) measures what the shift did.
Everything here is numpy, scipy and soxr: no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import soxr
from scipy.signal import butter, sosfiltfilt

SAMPLE_RATE = 8000

# WSOLA: 30 ms frames at half-frame hops (Hann windows that sum to a constant), each allowed to slide
# +-7.5 ms to where its waveform best continues the previous frame: more than half a period of an
# adult man's voice (100 Hz), so a frame can always land in phase.
WSOLA_FRAME = 240
WSOLA_SEARCH = 60

# Envelope warp STFT: 32 ms frames, 75% overlap.
ENVELOPE_FRAME = 256
ENVELOPE_HOP = 64
ENVELOPE_LIFTER_S = 0.0025  # cepstral lifter: envelope detail coarser than a 400 Hz pitch period
ENVELOPE_GAIN_LIMIT_DB = 24.0

# F0 measurement.
F0_FRAME_S = 0.04
F0_HOP_S = 0.01
F0_RANGE_HZ = (60.0, 500.0)
F0_VOICING = 0.8  # normalised autocorrelation peak a frame needs to count as voiced
F0_GATE_DB = -30.0  # frames quieter than this below the loudest frame are not measured
F0_LOWPASS_HZ = 1000.0  # fricatives ("s", "x") are narrow bands near 3-4 kHz that autocorrelate like a pitch
F0_LOW_BAND_SHARE = 0.3  # a voiced frame has at least this share of its energy below F0_LOWPASS_HZ


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2))) if x.size else 0.0


def _match_rms(out: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Give ``out`` the RMS of ``reference``: a voice shift changes who speaks, not how loud."""
    ref, got = _rms(reference), _rms(out)
    if got > 0 and ref > 0:
        out = out * (ref / got)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


# -- time and tape speed -------------------------------------------------------------------------


def time_stretch(samples: np.ndarray, factor: float, frame: int = WSOLA_FRAME, search: int = WSOLA_SEARCH) -> np.ndarray:
    """``samples`` made ``factor`` times longer (``factor`` < 1: shorter) at the same pitch (WSOLA).

    Each output frame is read near its nominal input position, at the offset within ``search``
    samples whose waveform is most like the natural continuation of the previous frame (normalised
    cross-correlation), so the overlapping frames add in phase.
    """
    x = np.asarray(samples, dtype=np.float64)
    if factor <= 0:
        raise ValueError(f"time-stretch factor must be positive, got {factor}")
    n_out = round(x.size * factor)
    if n_out == 0:
        return np.zeros(0, dtype=np.float32)
    hop_out = frame // 2
    hop_in = hop_out / factor
    padded = np.concatenate([np.zeros(search), x, np.zeros(frame + 2 * search + hop_out)])
    window = np.hanning(frame + 2)[1:-1]  # strictly positive, sums to ~1 at half-frame hops
    out = np.zeros(n_out + frame)
    weight = np.zeros(n_out + frame)
    position = search  # input position (in ``padded``) of the previous frame
    for k in range(n_out // hop_out + 1):
        nominal = round(k * hop_in) + search
        if k > 0:
            target = padded[position + hop_out: position + hop_out + frame]
            lo = max(0, nominal - search)
            hi = min(padded.size - frame, nominal + search)
            region = padded[lo: hi + frame]
            dots = np.correlate(region, target, mode="valid")
            energy = np.convolve(region**2, np.ones(frame), mode="valid")
            score = dots / np.sqrt(energy + 1e-12)
            position = lo + int(np.argmax(score))
        else:
            position = nominal
        at = k * hop_out
        out[at: at + frame] += padded[position: position + frame] * window
        weight[at: at + frame] += window
    weight[weight < 1e-6] = 1.0
    return (out / weight)[:n_out].astype(np.float32)


def resample_by(samples: np.ndarray, factor: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Play ``samples`` ``factor`` times faster: pitch and formants x factor, duration / factor.

    The clip is treated as recorded at ``rate * factor`` and converted to ``rate`` (soxr, which
    low-passes what would land above the Nyquist frequency)."""
    x = np.asarray(samples, dtype=np.float32)
    if factor == 1.0:
        return x.copy()
    return soxr.resample(x, rate * factor, rate, quality="HQ").astype(np.float32)


def shift_pitch_and_formants(samples: np.ndarray, factor: float, rate: int = SAMPLE_RATE,
                             keep_duration: bool = True) -> np.ndarray:
    """Pitch and formants x ``factor`` (a shorter vocal tract and faster vocal folds together)."""
    x = np.asarray(samples, dtype=np.float32)
    if keep_duration:
        x = time_stretch(x, factor)
    return _match_rms(resample_by(x, factor, rate), samples)


def child_like(samples: np.ndarray, rate: int = SAMPLE_RATE, factor: float = 1.25,
               keep_duration: bool = True) -> np.ndarray:
    """A child-like voice: pitch and formants x1.25 (see the module docstring for the duration)."""
    return shift_pitch_and_formants(samples, factor, rate, keep_duration)


# -- spectral envelope ---------------------------------------------------------------------------


def warp_formants(samples: np.ndarray, factor: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Formants x ``factor`` with the pitch and the duration unchanged (see the module docstring)."""
    x = np.asarray(samples, dtype=np.float64)
    if factor == 1.0 or x.size == 0:
        return x.astype(np.float32)
    n, hop = ENVELOPE_FRAME, ENVELOPE_HOP
    pad = n
    padded = np.concatenate([np.zeros(pad), x, np.zeros(pad + n)])
    n_frames = (padded.size - n) // hop + 1
    window = np.hanning(n + 1)[:-1]  # periodic Hann: squared, it sums to 1.5 at 75% overlap
    idx = np.arange(n)[None, :] + hop * np.arange(n_frames)[:, None]  # frames read from ``padded``
    spectra = np.fft.rfft(padded[idx] * window, axis=1)

    # cepstrally smoothed log-magnitude envelope of each frame
    lifter_len = max(2, round(ENVELOPE_LIFTER_S * rate))
    lifter = np.zeros(n)
    lifter[:lifter_len] = 1.0
    lifter[n - lifter_len + 1:] = 1.0
    log_mag = np.log(np.abs(spectra) + 1e-9)
    cepstra = np.fft.irfft(log_mag, n=n, axis=1)
    envelope = np.fft.rfft(cepstra * lifter, axis=1).real  # natural-log magnitude

    n_bins = envelope.shape[1]
    source = np.clip(np.arange(n_bins) / factor, 0, n_bins - 1)  # new envelope at f = old one at f / factor
    below = np.minimum(np.floor(source).astype(int), n_bins - 2)
    frac = source - below
    warped = envelope[:, below] * (1 - frac) + envelope[:, below + 1] * frac
    limit = ENVELOPE_GAIN_LIMIT_DB / 20 * math.log(10)
    gain = np.exp(np.clip(warped - envelope, -limit, limit))
    frames = np.fft.irfft(spectra * gain, n=n, axis=1) * window

    out = _overlap_add(frames, hop)
    norm = _overlap_add(np.broadcast_to(window**2, frames.shape), hop)
    norm[norm < 1e-6] = 1.0
    return _match_rms((out / norm)[pad: pad + x.size], x)


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """Sum frames placed ``hop`` apart; the frame length must be a multiple of ``hop``."""
    n_frames, n = frames.shape
    quarters = n // hop
    blocks = frames.reshape(n_frames, quarters, hop)
    out = np.zeros((n_frames + quarters - 1, hop))
    for k in range(quarters):
        out[k: k + n_frames] += blocks[:, k]
    return out.ravel()


def shift_voice(samples: np.ndarray, formant: float, pitch: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Formants x ``formant`` and pitch x ``pitch``, independently, at the same duration."""
    x = np.asarray(samples, dtype=np.float32)
    if formant != pitch:
        x = warp_formants(x, formant / pitch, rate)
    if pitch != 1.0:
        x = shift_pitch_and_formants(x, pitch, rate, keep_duration=True)
    return _match_rms(x, samples)


# -- random draws for training -------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceShiftConfig:
    """Ranges of the random perturbation (factors; each drawn log-uniformly, independently).

    Formants up to 1.2 reach women's vocal tracts and the lower end of children's; pitch up to 1.7
    reaches a typical woman's voice from FSDD's men (~120 Hz -> ~200 Hz). Factors below 1 stand for
    larger men and keep the perturbation centred on the data rather than only pushing up.
    """

    formant_range: tuple[float, float] = (0.85, 1.2)
    pitch_range: tuple[float, float] = (0.85, 1.7)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VoiceShift:
    formant: float
    pitch: float


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_voice_shift(rng: np.random.Generator, config: VoiceShiftConfig = VoiceShiftConfig()) -> VoiceShift:
    return VoiceShift(_log_uniform(rng, *config.formant_range), _log_uniform(rng, *config.pitch_range))


def random_voice_shift(samples: np.ndarray, rng: np.random.Generator,
                       config: VoiceShiftConfig = VoiceShiftConfig(),
                       rate: int = SAMPLE_RATE) -> tuple[np.ndarray, VoiceShift]:
    """One random perturbation of ``samples``; returns the clip and the factors drawn."""
    shift = draw_voice_shift(rng, config)
    return shift_voice(samples, shift.formant, shift.pitch, rate), shift


# -- measuring -----------------------------------------------------------------------------------


def f0_track(samples: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """F0 (Hz) of every voiced 40 ms frame (10 ms hop), by normalised autocorrelation.

    The signal is low-passed at 1 kHz first (the fundamental and its first harmonics are what carries
    the period). A frame is voiced when at least 30% of its energy lies below 1 kHz (a fricative's
    does not), its low band is within 30 dB of the loudest frame's, and its best
    autocorrelation peak in 60-500 Hz reaches 0.8 inside the range (not at its edge); the lag is
    refined by a parabola through the peak. Octave jumps are left to ``mean_f0``
    """
    raw = np.asarray(samples, dtype=np.float64)
    if raw.size <= 27:  # sosfiltfilt's padding needs a few samples; shorter input has no pitch anyway
        return np.zeros(0)
    x = sosfiltfilt(butter(4, F0_LOWPASS_HZ, fs=rate, output="sos"), raw)
    frame, hop = int(F0_FRAME_S * rate), int(F0_HOP_S * rate)
    min_lag = math.floor(rate / F0_RANGE_HZ[1])
    max_lag = math.ceil(rate / F0_RANGE_HZ[0])
    span = frame + max_lag
    if x.size < span:
        x = np.concatenate([x, np.zeros(span - x.size)])
        raw = np.concatenate([raw, np.zeros(span - raw.size)])
    starts = range(0, x.size - span + 1, hop)
    levels = np.array([np.sum(x[s: s + frame] ** 2) for s in starts])
    full = np.array([np.sum(raw[s: s + frame] ** 2) for s in starts])
    if levels.size == 0 or levels.max() <= 0:
        return np.zeros(0)
    gate = levels.max() * 10 ** (F0_GATE_DB / 10)
    f0s = []
    for s, level, total in zip(starts, levels, full):
        if level < gate or level < F0_LOW_BAND_SHARE * total:
            continue
        head = x[s: s + frame]
        seg = x[s: s + span]
        dots = np.correlate(seg, head, mode="valid")[: max_lag + 1]
        shifted_energy = np.convolve(seg**2, np.ones(frame), mode="valid")[: max_lag + 1]
        r = dots / np.sqrt(level * shifted_energy + 1e-12)
        lag = min_lag + int(np.argmax(r[min_lag: max_lag + 1]))
        if r[lag] < F0_VOICING or lag in (min_lag, max_lag):
            continue  # unvoiced, or the "peak" is the edge of the search range, not a period
        a, b, c = r[lag - 1], r[lag], r[lag + 1]
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom < 0 else 0.0
        f0s.append(rate / (lag + float(np.clip(offset, -0.5, 0.5))))
    return np.asarray(f0s)


def mean_f0(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Mean F0 (Hz) over the voiced frames; ``nan`` when no frame is voiced.

    Autocorrelation still jumps an octave on some frames (creaky onsets, a strong second harmonic);
    a frame more than half an octave from the clip's median is moved by octaves towards it first,
    so one jump does not swing a word's mean by a third.
    """
    track = f0_track(samples, rate)
    if track.size == 0:
        return float("nan")
    median = float(np.median(track))
    octaves = np.round(np.log2(track / median))
    return float(np.mean(track / 2.0**octaves))
