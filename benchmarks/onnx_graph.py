"""Model size figures read from the ONNX file itself, with only onnxruntime and numpy installed.

The ``onnx`` package is a training dependency, so on a Pi we cannot ``onnx.load``. An ONNX file is a
protobuf message; the few fields needed here (nodes' op types and inputs, initializers' dims and data)
are read with a ~50-line wire-format decoder instead.

Parameters: elements of the initializers that feed Conv and Gemm weights/biases (through
DequantizeLinear in a QDQ INT8 graph) plus BatchNormalization scale and bias. BatchNorm after a conv is
folded into that conv's weights and bias at export, so this is smaller than the trainable-parameter count
of the PyTorch model (the card's ``parameter_count``). The front end's constants (mel filterbank, FFT
window) are counted separately: they are fixed, not learned.

MACs: onnxruntime runs the graph once with optimizations off and profiling on; the profile records each
node's input and output shapes, from which multiply-accumulates per 1-s window are counted:
Conv = output elements x (C_in/groups x k_h x k_w) (= product of the weight shape without its first dim);
Gemm/MatMul = output elements x K (the inner dimension). The STFT is counted apart, as the direct real
DFT it is equivalent to (frames x n_fft x (n_fft/2+1) x 2 real MACs); onnxruntime computes it with an FFT,
which needs fewer operations.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# TensorProto.DataType -> numpy dtype
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
           10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}
LEARNED_OPS = ("Conv", "Gemm", "ConvTranspose")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; length-delimited values as bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}: not an ONNX file?")
        yield number, wire, value


def _packed_varints(value: Any, wire: int) -> list[int]:
    if wire == 0:
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _tensor(buf: bytes) -> tuple[str, list[int], np.ndarray | None]:
    name, dims, dtype, raw = "", [], 1, None
    typed: dict[int, list] = {}
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += _packed_varints(value, wire)
        elif number == 2:
            dtype = value
        elif number == 8:
            name = value.decode()
        elif number == 9:
            raw = value
        elif number in (4, 5, 7):
            typed.setdefault(number, []).append((wire, value))
    np_dtype = _DTYPES.get(dtype)
    count = int(np.prod(dims)) if dims else 1
    data = None
    if np_dtype is not None and raw is not None:
        data = np.frombuffer(raw, dtype=np_dtype)
    elif 4 in typed:  # float_data, packed
        data = np.concatenate([np.frombuffer(v, dtype="<f4") for _w, v in typed[4]])
    elif 5 in typed or 7 in typed:
        ints = [i - (1 << 64) if i >= 1 << 63 else i  # negative numbers are 10-byte two's complement
                for w, v in typed.get(5, []) + typed.get(7, []) for i in _packed_varints(v, w)]
        data = np.asarray(ints, dtype=np.int64)
    if data is not None and data.size != count:
        data = None  # external data or an encoding we do not decode: size only
    return name, dims, data


def read_graph(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Nodes (op_type, inputs, outputs, name) and initializers (dims, data) of an ONNX model file."""
    buf = Path(path).read_bytes()
    graph = next((v for n, w, v in _fields(buf) if n == 7 and w == 2), None)
    if graph is None:
        raise ValueError(f"{path}: no graph in this file: not an ONNX model")
    nodes, inits = [], {}
    for number, wire, value in _fields(graph):
        if number == 1:
            node = {"inputs": [], "outputs": [], "name": "", "op_type": ""}
            for n, _w, v in _fields(value):
                if n == 1:
                    node["inputs"].append(v.decode())
                elif n == 2:
                    node["outputs"].append(v.decode())
                elif n == 3:
                    node["name"] = v.decode()
                elif n == 4:
                    node["op_type"] = v.decode()
            nodes.append(node)
        elif number == 5:
            name, dims, data = _tensor(value)
            inits[name] = {"dims": dims, "data": data}
    return {"nodes": nodes, "initializers": inits}


def parameter_counts(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Learned parameters and nonzero ones in the graph, front-end constants, op histogram."""
    graph = read_graph(path)
    inits, nodes = graph["initializers"], graph["nodes"]
    producer = {out: node for node in nodes for out in node["outputs"]}

    def source_initializer(name: str) -> str | None:
        # follow DequantizeLinear (QDQ graphs) back to the stored integer tensor
        seen = 0
        while name not in inits and name in producer and seen < 4:
            node = producer[name]
            if node["op_type"] not in ("DequantizeLinear", "Identity", "Cast"):
                return None
            name, seen = node["inputs"][0], seen + 1
        return name if name in inits else None

    learned: set[str] = set()
    for node in nodes:
        if node["op_type"] in LEARNED_OPS:
            candidates = node["inputs"][1:3]
        elif node["op_type"] == "BatchNormalization":
            candidates = node["inputs"][1:3]  # scale and bias; mean/var are statistics
        else:
            continue
        for name in candidates:
            src = source_initializer(name) if name else None
            if src:
                learned.add(src)
    constants = {n for node in nodes if node["op_type"] in ("MatMul", "STFT") for n in node["inputs"]
                 if n in inits}
    total = sum(int(np.prod(inits[n]["dims"])) if inits[n]["dims"] else 1 for n in learned)
    nonzero = 0
    unknown = False
    for n in learned:
        data = inits[n]["data"]
        if data is None:
            unknown = True
        else:
            nonzero += int(np.count_nonzero(data))
    ops: dict[str, int] = {}
    for node in nodes:
        ops[node["op_type"]] = ops.get(node["op_type"], 0) + 1
    return {
        "parameters": total,
        "nonzero_parameters": None if unknown else nonzero,
        "sparsity": None if unknown or not total else round(1 - nonzero / total, 4),
        "frontend_constants": sum(int(np.prod(inits[n]["dims"])) for n in constants),
        "weight_dtypes": sorted({str(inits[n]["data"].dtype) for n in learned if inits[n]["data"] is not None}),
        "op_counts": dict(sorted(ops.items())),
        "file_size_bytes": Path(path).stat().st_size,
    }


def count_macs(path: str | os.PathLike[str], input_name: str, window_samples: int) -> dict[str, Any]:
    """Multiply-accumulates for one window, from the node shapes onnxruntime records when profiling."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="digitspot-macs-") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {input_name: np.zeros((1, window_samples), dtype=np.float32)})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, int] = {}
    stft = 0
    for event in events:
        args = event.get("args") or {}
        op = args.get("op_name")
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        ins = [next(iter(s.values())) for s in args.get("input_type_shape", [])]
        outs = [next(iter(s.values())) for s in args.get("output_type_shape", [])]
        if not outs:
            continue
        out_elems = int(np.prod(outs[0])) if outs[0] else 1
        if op == "Conv" and len(ins) >= 2 and len(ins[1]) >= 3:
            macs = out_elems * int(np.prod(ins[1][1:]))
        elif op in ("Gemm", "MatMul") and ins and ins[0]:
            macs = out_elems * int(ins[0][-1])
        elif op == "STFT" and outs[0] and len(outs[0]) == 4:
            _, frames, bins, _ = outs[0]
            n_fft = (bins - 1) * 2
            stft += frames * n_fft * bins * 2
            continue
        else:
            continue
        by_op[op] = by_op.get(op, 0) + macs
    return {"macs": sum(by_op.values()), "macs_by_op": by_op, "stft_direct_dft_macs": stft,
            "method": "onnxruntime profile shapes, Conv/Gemm/MatMul; STFT separate as a direct DFT"}
