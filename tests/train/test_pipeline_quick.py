"""Every stage of the recipe on real FSDD audio (``--quick``), and what it leaves behind."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from digitspot.edge.audio_io import load_audio
from digitspot.edge.card import SCHEMA_VERSION, load_card, sha256_of
from digitspot.edge.classifier import OnnxDigitClassifier, softmax
from digitspot.edge.devtools.fsdd import FsddTake
from digitspot.train import data as fsdd
from digitspot.train.augment import clean_batch
from digitspot.train.onnx_tools import PARITY_TOLERANCE, ort_logits, torch_logits
from digitspot.train.training import load_checkpoint

STAGE_CONFIGS = ["recipe.json", "data.json", "synth.json", "teacher.pt.json", "student.pt.json", "pruned.pt.json",
                 "export.json", "quantize.json", "evaluate.json", "all.json"]


def test_every_stage_saved_its_config(quick_run):
    for name in STAGE_CONFIGS:
        path = quick_run["run"] / name
        assert path.is_file(), name
        data = json.loads(path.read_text())
        if name not in ("recipe.json", "all.json"):
            assert data["recipe"]["preset"] == "quick"
    assert set(json.loads((quick_run["run"] / "all.json").read_text())["stage_seconds"]) >= {
        "data", "synth", "fit", "distill", "prune", "export", "quantize", "evaluate", "total"}
    synth = json.loads((quick_run["run"] / "synth.json").read_text())
    assert synth["clips"] > 0 and synth["voices"] >= 2
    teacher = json.loads((quick_run["run"] / "teacher.pt.json").read_text())
    student = json.loads((quick_run["run"] / "student.pt.json").read_text())
    assert student["model"]["parameters"] <= 90_000
    assert teacher["model"]["parameters"] > 2 * student["model"]["parameters"]
    assert not list(quick_run["out"].glob("*.tmp")) and not list(quick_run["run"].glob("*.tmp"))


def test_outputs_and_sizes(quick_run):
    out = quick_run["out"]
    for name in ("digitspot.onnx", "digitspot.onnx.json", "digitspot-fp32.onnx", "digitspot-fp32.onnx.json",
                 "digitspot.pt", "report.md", "confusion-int8.png"):
        assert (out / name).is_file(), name
    assert (out / "digitspot.onnx").stat().st_size <= 150 * 1024
    assert (out / "digitspot-fp32.onnx").stat().st_size < 1024 * 1024
    assert (out / "digitspot.pt").stat().st_size < 1024 * 1024
    assert not list(out.glob("*.data")), "weights must be inside the .onnx (external_data=False)"


def test_card_fields(quick_run):
    path = quick_run["out"] / "digitspot.onnx"
    card = load_card(path)  # verifies sha256
    assert card.schema_version == SCHEMA_VERSION
    assert card.sha256 == sha256_of(path) and card.file_size_bytes == path.stat().st_size
    assert card.sample_rate == 8000 and card.window_samples == 8000
    assert card.labels == [str(d) for d in range(10)]
    assert (card.input_name, card.output_name) == ("audio", "logits")
    for model in (path, quick_run["out"] / "digitspot-fp32.onnx"):  # the opset the graph itself declares
        graph_opset = [o.version for o in onnx.load(str(model)).opset_import if o.domain in ("", "ai.onnx")]
        assert [load_card(model).opset] == graph_opset, model.name
    q = card.quantization
    assert (q.scheme, q.weight_dtype, q.per_channel, sorted(q.op_types)) == ("static-qdq", "int8", True,
                                                                             ["Conv", "Gemm"])
    assert "training audio" in q.calibration
    assert q.float_layers == ["body.0.0"]  # the first convolution, kept float on purpose (see quantize_int8)
    assert 0 < card.nonzero_parameter_count < card.parameter_count <= 90_000
    assert card.training["recipe"]["preset"] == "quick"
    assert set(card.training["stages"]) >= {"data", "synth", "fit", "distill", "prune"}
    assert card.git_commit and card.created_at
    assert {"torch", "onnx", "onnxruntime"} <= set(card.versions)
    for key in ("official_accuracy_int8", "official_accuracy_pruned", "official_accuracy_fp32",
                "pitch_+300c_accuracy_int8", "pitch_+500c_accuracy_int8", "pitch_+700c_accuracy_int8",
                "white_10db_accuracy_int8", "white_5db_accuracy_int8", "white_0db_accuracy_int8",
                "pink_10db_accuracy_int8", "pink_5db_accuracy_int8", "pink_0db_accuracy_int8",
                "parity_onnx_fp32_vs_torch_max_abs", "int8_vs_fp32_top1_agreement", "per_class_int8", "targets"):
        assert key in card.metrics, key
    assert card.metrics["parity_onnx_fp32_vs_torch_max_abs"] <= 1e-4
    assert card.training["stage_seconds"]["total"] > 0


def test_onnx_graphs(quick_run):
    fp32 = onnx.load(str(quick_run["out"] / "digitspot-fp32.onnx"))
    int8 = onnx.load(str(quick_run["out"] / "digitspot.onnx"))
    for model in (fp32, int8):
        assert [i.name for i in model.graph.input] == ["audio"]
        assert [o.name for o in model.graph.output] == ["logits"]
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and dims[1].dim_value == 8000  # dynamic batch, fixed window
        assert "STFT" in {n.op_type for n in model.graph.node}  # the front end is in the graph
    ops = [n.op_type for n in int8.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # Only Conv/Gemm inputs are quantized: the STFT and the mel matmul keep float inputs.
    producers = {o: n.op_type for n in int8.graph.node for o in n.output}
    for node in int8.graph.node:
        if node.op_type in ("STFT", "MatMul"):
            assert all(producers.get(i) != "DequantizeLinear" for i in node.input), node.op_type


def test_pruning_is_permanent(quick_run):
    model, ckpt = load_checkpoint(quick_run["run"] / "pruned.pt")
    assert not any(k.endswith(("_orig", "_mask")) for k in ckpt["state_dict"])
    weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.40, abs=0.01)
    steps = json.loads((quick_run["run"] / "pruned.pt.json").read_text())["steps"]
    assert [s["sparsity_target"] for s in steps[:8]] == pytest.approx([0.05 * k for k in range(1, 9)])
    assert [s["step"] for s in steps[8:]] == ["recovery"]  # the final fine-tune kept the masks (zeros above)
    assert steps[-1]["sparsity"] == pytest.approx(0.40, abs=0.01)


@pytest.fixture(scope="module")
def sample_wavs(fsdd_test_files):
    return fsdd_test_files[::10]  # 30 official test takes, every digit and speaker


def test_parity_fp32_onnx_and_torchscript(quick_run, sample_wavs):
    model, _ = load_checkpoint(quick_run["run"] / "pruned.pt")
    clips = [load_audio(p, 8000) for p in sample_wavs]
    windows = clean_batch(clips, 8000)
    ref = torch_logits(model, windows)
    assert np.max(np.abs(ort_logits(quick_run["out"] / "digitspot-fp32.onnx", windows) - ref)) <= 1e-4
    traced = torch.jit.load(str(quick_run["out"] / "digitspot.pt"))
    assert np.max(np.abs(torch_logits(traced, windows) - ref)) <= 1e-4


def test_skew_guard_training_path_vs_edge_classifier(quick_run, sample_wavs):
    """The same WAV through the training data path + PyTorch and through the edge daemon's classifier
    on the exported model gives the same scores (no train/serve skew in loading, windowing, features)."""
    model, _ = load_checkpoint(quick_run["run"] / "pruned.pt")
    takes = [FsddTake.parse(p) for p in sample_wavs]
    train_clips = fsdd.load_clips(takes, progress=False)
    train_probs = softmax(torch_logits(model, clean_batch(train_clips.clips, 8000)))
    # A clip longer than the window exercises fit_to_window's cropping on both sides too.
    long_clip = np.concatenate([train_clips.clips[0], np.zeros(6000, np.float32), train_clips.clips[1]])
    long_probs = softmax(torch_logits(model, clean_batch([long_clip], 8000)))
    classifier = OnnxDigitClassifier(quick_run["out"] / "digitspot-fp32.onnx")
    edge_probs = np.array([p.probabilities for p in classifier.classify_batch([load_audio(p, 8000) for p in sample_wavs])])
    assert np.max(np.abs(edge_probs - train_probs)) <= 1e-4
    assert np.max(np.abs(np.array(classifier.classify(long_clip).probabilities) - long_probs[0])) <= 1e-4


def test_report(quick_run):
    report = (quick_run["out"] / "report.md").read_text()
    for needle in ("official test set", "FP32 pruned", "INT8 (shipped)", "pitch +500 cents", "white noise 5 dB SNR",
                   "pink noise 0 dB SNR", "confusion-int8.png", "| digit | precision | recall | F1 |",
                   "Leave-one-speaker-out", "## Targets (shipped INT8 model)", "## How long it took"):
        assert needle in report, needle
    assert "issue" not in report.lower()  # the report says what is measured, not the history of its targets


def top1_agreement(model_dir: Path, windows: np.ndarray) -> float:
    """Share of ``windows`` on which ``model_dir``'s INT8 and FP32 ONNX models pick the same digit."""
    fp32 = ort_logits(model_dir / "digitspot-fp32.onnx", windows).argmax(1)
    int8 = ort_logits(model_dir / "digitspot.onnx", windows).argmax(1)
    return float((fp32 == int8).mean())


