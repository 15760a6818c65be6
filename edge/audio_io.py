"""Reading audio files into the one format the model wants: mono float32 at the model's sample rate.

Any WAV/FLAC/OGG that libsndfile reads is accepted, at any sample rate; stereo is mixed down and the
rate converted with soxr (the same resampler the live microphone path uses).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from digitspot.edge.errors import AudioError, MissingInputError

# Ten minutes at 48 kHz stereo float is ~230 MB; cap what one file may make us hold in memory.
MAX_FILE_SECONDS = 30 * 60


def to_mono_float32(data: np.ndarray) -> np.ndarray:
    """Mix channels down and replace NaN/Inf (a broken float WAV must not poison the model) with 0."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        data = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(data, -1.0, 1.0, out=data)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Return ``path`` as mono float32 samples in [-1, 1] at ``sample_rate`` Hz.

    Raises MissingInputError if the file does not exist and AudioError if it is not readable audio,
    each with a message that names the file and says what to do.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise MissingInputError(f"{path}: is a directory; pass audio files (WAV/FLAC/OGG)")
    try:
        info = sf.info(str(path))
        if info.frames <= 0:
            raise AudioError(f"{path}: audio file holds no samples; record or pick a non-empty file")
        if info.duration > MAX_FILE_SECONDS:
            raise AudioError(
                f"{path}: {info.duration:.0f} s is longer than the {MAX_FILE_SECONDS} s limit; split the file"
            )
        data, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(
            f"{path}: not a readable audio file ({reason}); use WAV, FLAC or OGG"
        ) from exc
    if data.size == 0:
        raise AudioError(f"{path}: audio file holds no samples; record or pick a non-empty file")
    return resample(to_mono_float32(data), int(rate), sample_rate)


def fit_to_window(samples: np.ndarray, window_samples: int) -> np.ndarray:
    """Make a segment exactly ``window_samples`` long, the way training and serving both do it.

    Shorter segments are centred and zero-padded. Longer ones keep the window with the most energy:
    a spoken digit is under a second, and the loudest second is where the word is, not the breath or
    click at either end. Training imports this function so there is no train/serve skew.
    """
    samples = np.asarray(samples, dtype=np.float32)
    n = samples.shape[0]
    if n == window_samples:
        return samples.copy()
    if n < window_samples:
        out = np.zeros(window_samples, dtype=np.float32)
        start = (window_samples - n) // 2
        out[start : start + n] = samples
        return out
    energy = np.concatenate(([0.0], np.cumsum(samples.astype(np.float64) ** 2)))
    window_energy = energy[window_samples:] - energy[:-window_samples]
    start = int(np.argmax(window_energy))
    return samples[start : start + window_samples].copy()
