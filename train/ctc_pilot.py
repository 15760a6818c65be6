"""End-to-end pilot of the streaming CTC recipe: teacher, distilled student, pruned student, INT8, each
exported to ONNX and measured through the reference streaming decoder on FSDD's official test takes.

    python -m digitspot.train.ctc_pilot --out runs/ctc-pilot [--minutes-scale 1.0] [--threads 2]

Material: FSDD's official training takes cut to their speech (``fsdd_strings``), the speech bank's training
clips when its manifest is in the cache, the cached RIR bank when present (else synthetic decays),
``voice_shift`` for formant/pitch perturbation. Validation: FSDD takes 45-49 of the training speakers and 5%
of the bank's training clips, both kept out of training. Test: FSDD's official test takes (isolated, and the
strings benchmark's sets) and, with a bank, its held-out clips. Writes ``results.json`` (every figure), the
checkpoints, the ONNX models and their streaming card fields into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MODELS = ("teacher-fp32", "student-fp32", "pruned-fp32", "pruned-int8", "pruned-int8-stem")


@dataclass
class PilotConfig:
    seed: int = 0
    window_samples: int = 8000
    step_samples: int = 800
    min_confidence: float = 0.5
    teacher_minutes: float = 12.0
    student_minutes: float = 11.0
    prune_steps_per_stage: int = 15
    prune_recovery_steps: int = 40
    batch_size: int = 16
    calibration_windows: int = 256
    extra: dict = field(default_factory=dict)


def _load_material(data_dir: str | None, cache_dir: Path, log) -> tuple:
    from digitspot.train import data as fsdd
    from digitspot.train.ctc_evaluate import benchmark_string_streams
    from digitspot.train.ctc_scenes import RoomSource, add_bank, pool_from_takes

    split = fsdd.make_split(fsdd.scan_fsdd(data_dir), "official")
    test = fsdd.load_clips(split.test, progress=False)
    pool, val_pool = pool_from_takes(split.train), pool_from_takes(split.validation)
    info: dict = {"fsdd": split.summary()}
    bank = None
    manifest = cache_dir / "speech_bank" / "manifest-full.jsonl"
    if manifest.is_file():
        from digitspot.train.speech_bank import load_speech_bank

        bank = load_speech_bank(cache_dir, "full")
        info["speech_bank"] = add_bank(pool, bank, validation=val_pool)
    else:
        info["speech_bank"] = f"absent ({manifest} not found)"
    rooms = RoomSource()
    try:
        from digitspot.train import rooms as room_mod

        path = room_mod.bank_path(cache_dir)
        if path.exists():
            rooms = RoomSource(room_mod.RoomBank.load(path, room_mod.RoomBankConfig()))
    except Exception as exc:  # noqa: BLE001 - a pilot runs with the fallback reverb; the reason is recorded
        info["rooms_error"] = repr(exc)
    info["rooms"] = rooms.kind
    from digitspot.train.voice_shift import random_voice_shift

    def shift(x, rng):
        return random_voice_shift(x, rng)[0]
    info["voice_shift"] = "voice_shift.random_voice_shift"
    info["pool"] = pool.summary()
    log(f"material: {json.dumps(info)}")
    test_takes = [(a, int(d), Path(p).stem) for a, d, p in zip(test.clips, test.labels, test.sources)]
    string_sets = benchmark_string_streams(split.test)
    info["test_strings"] = "fsdd_strings.evaluation_sets"
    return pool, val_pool, rooms, shift, test_takes, string_sets, bank, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/ctc-pilot")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default="cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes-scale", type=float, default=1.0, help="multiplies every time budget")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiplies pruning step counts")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from digitspot.train.ctc_evaluate import bank_heldout_streams, evaluate_bank, evaluate_model
    from digitspot.train.ctc_scenes import SceneConfig, SceneMaker
    from digitspot.train.ctc_training import (
        CtcLoopConfig,
        CtcPruneConfig,
        CtcValidation,
        calibration_windows,
        log,
        prune_ctc,
        save_frame_checkpoint,
        sparsity,
        train_ctc,
    )
    from digitspot.train.frame_export import (
        export_frame_onnx,
        export_frame_torchscript,
        quantize_frame_model,
        streaming_card_fields,
        time_per_call,
    )
    from digitspot.train.frame_model import FrameNet, count_parameters, student_config, teacher_config
    from digitspot.train.stream_decode_reference import OnnxFrameModel, StreamSettings

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = PilotConfig()
    cfg = PilotConfig(teacher_minutes=base.teacher_minutes * args.minutes_scale,
                      student_minutes=base.student_minutes * args.minutes_scale,
                      prune_steps_per_stage=max(1, int(base.prune_steps_per_stage * args.steps_scale)),
                      prune_recovery_steps=max(1, int(base.prune_recovery_steps * args.steps_scale)))
    results: dict = {"config": asdict(cfg), "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def save():
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))

    pool, val_pool, rooms, shift, test_takes, string_sets, bank, info = _load_material(
        args.data_dir or os.environ.get("FSDD_DIR"), Path(args.cache_dir), log)
    results["material"] = info
    scenes = SceneConfig()
    maker = SceneMaker(pool, scenes, rooms=rooms, voice_shift=shift)
    teacher, student = FrameNet(teacher_config()), FrameNet(student_config())
    val = CtcValidation(val_pool, scenes, student)
    results["architecture"] = {"teacher_parameters": count_parameters(teacher),
                               "student_parameters": count_parameters(student), **student.geometry(),
                               "teacher_config": teacher.cfg.to_dict(), "student_config": student.cfg.to_dict()}
    save()

    t_cfg = CtcLoopConfig(max_steps=100000, max_minutes=cfg.teacher_minutes, batch_size=cfg.batch_size, lr=3e-3,
                          validate_every=100000, validate_every_minutes=2.5, seed=cfg.seed)
    results["teacher_training"] = asdict(train_ctc(teacher, maker, val, t_cfg, "teacher"))
    save_frame_checkpoint(out / "teacher.pt", teacher, {"history": results["teacher_training"]})
    save()

    s_cfg = CtcLoopConfig(max_steps=100000, max_minutes=cfg.student_minutes, batch_size=cfg.batch_size, lr=4e-3,
                          validate_every=100000, validate_every_minutes=2.5, seed=cfg.seed + 1)
    results["student_training"] = asdict(train_ctc(student, maker, val, s_cfg, "student", teacher=teacher))
    save_frame_checkpoint(out / "student.pt", student, {"history": results["student_training"]})
    save()

    pruned = copy.deepcopy(student)
    p_cfg = CtcPruneConfig(steps_per_stage=cfg.prune_steps_per_stage, recovery_steps=cfg.prune_recovery_steps,
                           batch_size=cfg.batch_size)
    results["pruning"] = prune_ctc(pruned, teacher, maker, val, p_cfg)
    results["pruning_sparsity"] = sparsity(pruned)
    save_frame_checkpoint(out / "pruned.pt", pruned, {"pruning": results["pruning"]})
    save()

    # export, parity, INT8
    window = cfg.window_samples
    rng = np.random.default_rng(3)
    parity_audio = calibration_windows(maker, 16, window, seed=5)
    parity_audio[0] = 0.0  # digital silence, the stream's first window
    exports = {}
    for name, model in (("teacher", teacher), ("student", student), ("pruned", pruned)):
        exports[name] = export_frame_onnx(model, out / f"{name}-fp32.onnx", window, parity_audio)
    calib = calibration_windows(maker, cfg.calibration_windows, window, seed=9)
    check = calibration_windows(maker, 64, window, seed=13)
    exports["int8"] = quantize_frame_model(out / "pruned-fp32.onnx", out / "pruned-int8.onnx", calib, check)
    exports["int8_stem"] = quantize_frame_model(out / "pruned-fp32.onnx", out / "pruned-int8-stem.onnx", calib,
                                                check, stem_float=False)
    export_frame_torchscript(pruned, out / "pruned.torchscript.pt", window)
    results["export"] = exports
    results["card_fields"] = streaming_card_fields(pruned, window, cfg.step_samples, cfg.min_confidence)
    (out / "card_fields.json").write_text(json.dumps(results["card_fields"], indent=2))
    results["timing"] = {name: time_per_call(out / f"{name}.onnx", window) for name in
                         MODELS}
    save()
    del rng

    settings = StreamSettings(window_samples=window, step_samples=cfg.step_samples,
                              lookahead_samples=pruned.right_context_samples,
                              frame_hop_samples=pruned.frame_hop_samples,
                              frame_length_samples=pruned.frame_length_samples, min_confidence=cfg.min_confidence)
    results["stream_settings"] = settings.to_dict()
    results["evaluation"] = {}
    bank_streams = bank_heldout_streams(bank) if bank is not None else None
    for name in MODELS:
        t0 = time.monotonic()
        results["evaluation"][name] = evaluate_model(OnnxFrameModel(out / f"{name}.onnx", threads=args.threads),
                                                     test_takes, settings, string_sets)
        if bank_streams:
            results["evaluation"][name]["bank_heldout"] = evaluate_bank(
                OnnxFrameModel(out / f"{name}.onnx", threads=args.threads), bank_streams, settings)
        ev = results["evaluation"][name]
        log(f"{name}: isolated {ev['isolated']['exact']:.3f} " + " ".join(
            f"gap{g} {ev[f'strings_gap_{g}ms']['exact']:.3f}" for g in (0, 50, 100, 200))
            + f" delay median {ev['isolated']['delay_ms_median']:.0f} ms ({time.monotonic() - t0:.0f} s)")
        save()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