def test_quantize_refuses_an_int8_model_that_disagrees_with_fp32(quick_run, fsdd_dir, tmp_path, capsys):
    """Below the recipe's agreement floor the previous INT8 model and its card stay as they were (what
    `make train` relies on); LOSO folds (``gate=False``) record the miss and go on."""
    import shutil
    from dataclasses import replace

    from digitspot.train.export import stage_quantize
    from digitspot.train.onnx_tools import ExportError
    from digitspot.train.recipe import preset
    from digitspot.train.stages import windowed_test_set
    from digitspot.train.workspace import Workspace

    run, out = tmp_path / "run", tmp_path / "out"
    shutil.copytree(quick_run["run"], run)
    shutil.copytree(quick_run["out"], out)
    before = (out / "digitspot.onnx").read_bytes()
    inode = (out / "digitspot.onnx").stat().st_ino  # a replaced file (even with equal bytes) is a new inode
    ws = Workspace(recipe=replace(preset("quick"), int8_min_agreement=1.01), run_dir=run, out_dir=out,
                   data_dir=str(fsdd_dir), cache_dir=quick_run["cache"], progress=False)
    with pytest.raises(ExportError, match=r"agrees with FP32 on only .* left as it was"):
        stage_quantize(ws)
    assert (out / "digitspot.onnx").read_bytes() == before and (out / "digitspot.onnx").stat().st_ino == inode
    load_card(out / "digitspot.onnx")  # verifies that model and card still belong together
    assert not [p.name for p in out.iterdir() if "candidate" in p.name or p.name.endswith(".tmp")]
    result = stage_quantize(ws, gate=False)
    assert "recorded, not fatal" in capsys.readouterr().err
    # The recorded agreement is the two models' top-1 agreement on the split's test windows, and the card says so.
    assert result["int8_vs_fp32_top1_agreement"] == top1_agreement(out, windowed_test_set(ws))
    assert load_card(out / "digitspot.onnx").metrics["int8_vs_fp32_top1_agreement"] == result[
        "int8_vs_fp32_top1_agreement"]


