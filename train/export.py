"""The shipping stages: ``export`` (pruned student -> FP32 ONNX, TorchScript) and ``quantize`` (-> INT8 ONNX).

Each writes its model and the model's card together (``digitspot.edge.card.write_card``), and refuses to
ship a model that disagrees with the one it came from: ONNX against PyTorch logits, INT8 against FP32 top-1.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

from digitspot.edge.card import Quantization, load_card, write_card
from digitspot.edge.errors import MissingInputError
from digitspot.train import data as fsdd
from digitspot.train import onnx_tools
from digitspot.train.augment import AugmentConfig, augment_batch, clean_batch
from digitspot.train.stages import stage_data, windowed_test_set
from digitspot.train.training import load_checkpoint, model_summary
from digitspot.train.workspace import SHIPPED_NAME, Workspace

STAGE_RECORDS = (("data", "data.json"), ("synth", "synth.json"), ("fit", "teacher.pt.json"),
                 ("distill", "student.pt.json"), ("prune", "pruned.pt.json"))


def training_summary(ws: Workspace) -> dict:
    """What the card says about how the model was made: the recipe and each stage's outcome."""
    summary = {"recipe": ws.recipe.to_dict(), "command": ws.command(), "data_dir": ws.data_dir, "stages": {}}
    for stage, name in STAGE_RECORDS:
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

    ``gate=False`` is for LOSO folds: their models only measure accuracy and are never shipped, so a parity
    miss is recorded instead of ending an hour-long LOSO run."""
    r = ws.recipe
    model, _ = load_checkpoint(ws.path("pruned.pt"))
    student, _ = load_checkpoint(ws.path("student.pt"))
    window = r.window_samples
    windows = windowed_test_set(ws)
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
    # rounding in dead channels, which BatchNorm scales by ~300 where the running variance is ~0, can
    # exceed the tolerance there).
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
    training = training_summary(ws)
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
    (pitch, moderate noise): heavily corrupted calibration audio widens the activation ranges and costs
    accuracy."""
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
    """FP32 ONNX -> INT8 ONNX + card. The INT8 model replaces the current one only if its top-1 agrees with
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
        windows = windowed_test_set(ws)
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
