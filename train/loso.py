"""Leave-one-speaker-out: the whole recipe once per held-out speaker, folds in parallel worker processes.

Each fold trains, exports, quantizes and evaluates a model in ``<run-dir>/<speaker>`` with that speaker's
every take as its test set; the folds' accuracies accumulate in ``<run-dir>/loso.json`` as they finish.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import torch

from digitspot.edge.atomic_write import write_json_atomic
from digitspot.train import data as fsdd
from digitspot.train import synth
from digitspot.train.evaluate import stage_evaluate
from digitspot.train.export import stage_export, stage_quantize
from digitspot.train.stages import stage_distill, stage_fit, stage_prune
from digitspot.train.workspace import Workspace


def run_fold(base: Workspace, speaker: str, threads: int = 1) -> dict:
    """One LOSO fold: the whole recipe with ``speaker`` held out, in ``<run-dir>/<speaker>``.

    A top-level function so a worker process can run it (``stage_loso`` with ``jobs > 1``)."""
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
        run_folds_in_workers(base, speakers, jobs, threads, record)
    results["complete"] = set(speakers) == set(all_speakers)
    base.save_config(out, "loso", results)
    write_json_atomic(out, {**json.loads(out.read_text()), **results})
    return results


def run_folds_in_workers(base: Workspace, speakers: list[str], jobs: int, threads: int, record) -> None:
    """``jobs`` worker processes run the folds; ``record`` is called in this process as each one ends."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

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
