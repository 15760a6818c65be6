"""The training stages of the recipe as plain functions; ``digitspot.train.cli`` wraps each as a subcommand.

``data`` checks FSDD and writes the split, ``synth`` makes (or reuses) the synthetic voices, ``fit`` trains
the teacher, ``distill`` the student, ``prune`` sparsifies it. Export, quantization and evaluation follow
in ``digitspot.train.export`` and ``digitspot.train.evaluate``. Each stage reads its inputs from the run
directory, so it can run on its own after the stages before it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from digitspot.edge.atomic_write import write_json_atomic
from digitspot.train import data as fsdd
from digitspot.train import synth
from digitspot.train.augment import clean_batch
from digitspot.train.data import ClipSet, Split
from digitspot.train.training import (
    ValidationSet,
    build_model,
    load_checkpoint,
    model_summary,
    prune_iteratively,
    save_checkpoint,
    train_loop,
)
from digitspot.train.workspace import Workspace

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
        "train": [str(u.path) for u in split.train], "validation": [str(u.path) for u in split.validation],
        "test": [str(u.path) for u in split.test]}})
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
    """FSDD training takes plus the synthetic voices, the validation set, and their sizes for the configs."""
    split = stage_data(ws)
    train = fsdd.load_clips(split.train, ws.progress, "loading training audio")
    val_clips = fsdd.load_clips(split.validation, ws.progress, "loading validation audio")
    synthetic = stage_synth(ws)
    info = {"fsdd_train_clips": len(train), "synthetic_clips": len(synthetic), "validation_clips": len(val_clips)}
    return train.extend(synthetic), ValidationSet(val_clips, ws.recipe.augment), info


def windowed_test_set(ws: Workspace) -> np.ndarray:
    """The split's test files, windowed as serving does: the windows the parity and agreement checks use."""
    split = stage_data(ws)
    test = fsdd.load_clips(split.test, ws.progress, "loading test audio")
    return clean_batch(test.clips, ws.recipe.window_samples)


# --- training ------------------------------------------------------------------------------------


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
    """Iterative global magnitude pruning of the student, fine-tuned with the teacher after each step."""
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
