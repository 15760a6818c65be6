"""Evaluation through the edge runtime's own classifier, and the Markdown report.

Every number here comes from ``digitspot.edge.classifier.OnnxDigitClassifier`` running an exported ONNX file,
exactly as the daemon would, on audio loaded by ``digitspot.edge.audio_io.load_audio``. The corrupted
conditions are made with audiomentations (pitch shift, coloured noise), a different implementation
from the training augmentation, with a fixed seed so reruns give the same test audio.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitspot.edge.classifier import OnnxDigitClassifier

PITCH_CENTS = (300, 500, 700)
NOISE_SNR_DB = (10, 5, 0)
NOISE_COLOURS = {"white": 0.0, "pink": -3.01}  # spectral slope in dB/octave (audiomentations' f_decay)


@dataclass
class Condition:
    name: str
    description: str


def pitch_shift(clips: list[np.ndarray], cents: int, sample_rate: int, seed: int = 0) -> list[np.ndarray]:
    from audiomentations import PitchShift

    np.random.seed(seed)
    random.seed(seed)
    semis = cents / 100.0
    try:
        shifter = PitchShift(min_semitones=semis, max_semitones=semis, p=1.0)
        return [shifter(c.copy(), sample_rate=sample_rate).astype(np.float32) for c in clips]
    except ImportError:  # signalsmith-stretch missing: use librosa's phase vocoder
        shifter = PitchShift(min_semitones=semis, max_semitones=semis, method="librosa_phase_vocoder", p=1.0)
        return [shifter(c.copy(), sample_rate=sample_rate).astype(np.float32) for c in clips]


def add_noise(clips: list[np.ndarray], colour: str, snr_db: float, sample_rate: int, seed: int = 0) -> list[np.ndarray]:
    """Noise over the whole recording at ``snr_db`` relative to the recording's RMS."""
    from audiomentations import AddColorNoise

    np.random.seed(seed)
    random.seed(seed)
    decay = NOISE_COLOURS[colour]
    noiser = AddColorNoise(min_snr_db=snr_db, max_snr_db=snr_db, min_f_decay=decay, max_f_decay=decay, p=1.0)
    return [np.clip(noiser(c.copy(), sample_rate=sample_rate), -1, 1).astype(np.float32) for c in clips]


def accuracy(classifier: OnnxDigitClassifier, clips: list[np.ndarray], labels: np.ndarray) -> tuple[float, np.ndarray]:
    preds = np.asarray([p.index for p in classifier.classify_batch(clips)], dtype=np.int64)
    return float((preds == labels).mean()), preds


def confusion(labels: np.ndarray, preds: np.ndarray, n: int = 10) -> np.ndarray:
    m = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(labels, preds):
        m[t, p] += 1
    return m


def per_class(m: np.ndarray) -> list[dict]:
    rows = []
    for k in range(m.shape[0]):
        tp = m[k, k]
        prec = tp / m[:, k].sum() if m[:, k].sum() else 0.0
        rec = tp / m[k, :].sum() if m[k, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        rows.append({"digit": k, "precision": float(prec), "recall": float(rec), "f1": float(f1),
                     "support": int(m[k, :].sum())})
    return rows


def plot_confusion(m: np.ndarray, path: Path, title: str) -> None:
    """The same confusion-matrix figure the benchmarks draw, so the two reports read alike."""
    from digitspot.benchmarks.plots import confusion_figure

    confusion_figure(path, np.asarray(m).tolist(), title)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
