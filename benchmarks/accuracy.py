"""Accuracy of the deployed artifact through ``digitspot-edge classify``: a Pi checks its own model.

Conditions: the official test takes as recorded; pitch-shifted +300/+500/+700 cents (WSOLA + resampling
by default, see :func:`benchmarks.audio.pitch_shift`); white and pink noise at 10/5/0 dB SNR (clip RMS). Variants are
written as 16-bit WAVs at the model's rate into a temporary folder and classified by the real CLI in a
subprocess, so the whole user-facing path (file reading, resampling, windowing, ONNX) is what is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np
import soundfile as sf

from digitspot.benchmarks.audio import LabelledFile, add_noise, pitch_shift
from digitspot.benchmarks.stats import wilson
from digitspot.edge.audio_io import load_audio

PITCH_CENTS = (300, 500, 700)
NOISE_SNRS = (10, 5, 0)


def conditions() -> list[dict[str, Any]]:
    out = [{"name": "official", "kind": "clean"}]
    out += [{"name": f"pitch+{c}", "kind": "pitch", "cents": c} for c in PITCH_CENTS]
    out += [{"name": f"{k}-{s}dB", "kind": "noise", "noise": k, "snr_db": s} for k in ("white", "pink")
            for s in NOISE_SNRS]
    return out


def classify_with_cli(paths: list[Path], model: Path) -> list[dict[str, Any]]:
    """Run ``digitspot-edge classify`` (as ``python -m digitspot.edge``) and parse its JSON lines."""
    cmd = [sys.executable, "-m", "digitspot.edge", "classify", "--model", str(model), *map(str, paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if len(rows) != len(paths):
        raise RuntimeError(f"digitspot-edge classify returned {len(rows)} lines for {len(paths)} files "
                           f"(exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return rows


def confusion(truth: list[int], predicted: list[int | None]) -> list[list[int]]:
    matrix = np.zeros((10, 10), dtype=int)
    for t, p in zip(truth, predicted):
        if p is not None:
            matrix[t, p] += 1
    return matrix.tolist()


def per_class(matrix: list[list[int]]) -> dict[str, dict[str, float]]:
    m = np.asarray(matrix, dtype=float)
    out = {}
    for d in range(10):
        tp = m[d, d]
        precision = tp / m[:, d].sum() if m[:, d].sum() else 0.0
        recall = tp / m[d, :].sum() if m[d, :].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[str(d)] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}
    return out


PITCH_METHODS = {
    "wsola": "WSOLA time-stretch by the factor, then soxr resampling back (duration kept, formants move too)",
    "resample": "soxr resampling only (tape-style: formants move too, the word gets shorter)",
}


def run_accuracy(files: list[LabelledFile], model: Path, rate: int, seed: int = 0,
                 pitch_method: str = "wsola") -> dict[str, Any]:
    truth = [f.digit for f in files]
    results: dict[str, Any] = {"files": len(files), "model": str(model), "conditions": {},
                               "pitch_method": pitch_method,
                               "method": ("digitspot-edge classify on 16-bit WAVs at the model rate; pitch: "
                                          f"{PITCH_METHODS[pitch_method]}; noise: seeded white/pink, SNR vs "
                                          "whole-clip RMS")}
    clips = [load_audio(f.path, rate) for f in files]
    with tempfile.TemporaryDirectory(prefix="digitspot-acc-") as tmp:
        conds = conditions()
        with click.progressbar(conds, label="  accuracy conditions", file=click.get_text_stream("stderr"),
                               item_show_func=lambda c: c["name"] if c else "") as bar:
            for cond in bar:
                if cond["kind"] == "clean":
                    paths = [f.path for f in files]  # the original files, untouched
                else:
                    rng = np.random.default_rng(seed)
                    folder = Path(tmp) / cond["name"]
                    folder.mkdir()
                    paths = []
                    for f, clip in zip(files, clips):
                        if cond["kind"] == "pitch":
                            variant = pitch_shift(clip, cond["cents"], rate, pitch_method)
                        else:
                            variant = add_noise(clip, cond["snr_db"], cond["noise"], rng)
                        path = folder / f.path.name
                        sf.write(str(path), variant, rate, subtype="PCM_16")
                        paths.append(path)
                rows = classify_with_cli(paths, model)
                predicted = [row.get("digit") for row in rows]
                errors = sum(1 for row in rows if "error" in row)
                correct = sum(1 for t, p in zip(truth, predicted) if p == t)
                matrix = confusion(truth, predicted)
                results["conditions"][cond["name"]] = {
                    **{k: v for k, v in cond.items() if k != "name"},
                    "accuracy": wilson(correct, len(files)),
                    "errors": errors,
                    "mean_confidence": float(np.mean([row.get("confidence", 0.0) for row in rows])),
                    "confusion": matrix,
                    "per_class": per_class(matrix),
                }
    return results
