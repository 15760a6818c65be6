"""The one way the edge side opens an ONNX model: CPU only, a fixed thread count, no spinning.

``threads`` sets onnxruntime's intra-op thread count explicitly (inter-op is 1, sequential): on a Pi the
daemon shares four small cores with the audio loop, and onnxruntime's default (all cores, spinning
while idle) costs more than it saves for a model this size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from digitspot.edge.errors import ModelError


def open_session(model_path: Path, threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model_path``, or a ModelError saying what to do."""
    import onnxruntime as ort  # imported here so that `--help` stays fast

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
        raise ModelError(f"{model_path}: onnxruntime cannot load the model ({str(exc).splitlines()[0]}); "
                         "re-export it with digitspot-train export") from exc
