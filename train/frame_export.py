"""Export of frame models: ONNX (front end in the graph), parity, static INT8, TorchScript, the card's streaming
fields, and the per-call time of the serving window.

The ONNX and INT8 steps are those of ``digitspot.train.onnx_tools`` (dynamo exporter, opset 18, one file;
QDQ per-channel Conv/Gemm after ``quant_pre_process``, the stem convolution kept float): they take any
module mapping ``audio`` [batch, window] to ``logits``, here [batch, n_frames, 12]. What differs for a
frame model is checked here: parity over every frame, INT8 agreement as frame-argmax agreement, and the
card fields the daemon's streaming loop reads.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from digitspot.train.frame_model import LABELS, FrameNet
from digitspot.train.onnx_tools import (
    PARITY_TOLERANCE,
    ExportError,
    export_onnx,
    export_torchscript,
    ort_logits,
    quantize_int8,
    torch_logits,
)

MODEL_KIND = "ctc-stream"


def export_frame_onnx(model: FrameNet, path: str | Path, window: int, parity_audio: np.ndarray) -> dict:
    """Export and check: max |ONNX - PyTorch| over every frame and label of ``parity_audio`` [n, window]."""
    export_onnx(model.eval(), path, window)
    onnx_out = ort_logits(path, parity_audio)
    torch_out = torch_logits(model, parity_audio)
    if onnx_out.shape != torch_out.shape:
        raise ExportError(f"ONNX output shape {onnx_out.shape} differs from PyTorch {torch_out.shape}")
    diff = float(np.max(np.abs(onnx_out - torch_out)))
    if diff > PARITY_TOLERANCE:
        raise ExportError(f"ONNX/PyTorch logits differ by {diff:.2e} > {PARITY_TOLERANCE}: the export is wrong")
    return {"max_abs_diff": diff, "windows": len(parity_audio), "shape": list(onnx_out.shape)}


def quantize_all_convolutions(fp32_path: str | Path, int8_path: str | Path, calibration: np.ndarray) -> dict:
    """``onnx_tools.quantize_int8`` without its float stem: every Conv INT8 (QDQ, per-channel, percentile
    calibration after ``quant_pre_process``). A frame model's stem (n_mels x channels x kernel) is most of its
    weights, so keeping it float costs ~100 KB of the 300 KB budget; whether quantizing it costs accuracy is
    measured by the caller."""
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from digitspot.edge.atomic_write import write_bytes_atomic
    from digitspot.train.onnx_tools import CalibrationReader

    with tempfile.TemporaryDirectory(prefix="digitspot-quant-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), CalibrationReader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, op_types_to_quantize=["Conv", "Gemm"], weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.Percentile)
        write_bytes_atomic(Path(int8_path), out.read_bytes())
    return {"quant_format": "QDQ", "per_channel": True, "op_types_to_quantize": ["Conv", "Gemm"],
            "weight_type": "QInt8", "activation_type": "QUInt8", "calibrate_method": "Percentile (99.999)",
            "calibration_windows": len(calibration), "pre_process": "quant_pre_process", "nodes_excluded": [],
            "float_layers": []}


def quantize_frame_model(fp32_path: str | Path, int8_path: str | Path, calibration: np.ndarray,
                         check_audio: np.ndarray, stem_float: bool = True) -> dict:
    """Static INT8 and how far it moved: frame-argmax agreement with FP32 and mean |logit difference|."""
    if stem_float:
        settings = quantize_int8(fp32_path, int8_path, calibration)
    else:
        settings = quantize_all_convolutions(fp32_path, int8_path, calibration)
    fp32, int8 = ort_logits(fp32_path, check_audio), ort_logits(int8_path, check_audio)
    return {**settings, "frame_argmax_agreement": float(np.mean(fp32.argmax(-1) == int8.argmax(-1))),
            "mean_abs_logit_diff": float(np.mean(np.abs(fp32 - int8))),
            "size_bytes": Path(int8_path).stat().st_size}


def export_frame_torchscript(model: FrameNet, path: str | Path, window: int) -> Path:
    return export_torchscript(model.eval(), path, window)


def streaming_card_fields(model: FrameNet, window: int, step_samples: int, min_confidence: float,
                          sequence_gap_ms: int = 1200) -> dict:
    """What the daemon's streaming loop reads from the card (see ``stream_decode_reference``).

    ``lookahead_samples`` is the model's right context: a decided frame then never reads past the window.
    The frame's left context must fit in the audio before it, or decided frames would read the zeros
    before the window's start, which the whole stream never has."""
    first_start = window - step_samples - model.right_context_samples - model.frame_length_samples
    if model.left_context_samples > first_start:
        raise ExportError(f"the model's left context ({model.left_context_samples} samples) exceeds the "
                          f"{first_start} samples a decided frame has before it in a {window}-sample window with "
                          f"step {step_samples}: use a longer window or a shorter step")
    return {
        "model_kind": MODEL_KIND,
        "labels": list(LABELS),
        "window_samples": window,
        "frame_hop_samples": model.frame_hop_samples,
        "frame_length_samples": model.frame_length_samples,
        "step_samples": step_samples,
        "lookahead_samples": model.right_context_samples,
        "n_frames": model.n_frames(window),
        "thresholds": {"min_confidence": min_confidence, "sequence_gap_ms": sequence_gap_ms},
    }


def time_per_call(path: str | Path, window: int, threads: int = 1, calls: int = 300) -> dict:
    """Median and p95 ms of one serving call (batch 1) in onnxruntime."""
    from digitspot.train.stream_decode_reference import OnnxFrameModel

    model = OnnxFrameModel(path, threads=threads)
    x = (np.random.default_rng(0).standard_normal((1, window)) * 0.05).astype(np.float32)
    for _ in range(20):
        model(x)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)), "threads": threads,
            "calls": calls}
