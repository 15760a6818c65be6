"""Waveform augmentation for training, in plain numpy so it keeps up with a 2-core CPU.

Why each step exists:
- speed/pitch perturbation (resampling by a factor, which moves pitch *and* formants, like a shorter
  or longer vocal tract: VTLP-like): FSDD has six adult men; higher voices are the main gap;
- random placement in the window: the serving path centres the segment, but a VAD cut is never exact;
- gain: microphones and distances differ (the front end is peak-relative, but noise is not);
- additive coloured noise at a random SNR (white, pink, brown): kitchens are not studios;
- simple reverberation (exponentially decaying noise impulse response): rooms.

The library evaluation conditions (pitch shift, white/pink noise) are produced with audiomentations
in ``digitspot.train.evaluate``, a different implementation from these, so the test is not the training trick.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import fftconvolve

from digitspot.edge.audio_io import fit_to_window


@dataclass(frozen=True)
class AugmentConfig:
    p_speed: float = 0.75
    cents_min: float = -400.0
    cents_max: float = 900.0
    p_reverb: float = 0.2
    rt60_min: float = 0.08  # seconds
    rt60_max: float = 0.5
    gain_db_min: float = -18.0
    gain_db_max: float = 6.0
    p_noise: float = 0.55
    snr_db_min: float = -3.0
    snr_db_max: float = 30.0
    p_centre: float = 0.4  # place exactly as serving does (fit_to_window), else at random

    def to_dict(self) -> dict:
        return asdict(self)


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectral density ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    white = rng.standard_normal(n)
    if exponent == 0:
        noise = white
    else:
        spec = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1] if n > 1 else 1.0
        spec = spec / freqs ** (exponent / 2)
        noise = np.fft.irfft(spec, n)
    rms = float(np.sqrt(np.mean(noise**2))) or 1.0
    return (noise / rms).astype(np.float32)


def change_speed(samples: np.ndarray, cents: float) -> np.ndarray:
    """Resample by 2**(cents/1200): +1200 cents plays an octave higher and twice as fast."""
    factor = 2.0 ** (cents / 1200.0)
    n_out = max(16, round(len(samples) / factor))
    positions = np.arange(n_out) * factor
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def reverberate(samples: np.ndarray, rt60: float, rng: np.random.Generator, rate: int) -> np.ndarray:
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir[0] = 1.0
    wet = fftconvolve(samples, ir)[: len(samples)]
    peak_in, peak_out = np.max(np.abs(samples)) or 1.0, np.max(np.abs(wet)) or 1.0
    return (wet * (peak_in / peak_out)).astype(np.float32)


def place(samples: np.ndarray, window: int, rng: np.random.Generator, p_centre: float) -> tuple[np.ndarray, int, int]:
    """Put a clip in the window; returns the window and where the clip lies in it."""
    if rng.random() < p_centre or len(samples) >= window:
        out = fit_to_window(samples, window)
        start = max(0, (window - len(samples)) // 2)
        return out, start, min(window, start + len(samples))
    out = np.zeros(window, dtype=np.float32)
    start = int(rng.integers(0, window - len(samples) + 1))
    out[start:start + len(samples)] = samples
    return out, start, start + len(samples)


def augment_clip(samples: np.ndarray, window: int, rng: np.random.Generator, cfg: AugmentConfig,
                 rate: int = 8000) -> np.ndarray:
    return _augment(samples, window, rng, cfg, rate, twin=False)[0]


def augment_clip_pair(samples: np.ndarray, window: int, rng: np.random.Generator, cfg: AugmentConfig,
                      rate: int = 8000) -> tuple[np.ndarray, np.ndarray]:
    """The augmented window, and the same window before the noise was added (same speed, pitch,
    reverberation, gain and placement): distillation shows the teacher the second so that its targets
    for a clip buried in noise are the ones it gives the clip it can hear."""
    return _augment(samples, window, rng, cfg, rate, twin=True)


def _augment(samples: np.ndarray, window: int, rng: np.random.Generator, cfg: AugmentConfig, rate: int,
             twin: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """One draw of the augmentation; ``twin`` also keeps the window as it was before the noise (a copy
    the plain path, used by every epoch of the teacher's training, does not need to make)."""
    x = samples
    if rng.random() < cfg.p_speed:
        x = change_speed(x, rng.uniform(cfg.cents_min, cfg.cents_max))
    if rng.random() < cfg.p_reverb:
        x = reverberate(x, rng.uniform(cfg.rt60_min, cfg.rt60_max), rng, rate)
    x = x * np.float32(10 ** (rng.uniform(cfg.gain_db_min, cfg.gain_db_max) / 20))
    out, start, stop = place(x, window, rng, cfg.p_centre)
    noise_free = np.clip(out, -1.0, 1.0).astype(np.float32) if twin else None
    if rng.random() < cfg.p_noise:
        clip_rms = float(np.sqrt(np.mean(out[start:stop] ** 2))) + 1e-8
        snr = rng.uniform(cfg.snr_db_min, cfg.snr_db_max)
        # white is the hardest colour for the 5 dB target (it buries the high formants): draw it most often
        exponent = float(rng.choice([0.0, 0.0, 1.0, 2.0, rng.uniform(0.0, 2.0)]))
        noise_rms = clip_rms / 10 ** (snr / 20)
        if rng.random() < 0.5:  # noise over the whole window (a live microphone)
            out = out + colored_noise(window, exponent, rng) * noise_rms
        else:  # noise only on the recording (a noisy file, padded by the classifier)
            out[start:stop] += colored_noise(stop - start, exponent, rng) * noise_rms
    return np.clip(out, -1.0, 1.0).astype(np.float32), noise_free


def augment_batch(clips: list[np.ndarray], window: int, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    return np.stack([augment_clip(c, window, rng, cfg) for c in clips])


def augment_batch_pair(clips: list[np.ndarray], window: int, rng: np.random.Generator,
                       cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """``augment_batch`` plus the noise-free twin of each window (see ``augment_clip_pair``)."""
    pairs = [augment_clip_pair(c, window, rng, cfg) for c in clips]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def clean_batch(clips: list[np.ndarray], window: int) -> np.ndarray:
    """The serving path's deterministic windowing (edge.audio_io.fit_to_window)."""
    return np.stack([fit_to_window(c, window) for c in clips])
