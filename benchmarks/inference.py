"""Inference latency of one 1-s window: INT8 ONNX (shipped), FP32 ONNX, TorchScript and eager PyTorch.

Each runtime gets one thread (as the daemon runs), a warm-up, then ``runs`` timed calls on real
1-s windows of FSDD test audio (cycled), each timed with ``perf_counter_ns`` around the call alone;
the runtimes take turns in ``BLOCKS`` blocks (100 calls each in a full run) so that load from elsewhere
hits them alike. Besides the per-call percentiles, each runtime gets the median of its blocks' medians:
the figure the x86 gate uses, because it does not flip between runs of one model as a p99 does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from digitspot.benchmarks.onnx_graph import count_macs, parameter_counts
from digitspot.benchmarks.stats import median_of_block_medians, summarize
from digitspot.edge.audio_io import fit_to_window
from digitspot.edge.card import ModelCard, card_path_for, load_card

BLOCKS = 20  # turns each runtime takes (see _time_interleaved); 2000 runs make blocks of 100 calls


def block_size(runs: int, blocks: int = BLOCKS) -> int:
    """Timed calls per runtime before switching to the next, so that ``runs`` calls make ``blocks`` blocks."""
    return max(1, math.ceil(runs / blocks))


def onnx_runner(model: Path, card: ModelCard) -> Callable[[np.ndarray], Any]:
    """The daemon's own classifier object, timed at its ``logits`` call (session.run + array checks).

    A model without its own card (e.g. an FP32 export shipped only for comparison) runs in a bare
    onnxruntime session with the daemon's options and the shipped model's card for names and window.
    """
    from digitspot.edge.classifier import OnnxDigitClassifier

    if card_path_for(model).is_file():
        return OnnxDigitClassifier(model, threads=1, verify=True).logits
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    return lambda x: session.run([card.output_name], {card.input_name: x})


def torch_runners(torchscript: Path, card_training: dict) -> dict[str, Any]:
    """TorchScript and eager runners, or the reason each is skipped (no torch on a Pi, no file, ...)."""
    try:
        import torch
    except ImportError:
        return {"torchscript": "skipped: torch is not installed (edge install)",
                "eager": "skipped: torch is not installed (edge install)"}
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process
    out: dict[str, Any] = {}
    if not torchscript.is_file():
        return {"torchscript": f"skipped: {torchscript} not found", "eager": f"skipped: {torchscript} not found"}
    scripted = torch.jit.load(str(torchscript), map_location="cpu").eval()

    def run_scripted(x: np.ndarray):
        with torch.inference_mode():
            return scripted(torch.from_numpy(x))

    out["torchscript"] = run_scripted
    # Eager: the student architecture from train.model with the TorchScript module's weights (a traced
    # module keeps the original parameter names). Needs the train package and the card's student config.
    try:
        from digitspot.train.model import build_student

        training = card_training or {}
        student_cfg = (training.get("student") or (training.get("recipe") or {}).get("student_arch", {})
                       .get("kwargs") or {})
        # every architecture argument the recipe recorded (channels, blocks, downsample_blocks, ...)
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in student_cfg.items()}
        eager = build_student(specaugment=False, **kwargs).eval()
        missing, _unexpected = eager.load_state_dict(scripted.state_dict(), strict=False)
        if missing:
            raise ValueError(f"weights missing for {len(missing)} tensors, e.g. {missing[0]}")

        def run_eager(x: np.ndarray):
            with torch.inference_mode():
                return eager(torch.from_numpy(x))

        probe = (np.random.default_rng(0).standard_normal((1, 8000)) * 0.1).astype(np.float32)
        if probe.shape[1] != int(getattr(eager.frontend_cfg, "window_samples", 8000)):
            probe = np.zeros((1, eager.frontend_cfg.window_samples), dtype=np.float32)
        difference = float((run_eager(probe) - run_scripted(probe)).abs().max())
        if difference > 1e-3:
            raise ValueError(f"eager and TorchScript logits differ by {difference:.3g}")
        out["eager"] = run_eager
    except Exception as exc:  # noqa: BLE001  any mismatch: eager is not comparable; say why, do not guess
        out["eager"] = f"skipped: cannot rebuild the eager model ({type(exc).__name__}: {exc})"
    return out


def _time_interleaved(runners: dict[str, Callable[[np.ndarray], Any]], windows: np.ndarray, runs: int,
                      warmup: int, block: int) -> dict[str, np.ndarray]:
    """Time every runtime ``runs`` times, round-robin in blocks of ``block`` calls.

    Each runtime stays warm within its block, and a burst of load from elsewhere on the machine lands on
    all runtimes alike instead of on whichever happened to be running (they would otherwise run one
    after the other, ~1 s each).
    """
    batches = [w[None, :] for w in windows]
    for fn in runners.values():
        for i in range(warmup):
            fn(batches[i % len(batches)])
    times = {label: np.empty(runs, dtype=np.float64) for label in runners}
    with click.progressbar(range(0, runs, block), label=f"  {', '.join(runners)} (interleaved)",
                           file=click.get_text_stream("stderr")) as bar:
        for start in bar:
            for label, fn in runners.items():
                out = times[label]
                for i in range(start, min(start + block, runs)):
                    x = batches[i % len(batches)]
                    t0 = time.perf_counter_ns()
                    fn(x)
                    out[i] = (time.perf_counter_ns() - t0) / 1e6
    return times


def run_inference(models: dict[str, Path], windows_audio: list[np.ndarray], *, runs: int, warmup: int,
                  torchscript: Path | None) -> dict[str, Any]:
    """Latency per runtime plus size figures per ONNX model. ``models``: label -> ONNX path."""
    block = block_size(runs)
    results: dict[str, Any] = {"runs": runs, "warmup": warmup, "threads": 1, "interleave_block": block,
                               "runtimes": {}, "models": {}}
    window_samples = None
    card_training: dict = {}
    shipped_card: ModelCard | None = None
    runners: dict[str, Callable[[np.ndarray], Any]] = {}
    sources: dict[str, str] = {}
    for label, path in models.items():
        if not path.is_file():
            results["runtimes"][label] = {"skipped": f"{path} not found"}
            continue
        if card_path_for(path).is_file() or shipped_card is None:
            card = load_card(path, verify=True)
        else:
            card = shipped_card  # no card of its own: same architecture and I/O as the shipped model
        shipped_card = shipped_card or card
        window_samples = card.window_samples
        card_training = card_training or card.training
        runners[label], sources[label] = onnx_runner(path, card), str(path)
        size = parameter_counts(path)
        size.update(count_macs(path, card.input_name, card.window_samples))
        size.update({"has_own_card": card_path_for(path).is_file(),
                     "card_parameter_count": card.parameter_count,
                     "card_nonzero_parameter_count": card.nonzero_parameter_count,
                     "quantization": card.quantization.scheme, "sha256": card.sha256, "card_name": card.name})
        results["models"][label] = size
    if torchscript is not None and window_samples:
        for label, runner in torch_runners(torchscript, card_training).items():
            if isinstance(runner, str):
                results["runtimes"][label] = {"skipped": runner}
            else:
                runners[label], sources[label] = runner, str(torchscript)
        if torchscript.is_file():
            results["models"]["torchscript"] = {"file_size_bytes": torchscript.stat().st_size}
    if runners:
        windows = np.stack([fit_to_window(a, window_samples) for a in windows_audio]).astype(np.float32)
        for label, times in _time_interleaved(runners, windows, runs, warmup, block).items():
            results["runtimes"][label] = {"model": sources[label], "latency_ms": summarize(times),
                                          "block_median_ms": median_of_block_medians(times, block),
                                          "samples_ms": [round(t, 4) for t in times.tolist()]}
    order = list(models) + ["torchscript", "eager"]
    results["runtimes"] = {k: results["runtimes"][k] for k in order if k in results["runtimes"]}
    return results
