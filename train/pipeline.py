"""The stages of the recipe as plain functions; ``digitspot.train.cli`` wraps each as a subcommand.

Layout of one run (``--run-dir``, e.g. ``runs/official``): ``recipe.json``, ``data.json``, ``synth.json``,
``teacher.pt`` (+ ``.json``), ``student.pt``, ``pruned.pt``, ``student-fp32.onnx`` (the unpruned student,
for the report). The shipped files go to ``--out`` (``artifacts/``): ``digitspot-fp32.onnx``,
``digitspot.onnx`` (INT8), ``digitspot.pt`` (TorchScript), each ``.onnx`` with its ``.onnx.json`` card,
``report.md`` and ``confusion-int8.png``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from digitspot.edge.card import Quantization, load_card, write_card, write_json_atomic
from digitspot.edge.errors import MissingInputError
from digitspot.train import data as fsdd
from digitspot.train import onnx_tools, synth
from digitspot.train.augment import AugmentConfig, augment_batch, clean_batch
from digitspot.train.data import ClipSet, Split
from digitspot.train.recipe import Recipe
from digitspot.train.training import (
    ValidationSet,
    build_model,
    load_checkpoint,
    model_summary,
    prune_iteratively,
    save_checkpoint,
    train_loop,
)

SHIPPED_NAME = "digitspot"


@dataclass
class Workspace:
    recipe: Recipe
    run_dir: Path
    out_dir: Path
    data_dir: str | None
    cache_dir: Path
    progress: bool = True

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def artifact(self, name: str) -> Path:
        return self.out_dir / name

    def save_config(self, output: Path, stage: str, extra: dict) -> None:
        """``<output>.json`` beside each stage's output: recipe + what the stage did."""
        write_json_atomic(Path(str(output) + ".json") if output.suffix != ".json" else output, {
            "stage": stage, "command": " ".join(["digitspot-train"] + sys.argv[1:]),
            "run_dir": str(self.run_dir), "data_dir": self.data_dir, "recipe": self.recipe.to_dict(), **extra,
        })


# --- data ----------------------------------------------------------------------------------------

