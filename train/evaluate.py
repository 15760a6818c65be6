"""The ``evaluate`` stage: accuracy through the edge runtime's own classifier, clean and corrupted.

Every number here comes from ``digitspot.edge.classifier.OnnxDigitClassifier`` running an exported ONNX file,
exactly as the daemon would, on audio loaded by ``digitspot.edge.audio_io.load_audio``. The corrupted
conditions are made with audiomentations (pitch shift, coloured noise), a different implementation
from the training augmentation, with a fixed seed so reruns give the same test audio. The metrics go
into the cards and ``report.md`` (rendered by ``digitspot.train.report``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitspot.edge.card import load_card, write_card
from digitspot.edge.classifier import OnnxDigitClassifier
from digitspot.edge.devtools.plots import confusion_figure
from digitspot.edge.errors import MissingInputError
from digitspot.train import data as fsdd
from digitspot.train.data import ClipSet
from digitspot.train.report import append_timings, write_report
from digitspot.train.stages import stage_data
from digitspot.train.workspace import SHIPPED_NAME, Workspace

PITCH_CENTS = (300, 500, 700)
NOISE_SNR_DB = (10, 5, 0)
NOISE_COLOURS = {"white": 0.0, "pink": -3.01}  # spectral slope in dB/octave (audiomentations' f_decay)

TARGETS = {  # metric -> minimum, for the shipped INT8 model
    "official_accuracy_int8": 0.995,
    "loso_mean_accuracy_int8": 0.90,
    "pitch_+500c_accuracy_int8": 0.90,
    "white_5db_accuracy_int8": 0.90,
    "pink_5db_accuracy_int8": 0.90,
}


@dataclass(frozen=True)
class Condition:
    """One corrupted copy of the test audio: the metric key, the report's wording, and how to make it."""

    key: str
    description: str
    make: Callable[[], list[np.ndarray]]


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


def condition_subset(clips: ClipSet, n: int) -> ClipSet:
    """``n`` test files spread evenly over the sorted test set (all of them when ``n`` is 0)."""
    if not n or n >= len(clips):
        return clips
    idx = np.linspace(0, len(clips) - 1, n).round().astype(int)
    return clips.subset(idx)


def conditions_for(clips: list[np.ndarray], sample_rate: int) -> list[Condition]:
    """Pitch shifts, then white and pink noise at each SNR, each with its own fixed seed."""
    conds = [Condition(f"pitch_+{cents}c", f"pitch +{cents} cents",
                       lambda c=cents: pitch_shift(clips, c, sample_rate, seed=c)) for cents in PITCH_CENTS]
    for colour in NOISE_COLOURS:
        for snr in NOISE_SNR_DB:
            conds.append(Condition(f"{colour}_{snr}db", f"{colour} noise {snr} dB SNR",
                                   lambda c=colour, s=snr: add_noise(clips, c, s, sample_rate, seed=1000 + s)))
    return conds


def loso_metrics(loso_results: Path | None) -> dict:
    """The folds of ``loso.json`` (written by ``digitspot-train loso``) as report metrics; empty if absent."""
    if not loso_results or not Path(loso_results).is_file():
        return {}
    loso = json.loads(Path(loso_results).read_text())
    folds = loso.get("folds", [])
    metrics: dict = {
        "loso_folds_int8": {f["speaker"]: f["accuracy_int8"] for f in folds},
        "loso_folds_fp32": {f["speaker"]: f["accuracy_fp32"] for f in folds},
        "loso_fold_seconds": {f["speaker"]: f["seconds"] for f in folds},
        "loso_seconds": loso.get("seconds", 0),
    }
    if folds:
        metrics["loso_mean_accuracy_int8"] = float(np.mean(list(metrics["loso_folds_int8"].values())))
        metrics["loso_mean_accuracy_fp32"] = float(np.mean(list(metrics["loso_folds_fp32"].values())))
        metrics["loso_recipe"] = loso.get("preset")
        metrics["loso_complete"] = bool(loso.get("complete"))
    return metrics


def stage_evaluate(ws: Workspace, loso_results: Path | None = None, conditions: bool = True) -> dict:
    """Accuracy of the unpruned FP32, pruned FP32 and INT8 ONNX files, run through the edge classifier."""
    from tqdm import tqdm

    split = stage_data(ws)
    test = fsdd.load_clips(split.test, ws.progress, "loading test audio")
    labels = test.label_array()
    models = {"fp32": ws.path("student-fp32.onnx"), "pruned": ws.artifact(f"{SHIPPED_NAME}-fp32.onnx"),
              "int8": ws.artifact(f"{SHIPPED_NAME}.onnx")}
    for p in models.values():
        if not p.is_file():
            raise MissingInputError(f"{p} not found: run export and quantize before evaluate")
    classifiers = {k: OnnxDigitClassifier(p, threads=2) for k, p in models.items()}
    prefix = "official" if ws.recipe.split == "official" else "heldout"
    metrics: dict = {"split": ws.recipe.split, "test_files": len(test)}
    preds_int8 = None
    for name, clf in classifiers.items():
        acc, preds = accuracy(clf, test.clips, labels)
        metrics[f"{prefix}_accuracy_{name}"] = acc
        if name == "int8":
            preds_int8 = preds
    cm = confusion(labels, preds_int8)
    metrics["per_class_int8"] = per_class(cm)
    conds: list[Condition] = []
    if conditions:
        subset = condition_subset(test, ws.recipe.condition_files)
        sub_labels = subset.label_array()
        metrics["condition_files"] = len(subset)
        conds = conditions_for(subset.clips, fsdd.SAMPLE_RATE)
        for cond in tqdm(conds, desc="robustness conditions", disable=not ws.progress, leave=False):
            clips = cond.make()
            for name, clf in classifiers.items():
                metrics[f"{cond.key}_accuracy_{name}"] = accuracy(clf, clips, sub_labels)[0]
    metrics.update(loso_metrics(loso_results))
    if ws.recipe.split == "official":
        metrics["targets"] = {k: {"minimum": v, "measured": metrics.get(k),
                                  "met": (metrics.get(k) is not None and metrics[k] >= v)}
                              for k, v in TARGETS.items()}
    png = ws.artifact("confusion-int8.png")
    confusion_figure(png, cm, f"INT8 model, {ws.recipe.split} test ({len(test)} files)")
    # The cards carry the metrics (the model files are unchanged, so their sha256 is too).
    for name, path in models.items():
        card = load_card(path)
        card.metrics = {**{k: v for k, v in card.metrics.items() if k.startswith(("parity", "int8_vs"))},
                        **metrics, "evaluated_model": name}
        write_card(path, card)
    write_report(ws, metrics, [(c.key, c.description) for c in conds], load_card(models["int8"]), models, png)
    ws.save_config(ws.path("evaluate.json"), "evaluate", {"metrics": metrics})
    if ws.path("all.json").is_file():  # a re-evaluation keeps the stage timings of the `all` that made the model
        append_timings(ws, json.loads(ws.path("all.json").read_text())["stage_seconds"])
    ws.make_shipped_readable()
    return metrics