def test_stage_subcommands_rerun_on_the_run_dir(run_train, quick_run, fsdd_dir):
    """Each stage is its own subcommand: re-export, re-quantize and re-evaluate the quick run."""
    base, run, out = quick_run["base"], quick_run["run"], quick_run["out"]
    common = ["--quick", "--run-dir", str(run), "--out", str(out), "--cache-dir", str(quick_run["cache"])]
    for stage in ("data", "export", "quantize"):
        result = run_train([stage] + common, fsdd_dir, cwd=base)
        assert result.returncode == 0, (stage, result.stderr[-2000:])
    result = run_train(["evaluate"] + common + ["--loso-results", str(base / "none.json")], fsdd_dir, cwd=base)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "official_accuracy_int8" in result.stdout
    load_card(out / "digitspot.onnx")  # card and model still belong together


def test_loso_two_folds_in_parallel(run_train, quick_run, fsdd_dir):
    base = quick_run["base"]
    run = base / "loso"
    result = run_train(["loso", "--quick", "--speakers", "theo,george", "--jobs", "2", "--threads", "1",
                        "--run-dir", str(run), "--cache-dir", str(quick_run["cache"])], fsdd_dir, cwd=base)
    assert result.returncode == 0, result.stderr[-2000:]
    loso = json.loads((run / "loso.json").read_text())
    assert [f["speaker"] for f in loso["folds"]] == ["theo", "george"]  # in the order asked, whichever ends first
    assert loso["jobs"] == 2 and not loso["complete"]
    for fold in loso["folds"]:
        assert fold["test_files"] == 20  # quick: 2 takes x 10 digits of the held-out speaker
        # Recorded per fold, not gated there; a fold exports like the shipped model, so it meets the same bound.
        assert fold["parity_onnx_fp32_vs_torch_max_abs"] <= PARITY_TOLERANCE
        data = json.loads((run / fold["speaker"] / "data.json").read_text())
        clips = fsdd.load_clips([FsddTake.parse(p) for p in data["files"]["test"]], progress=False)
        windows = clean_batch(clips.clips, 8000)
        assert fold["int8_vs_fp32_top1_agreement"] == top1_agreement(run / fold["speaker"], windows)
        held_out = f"_{fold['speaker']}_"
        assert all(held_out not in p for p in data["files"]["train"] + data["files"]["validation"])
        assert all(held_out in p for p in data["files"]["test"])
    assert abs(loso["mean_accuracy_int8"] - sum(f["accuracy_int8"] for f in loso["folds"]) / 2) < 1e-9
    # The report of the main run picks the LOSO results up.
    result = run_train(["evaluate", "--quick", "--run-dir", str(quick_run["run"]), "--out", str(quick_run["out"]),
                        "--loso-results", str(run / "loso.json")], fsdd_dir, cwd=base)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| theo |" in (quick_run["out"] / "report.md").read_text()


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc), e.g. a LOSO run's fold workers."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_to_loso_stops_its_fold_workers(quick_run, fsdd_dir):
    """``kill`` (SIGTERM, what systemd and CI timeouts send) on a parallel LOSO run must not leave its
    fold workers training on for nobody: they stop with the parent, which exits 143."""
    import os
    import signal
    import subprocess
    import sys
    import time

    base = quick_run["base"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    args = ["loso", "--quick", "--speakers", "theo,george", "--jobs", "2", "--threads", "1", "--no-progress",
            "--run-dir", str(base / "loso-killed"), "--cache-dir", str(quick_run["cache"]), "--data-dir", str(fsdd_dir)]
    log = (base / "loso-killed.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "digitspot.train.cli", *args], cwd=base, env=env, stdout=log, stderr=log)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            workers = {p for p in _descendants(proc.pid)
                       if "spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")}
            if len(workers) >= 2:
                break
            time.sleep(0.5)
        assert len(workers) >= 2, f"no fold workers seen (exit {proc.poll()})"
        # A fold writes synth.json when its data is loaded, right before training starts.
        started = [base / "loso-killed" / speaker / "synth.json" for speaker in ("theo", "george")]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not all(p.is_file() for p in started):
            time.sleep(0.5)
        assert all(p.is_file() for p in started), f"the folds did not start training (exit {proc.poll()})"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        left = [p for p in workers if _alive(p)]
        assert not left, f"fold workers still running after the parent stopped: {left}"
    finally:
        for p in ({proc.pid} | workers) if proc.poll() is None else workers:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        proc.wait()
        log.close()


def test_edge_cli_classifies_with_the_quick_model(quick_run):
    """`digitspot-edge classify` on the split's test files gives, file for file, the digit and confidence of
    the in-process classifier that the evaluate stage uses, and so exactly the right digits the card counts.

    Golden digits of the quick model itself would say little (two epochs: it does about as well as chance)."""
    import subprocess
    import sys

    model = quick_run["out"] / "digitspot.onnx"
    files = json.loads((quick_run["run"] / "data.json").read_text())["files"]["test"]
    result = subprocess.run([sys.executable, "-m", "digitspot.edge.cli", "classify", "--model", str(model), *files],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == files
    classifier = OnnxDigitClassifier(model, threads=1)
    in_process = [classifier.classify(load_audio(f, 8000)) for f in files]
    assert [(line["digit"], line["confidence"]) for line in lines] == [
        (p.digit, round(p.confidence, 4)) for p in in_process]
    right = sum(line["digit"] == FsddTake.parse(line["path"]).digit for line in lines)
    card = load_card(model)
    assert card.metrics["test_files"] == len(files)
    assert right == round(card.metrics["official_accuracy_int8"] * len(files)), (right, len(files))