def stage_data(ws: Workspace) -> Split:
    utterances = fsdd.scan_fsdd(ws.data_dir)
    split = fsdd.make_split(utterances, ws.recipe.split)
    fsdd.check_readable(utterances, ws.progress)
    r = ws.recipe
    if r.thin_train_per_digit_speaker:
        split.train = fsdd.thin(split.train, r.thin_train_per_digit_speaker)
        split.validation = fsdd.thin(split.validation, max(1, r.thin_train_per_digit_speaker // 2))
    if r.thin_test_per_digit_speaker:
        split.test = fsdd.thin(split.test, r.thin_test_per_digit_speaker)
    ws.run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(ws.path("recipe.json"), r.to_dict())
    ws.save_config(ws.path("data.json"), "data", {"summary": split.summary(), "files": {
        "train": [u.path for u in split.train], "validation": [u.path for u in split.validation],
        "test": [u.path for u in split.test]}})
    return split


def stage_synth(ws: Workspace) -> ClipSet:
    if not ws.recipe.use_synth:
        return ClipSet()
    clips, cache_file = synth.generate(ws.recipe.synth, ws.cache_dir, progress=ws.progress)
    ws.run_dir.mkdir(parents=True, exist_ok=True)
    ws.save_config(ws.path("synth.json"), "synth", {"cache_file": str(cache_file), "clips": len(clips),
                                                    "voices": len({s for s in clips.sources})})
    return clips


def training_data(ws: Workspace) -> tuple[ClipSet, ValidationSet, dict]:
    split = stage_data(ws)
    train = fsdd.load_clips(split.train, ws.progress, "loading training audio")
    val_clips = fsdd.load_clips(split.validation, ws.progress, "loading validation audio")
    synthetic = stage_synth(ws)
    info = {"fsdd_train_clips": len(train), "synthetic_clips": len(synthetic), "validation_clips": len(val_clips)}
    return train.extend(synthetic), ValidationSet(val_clips, ws.recipe.augment), info


# --- training stages -----------------------------------------------------------------------------

def stage_fit(ws: Workspace) -> Path:
    """Teacher: the larger CNN, cross-entropy on augmented FSDD + synthetic voices."""
    r = ws.recipe
    train, val, info = training_data(ws)
    torch.manual_seed(r.seed)
    model = build_model(r.teacher_arch)
    hist = train_loop(model, train, val, r.fit, r.augment, desc="teacher", progress=ws.progress)
    out = ws.path("teacher.pt")
    save_checkpoint(out, model, r.teacher_arch, {"history": hist.__dict__})
    ws.save_config(out, "fit", {"data": info, "model": model_summary(model), "history": hist.__dict__})
    return out


def stage_distill(ws: Workspace) -> Path:
    """Student (DS-CNN) trained on the teacher's soft targets plus the labels."""
    r = ws.recipe
    teacher, _ = load_checkpoint(ws.path("teacher.pt"))
    train, val, info = training_data(ws)
    torch.manual_seed(r.seed + 1)
    model = build_model(r.student_arch)
    hist = train_loop(model, train, val, r.distill, r.augment, teacher=teacher, desc="student",
                      progress=ws.progress)
    out = ws.path("student.pt")
    save_checkpoint(out, model, r.student_arch, {"history": hist.__dict__})
    ws.save_config(out, "distill", {"data": info, "model": model_summary(model), "history": hist.__dict__,
                                    "teacher_validation": val.score(teacher)})
    return out


def stage_prune(ws: Workspace) -> Path:
    r = ws.recipe
    teacher, _ = load_checkpoint(ws.path("teacher.pt"))
    model, _ = load_checkpoint(ws.path("student.pt"))
    train, val, info = training_data(ws)
    before = val.score(model)
    log = prune_iteratively(model, teacher, train, val, r.prune, r.augment, progress=ws.progress)
    after = val.score(model)
    out = ws.path("pruned.pt")
    save_checkpoint(out, model, r.student_arch, {"prune_log": log})
    ws.save_config(out, "prune", {"data": info, "model": model_summary(model), "steps": log,
                                  "validation_before": before, "validation_after": after})
    return out


# --- export and quantization ---------------------------------------------------------------------

def _test_windows(ws: Workspace) -> np.ndarray:
    split = stage_data(ws)
    test = fsdd.load_clips(split.test, ws.progress, "loading test audio")
    return clean_batch(test.clips, ws.recipe.window_samples)


def _training_summary(ws: Workspace) -> dict:
    """What the card says about how the model was made: the recipe and each stage's outcome."""
    summary = {"recipe": ws.recipe.to_dict(), "command": " ".join(["digitspot-train"] + sys.argv[1:]),
               "data_dir": ws.data_dir, "stages": {}}
    for stage, name in (("data", "data.json"), ("synth", "synth.json"), ("fit", "teacher.pt.json"),
                        ("distill", "student.pt.json"), ("prune", "pruned.pt.json")):
        p = ws.path(name)
        if p.is_file():
            d = json.loads(p.read_text())
            keep = {k: d[k] for k in ("summary", "clips", "voices", "data", "model", "validation_before",
                                      "validation_after") if k in d}
            if "history" in d:
                h = d["history"]
                keep["history"] = {"best_epoch": h["best_epoch"], "epochs_run": len(h["epochs"]),
                                   "stopped": h["stopped"], "seconds": h["seconds"],
                                   "best_validation_score": h["best_score"]}
            if "steps" in d:
                keep["prune_steps"] = [{k: s[k] for k in ("step", "sparsity") if k in s} for s in d["steps"]]
            summary["stages"][stage] = keep
    return summary


def stage_export(ws: Workspace, gate: bool = True) -> dict:
    """Pruned student -> FP32 ONNX (+ card) and TorchScript; unpruned student -> ONNX for the report.

    ``gate=False`` (LOSO folds, whose models only measure accuracy and are never shipped) records a parity
    miss instead of failing: one fold at 1.02e-4 used to end the whole hour-long LOSO run."""
    r = ws.recipe
    model, _ = load_checkpoint(ws.path("pruned.pt"))
    student, _ = load_checkpoint(ws.path("student.pt"))
    window = r.window_samples
    windows = _test_windows(ws)
    fp32 = onnx_tools.export_onnx(model, ws.artifact(f"{SHIPPED_NAME}-fp32.onnx"), window)
    ts = onnx_tools.export_torchscript(model, ws.artifact(f"{SHIPPED_NAME}.pt"), window)
    unpruned = onnx_tools.export_onnx(student, ws.path("student-fp32.onnx"), window)
    ref = onnx_tools.torch_logits(model, windows)
    parity = float(np.max(np.abs(onnx_tools.ort_logits(fp32, windows) - ref)))
    traced = torch.jit.load(str(ts))
    ts_parity = float(np.max(np.abs(onnx_tools.torch_logits(traced, windows) - ref)))
    unpruned_parity = float(np.max(np.abs(onnx_tools.ort_logits(unpruned, windows)
                                          - onnx_tools.torch_logits(student, windows))))
    # The gate is on the shipped (pruned) model. The unpruned student's ONNX exists only to measure the
    # report's FP32 row: its parity is recorded in its card, and a miss is reported, not fatal (float32
    # rounding in dead channels, which BatchNorm scales by ~300 (running variance ~0), put one at 1.01e-4).
    if parity > onnx_tools.PARITY_TOLERANCE:
        if not gate:
            print(f"note: ONNX and PyTorch disagree by {parity:.2e} (> {onnx_tools.PARITY_TOLERANCE}); "
                  "recorded, not fatal: this model is not shipped", file=sys.stderr)
        else:
            fp32.unlink(missing_ok=True)
            raise onnx_tools.ExportError(
                f"ONNX and PyTorch disagree by {parity:.2e} (> {onnx_tools.PARITY_TOLERANCE}) "
                "on the test windows: the export is wrong, not shipped")
    if unpruned_parity > onnx_tools.PARITY_TOLERANCE:
        print(f"note: the unpruned student's ONNX (report only, not shipped) differs from PyTorch by "
              f"{unpruned_parity:.2e} (> {onnx_tools.PARITY_TOLERANCE})", file=sys.stderr)
    summary = model_summary(model)
    metrics = {"parity_onnx_fp32_vs_torch_max_abs": parity, "parity_torchscript_vs_torch_max_abs": ts_parity,
               "parity_windows": len(windows)}
    training = _training_summary(ws)
    card = onnx_tools.make_card(f"{SHIPPED_NAME}-fp32", model, window, Quantization(), summary["parameters"],
                                summary["nonzero_parameters"], training, metrics)
    write_card(fp32, card)
    s_summary = model_summary(student)
    card_u = onnx_tools.make_card("digitspot-student-unpruned-fp32", student, window, Quantization(),
                                  s_summary["parameters"], s_summary["nonzero_parameters"], training,
                                  {"parity_onnx_fp32_vs_torch_max_abs": unpruned_parity})
    write_card(unpruned, card_u)
    result = {"fp32_onnx": str(fp32), "torchscript": str(ts), "unpruned_onnx": str(unpruned), **metrics,
              "fp32_bytes": fp32.stat().st_size, "torchscript_bytes": ts.stat().st_size, "model": summary}
    ws.save_config(ws.path("export.json"), "export", result)
    return result


def calibration_windows(ws: Workspace) -> np.ndarray:
    """Training audio only, windowed as serving does. Mostly clean, plus a quarter with mild augmentation
    (pitch, moderate noise): heavily corrupted calibration audio widened the ranges and cost accuracy."""
    split = stage_data(ws)
    rng = np.random.default_rng(ws.recipe.seed + 7)
    n = ws.recipe.calibration_windows
    chosen = [split.train[i] for i in rng.permutation(len(split.train))[:n]]
    clips = fsdd.load_clips(chosen, ws.progress, "loading calibration audio")
    split_at = (3 * len(clips)) // 4
    clean = clean_batch(clips.clips[:split_at], ws.recipe.window_samples)
    mild = AugmentConfig(p_reverb=0.0, snr_db_min=10.0, p_centre=1.0)
    augmented = augment_batch(clips.clips[split_at:], ws.recipe.window_samples, rng, mild)
    return np.concatenate([clean, augmented])


def stage_quantize(ws: Workspace, gate: bool = True) -> dict:
    """FP32 ONNX -> INT8 ONNX + card. The INT8 model replaces the previous one only if its top-1 agrees with
    the FP32 model on at least ``recipe.int8_min_agreement`` of the test windows; ``gate=False`` (LOSO folds,
    never shipped) records a miss instead of failing."""
    fp32 = ws.artifact(f"{SHIPPED_NAME}-fp32.onnx")
    if not fp32.is_file():
        raise MissingInputError(f"{fp32} not found: run `digitspot-train export` first")
    fp32_card = load_card(fp32)
    calib = calibration_windows(ws)
    int8 = ws.artifact(f"{SHIPPED_NAME}.onnx")
    candidate = int8.with_name(f"{int8.name}.candidate")
    try:  # the candidate never outlives this stage: it becomes the INT8 model or is removed
        settings = onnx_tools.quantize_int8(fp32, candidate, calib)
        windows = _test_windows(ws)
        ref = onnx_tools.ort_logits(fp32, windows)
        q = onnx_tools.ort_logits(candidate, windows)
        agreement = float((ref.argmax(1) == q.argmax(1)).mean())
        floor = ws.recipe.int8_min_agreement
        if agreement < floor:
            if gate:
                raise onnx_tools.ExportError(
                    f"the INT8 model's top-1 agrees with FP32 on only {agreement:.1%} of the test windows "
                    f"(< {floor:.0%}): quantization lost accuracy, so {int8} was left as it was; keep the "
                    "offending layer float (nodes_to_exclude in train/onnx_tools.quantize_int8)")
            print(f"note: INT8/FP32 top-1 agreement {agreement:.1%} (< {floor:.0%}); recorded, not fatal: "
                  "this model is not shipped", file=sys.stderr)
        os.replace(candidate, int8)
    finally:
        candidate.unlink(missing_ok=True)
    quant = Quantization(scheme="static-qdq", weight_dtype="int8", activation_dtype="uint8", per_channel=True,
                         op_types=["Conv", "Gemm"], float_layers=list(settings["float_layers"]),
                         calibration=f"{len(calib)} windows of training audio (3/4 clean, 1/4 mildly augmented), "
                                     "Percentile 99.999; front end (STFT and mel in float64, log) and the first "
                                     "convolution stay float")
    card = fp32_card
    card.name = SHIPPED_NAME
    card.quantization = quant
    card.training = {**card.training, "quantization": settings}
    card.metrics = {**card.metrics, "int8_vs_fp32_top1_agreement": agreement,
                    "int8_vs_fp32_max_abs_logit_diff": float(np.max(np.abs(ref - q)))}
    write_card(int8, card)
    result = {"int8_onnx": str(int8), "int8_bytes": int8.stat().st_size, **settings,
              "int8_vs_fp32_top1_agreement": agreement}
    ws.save_config(ws.path("quantize.json"), "quantize", result)
    return result


def timed(fn, *args, **kwargs):
    start = time.monotonic()
    out = fn(*args, **kwargs)
    return out, time.monotonic() - start


# --- evaluation ----------------------------------------------------------------------------------

TARGETS = {  # metric -> minimum, for the shipped INT8 model (issue 2)
    "official_accuracy_int8": 0.995,
    "loso_mean_accuracy_int8": 0.90,
    "pitch_+500c_accuracy_int8": 0.90,
    "white_5db_accuracy_int8": 0.90,
    "pink_5db_accuracy_int8": 0.90,
}


def _condition_subset(clips: ClipSet, n: int) -> ClipSet:
    if not n or n >= len(clips):
        return clips
    idx = np.linspace(0, len(clips) - 1, n).round().astype(int)
    return clips.subset(idx)


def stage_evaluate(ws: Workspace, loso_results: Path | None = None, conditions: bool = True) -> dict:
    """Accuracy of the unpruned FP32, pruned FP32 and INT8 ONNX files, run through the edge classifier."""
    from tqdm import tqdm

    from digitspot.edge.classifier import OnnxDigitClassifier
    from digitspot.train import evaluate as ev

    split = stage_data(ws)
    test = fsdd.load_clips(split.test, ws.progress, "loading test audio")
    labels = test.label_array()
    sr = fsdd.SAMPLE_RATE
    models = {"fp32": ws.path("student-fp32.onnx"), "pruned": ws.artifact(f"{SHIPPED_NAME}-fp32.onnx"),
              "int8": ws.artifact(f"{SHIPPED_NAME}.onnx")}
    for name, p in models.items():
        if not p.is_file():
            raise MissingInputError(f"{p} not found: run export and quantize before evaluate")
    classifiers = {k: OnnxDigitClassifier(p, threads=2) for k, p in models.items()}
    prefix = "official" if ws.recipe.split == "official" else "heldout"
    metrics: dict = {"split": ws.recipe.split, "test_files": len(test)}
    preds_int8 = None
    for name, clf in classifiers.items():
        acc, preds = ev.accuracy(clf, test.clips, labels)
        metrics[f"{prefix}_accuracy_{name}"] = acc
        if name == "int8":
            preds_int8 = preds
    cm = ev.confusion(labels, preds_int8)
    metrics["per_class_int8"] = ev.per_class(cm)
    conds = []
    if conditions:
        subset = _condition_subset(test, ws.recipe.condition_files)
        sub_labels = subset.label_array()
        metrics["condition_files"] = len(subset)
        for cents in ev.PITCH_CENTS:
            conds.append((f"pitch_+{cents}c", f"pitch +{cents} cents",
                          lambda c=cents: ev.pitch_shift(subset.clips, c, sr, seed=c)))
        for colour in ev.NOISE_COLOURS:
            for snr in ev.NOISE_SNR_DB:
                conds.append((f"{colour}_{snr}db", f"{colour} noise {snr} dB SNR",
                              lambda c=colour, s=snr: ev.add_noise(subset.clips, c, s, sr, seed=1000 + s)))
        for key, _desc, make in tqdm(conds, desc="robustness conditions", disable=not ws.progress, leave=False):
            clips = make()
            for name, clf in classifiers.items():
                metrics[f"{key}_accuracy_{name}"] = ev.accuracy(clf, clips, sub_labels)[0]
    if loso_results and Path(loso_results).is_file():
        loso = json.loads(Path(loso_results).read_text())
        metrics["loso_folds_int8"] = {f["speaker"]: f["accuracy_int8"] for f in loso.get("folds", [])}
        metrics["loso_folds_fp32"] = {f["speaker"]: f["accuracy_fp32"] for f in loso.get("folds", [])}
        metrics["loso_fold_seconds"] = {f["speaker"]: f["seconds"] for f in loso.get("folds", [])}
        metrics["loso_seconds"] = loso.get("seconds", 0)
        if loso.get("folds"):
            metrics["loso_mean_accuracy_int8"] = float(np.mean(list(metrics["loso_folds_int8"].values())))
            metrics["loso_mean_accuracy_fp32"] = float(np.mean(list(metrics["loso_folds_fp32"].values())))
            metrics["loso_recipe"] = loso.get("preset")
            metrics["loso_complete"] = bool(loso.get("complete"))
    if ws.recipe.split == "official":
        metrics["targets"] = {k: {"minimum": v, "measured": metrics.get(k),
                                  "met": (metrics.get(k) is not None and metrics[k] >= v)}
                              for k, v in TARGETS.items()}
    png = ws.artifact("confusion-int8.png")
    ev.plot_confusion(cm, png, f"INT8 model, {ws.recipe.split} test ({len(test)} files)")
    # The cards carry the metrics (the model files are unchanged, so their sha256 is too).
    for name, path in models.items():
        card = load_card(path)
        card.metrics = {**{k: v for k, v in card.metrics.items() if k.startswith(("parity", "int8_vs"))},
                        **metrics, "evaluated_model": name}
        write_card(path, card)
    int8_card = load_card(models["int8"])
    report = render_report(ws, metrics, conds, int8_card, models, png)
    from digitspot.edge.card import write_bytes_atomic

    write_bytes_atomic(ws.artifact("report.md"), report.encode("utf-8"))
    ws.save_config(ws.path("evaluate.json"), "evaluate", {"metrics": metrics})
    if ws.path("all.json").is_file():  # a re-evaluation keeps the timings of the run that made the model
        append_timings(ws, json.loads(ws.path("all.json").read_text())["stage_seconds"])
    make_readable(ws)
    return metrics


def make_readable(ws: Workspace) -> None:
    """Atomic writes create files as 0600; shipped models and reports must be readable by the daemon's user."""
    import os

    for name in (f"{SHIPPED_NAME}.onnx", f"{SHIPPED_NAME}.onnx.json", f"{SHIPPED_NAME}-fp32.onnx",
                 f"{SHIPPED_NAME}-fp32.onnx.json", f"{SHIPPED_NAME}.pt", "report.md", "confusion-int8.png"):
        path = ws.artifact(name)
        if path.is_file():
            os.chmod(path, 0o644)


def append_timings(ws: Workspace, timings: dict) -> None:
    from digitspot.edge.card import write_bytes_atomic

    report = ws.artifact("report.md")
    intro = f"`digitspot-train all` (preset `{ws.recipe.preset}`) on this machine, wall-clock seconds per stage:"
    section = ["", "## How long it took", "", intro, "", "| stage | seconds |", "|---|---|"]
    section += [f"| {k} | {v:.0f} |" for k, v in timings.items()] + [""]
    write_bytes_atomic(report, (report.read_text(encoding="utf-8") + "\n".join(section) + "\n").encode("utf-8"))
    make_readable(ws)


def render_report(ws: Workspace, m: dict, conds: list, card, models: dict, png: Path) -> str:
    from digitspot.train.evaluate import pct

    prefix = "official" if ws.recipe.split == "official" else "heldout"
    sizes = {k: p.stat().st_size for k, p in models.items()}
    ts = ws.artifact(f"{SHIPPED_NAME}.pt")
    lines = [
        "# digitspot model report", "",
        (f"Generated by `digitspot-train evaluate` ({card.created_at}, git `{card.git_commit}`, recipe "
        f"`{ws.recipe.preset}`). Every figure is measured by running the exported ONNX file through "
        "`edge.classifier.OnnxDigitClassifier`, the daemon's own code path."), "",
        "## The model", "",
        (f"- Student DS-CNN: {card.parameter_count} parameters, {card.nonzero_parameter_count} non-zero after "
        f"40% global magnitude pruning of conv/linear weights."),
        f"- Files: INT8 ONNX {sizes['int8'] / 1024:.1f} KB, pruned FP32 ONNX {sizes['pruned'] / 1024:.1f} KB"
        + (f", TorchScript {ts.stat().st_size / 1024:.1f} KB" if ts.is_file() else "") + ".",
        (f"- Parity ONNX FP32 vs PyTorch: max |logit diff| "
        f"{card.metrics.get('parity_onnx_fp32_vs_torch_max_abs', float('nan')):.2e} over "
        f"{card.metrics.get('parity_windows', 0)} test windows; INT8 vs FP32 top-1 agreement "
        f"{pct(card.metrics.get('int8_vs_fp32_top1_agreement'))}."),
        (f"- Quantization: {card.quantization.scheme}, per-channel {card.quantization.weight_dtype} weights for "
        f"{', '.join(card.quantization.op_types)}; {card.quantization.calibration}."), "",
        f"## Accuracy on the {ws.recipe.split} test set ({m['test_files']} files)", "",
        "| model | accuracy |", "|---|---|",
        f"| FP32 student (distilled, unpruned) | {pct(m.get(prefix + '_accuracy_fp32'))} |",
        f"| FP32 pruned (40% sparse) | {pct(m.get(prefix + '_accuracy_pruned'))} |",
        f"| INT8 (shipped) | {pct(m.get(prefix + '_accuracy_int8'))} |", "",
    ]
    if conds:
        lines += [f"## Robustness ({m.get('condition_files')} test files per condition)", "",
                  ("Pitch shifts use audiomentations `PitchShift` (duration kept); noise uses audiomentations "
                  "`AddColorNoise` (white: 0 dB/octave, pink: -3.01 dB/octave) at the SNR relative to the "
                  "recording's RMS. Both differ from the training augmentation."), "",
                  "| condition | FP32 | pruned | INT8 |", "|---|---|---|---|"]
        for key, desc, _ in conds:
            lines.append(f"| {desc} | {pct(m.get(key + '_accuracy_fp32'))} | {pct(m.get(key + '_accuracy_pruned'))}"
                         f" | {pct(m.get(key + '_accuracy_int8'))} |")
        lines.append("")
    lines += ["## Leave-one-speaker-out", ""]
    if m.get("loso_folds_int8"):
        lines += [f"`digitspot-train loso` reran the recipe (preset `{m.get('loso_recipe')}`) once per held-out "
                  "speaker; each fold is tested on all takes of the speaker it never saw."
                  + ("" if m.get("loso_complete") else " Not all folds finished: the mean covers those listed."),
                  "", "| held-out speaker | FP32 (unpruned) | INT8 | fold wall time |", "|---|---|---|---|"]
        for spk, acc in m["loso_folds_int8"].items():
            lines.append(f"| {spk} | {pct(m['loso_folds_fp32'].get(spk))} | {pct(acc)} | "
                         f"{m['loso_fold_seconds'].get(spk, 0) / 60:.1f} min |")
        lines += [(f"| **mean** | **{pct(m.get('loso_mean_accuracy_fp32'))}** | "
                   f"**{pct(m.get('loso_mean_accuracy_int8'))}** | total {m.get('loso_seconds', 0) / 60:.1f} min |"),
                  ""]
    else:
        lines += ["Not measured for this report: run `make loso` (then `digitspot-train evaluate`).", ""]
    lines += ["## Per-class (INT8)", "", f"![confusion matrix]({png.name})", "",
              "| digit | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for row in m["per_class_int8"]:
        lines.append(f"| {row['digit']} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | "
                     f"{row['support']} |")
    lines.append("")
    if m.get("targets"):
        lines += ["## Targets (issue 2, shipped INT8 model)", "", "| metric | target | measured | met |",
                  "|---|---|---|---|"]
        for k, t in m["targets"].items():
            lines.append(f"| {k} | >= {pct(t['minimum'])} | {pct(t['measured'])} | "
                         f"{'yes' if t['met'] else 'no' if t['measured'] is not None else 'not measured'} |")
        lines.append("")
    lines += [("Training data: FSDD v1.0.10 (Zohar Jackson et al., CC BY-SA 4.0) plus synthetic espeak-ng/flite "
              "voices; see the card's `training` field for the full recipe."), ""]
    return "\n".join(lines)


def run_fold(base: Workspace, speaker: str, threads: int = 1) -> dict:
    """One LOSO fold: the whole recipe with ``speaker`` held out, in ``<run-dir>/<speaker>``.

    A top-level function so a worker process can run it (``stage_loso`` with ``jobs > 1``)."""
    from dataclasses import replace

    torch.set_num_threads(max(1, threads))
    ws = replace(base, recipe=replace(base.recipe, split=f"speaker:{speaker}"),
                 run_dir=base.run_dir / speaker, out_dir=base.run_dir / speaker)
    fold_start = time.monotonic()
    stage_fit(ws)
    stage_distill(ws)
    stage_prune(ws)
    parity = stage_export(ws, gate=False)["parity_onnx_fp32_vs_torch_max_abs"]
    agreement = stage_quantize(ws, gate=False)["int8_vs_fp32_top1_agreement"]
    m = stage_evaluate(ws, conditions=False)
    return {"speaker": speaker, "accuracy_int8": m["heldout_accuracy_int8"],
            "accuracy_pruned": m["heldout_accuracy_pruned"], "accuracy_fp32": m["heldout_accuracy_fp32"],
            "test_files": m["test_files"], "parity_onnx_fp32_vs_torch_max_abs": parity,
            "int8_vs_fp32_top1_agreement": agreement,
            "seconds": round(time.monotonic() - fold_start, 1)}


@contextlib.contextmanager
def sigterm_raises_systemexit():
    """Turn SIGTERM into ``SystemExit(143)`` while the block runs, so ``except``/``finally`` clean-up runs.

    Python's default SIGTERM action kills the process on the spot: a parent killed that way leaves its
    worker processes running. Only the main thread may set handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: die with the parent even if it is SIGKILLed (Linux ``PR_SET_PDEATHSIG``).

    A fold left behind by a killed parent trains for up to half an hour for nobody and slows whatever
    runs next on the same cores."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def stage_loso(base: Workspace, speakers: list[str] | None = None, jobs: int = 1, threads: int = 1) -> dict:
    """Rerun the recipe once per held-out speaker; results accumulate in ``<run-dir>/loso.json``.

    ``jobs`` folds run at once, each in its own process with ``threads`` torch threads: on a 2-core
    machine two single-threaded folds do twice the work of one fold on two threads (whose OpenMP
    threads mostly wait on each other at this model size), so the preset can give each fold twice
    the training time within the same hour."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    utterances = fsdd.scan_fsdd(base.data_dir)
    all_speakers = fsdd.speakers_of(utterances)
    for s in speakers or []:
        fsdd.make_split(utterances, f"speaker:{s}")  # fails with one line on an unknown speaker
    speakers = speakers or all_speakers
    results = {"preset": base.recipe.preset, "folds": [], "complete": False, "speakers": speakers,
               "jobs": jobs}
    out = base.path("loso.json")
    base.run_dir.mkdir(parents=True, exist_ok=True)
    if base.recipe.use_synth:  # fill the cache once here, not in several workers at the same time
        synth.generate(base.recipe.synth, base.cache_dir, progress=base.progress)
    start = time.monotonic()

    def record(fold: dict) -> None:
        results["folds"].append(fold)
        results["folds"].sort(key=lambda f: speakers.index(f["speaker"]))
        results["mean_accuracy_int8"] = float(np.mean([f["accuracy_int8"] for f in results["folds"]]))
        results["seconds"] = round(time.monotonic() - start, 1)
        write_json_atomic(out, results)
        print(f"loso fold {fold['speaker']}: INT8 {fold['accuracy_int8']:.3f} ({fold['seconds']:.0f} s)",
              file=sys.stderr)

    if jobs <= 1:
        for spk in speakers:
            record(run_fold(base, spk, threads))
    else:
        # spawn, not fork: a forked child would inherit torch's OpenMP state from the parent.
        with sigterm_raises_systemexit(), ProcessPoolExecutor(
            max_workers=jobs, mp_context=get_context("spawn"), initializer=exit_with_parent, initargs=(os.getpid(),)
        ) as pool:
            futures = [pool.submit(run_fold, base, spk, threads) for spk in speakers]
            try:
                for future in as_completed(futures):
                    record(future.result())
            except BaseException:
                # A failed fold, Ctrl-C or SIGTERM (`kill`, systemd, a CI timeout) ends the run now: running
                # folds are stopped and queued ones dropped instead of training on for the rest of the hour
                # with nobody to record them; finished folds stay recorded in loso.json.
                workers = list((pool._processes or {}).values())  # private: no public handle; shutdown clears it
                pool.shutdown(wait=False, cancel_futures=True)
                for process in workers:
                    process.terminate()
                raise
    results["complete"] = set(speakers) == set(all_speakers)
    base.save_config(out, "loso", results)
    write_json_atomic(out, {**json.loads(out.read_text()), **results})
    return results
