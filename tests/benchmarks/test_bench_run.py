"""Every benchmark in short mode, as `make bench BENCH_SHORT=1` runs it: real FSDD audio, the real daemon,
a real Mosquitto. Checks that the reports are produced, parse, hold every figure and agree with each other
and with the model, and that the exit code is the report's verdict; never timings (whether a timing target
passes is the verdict's business, unit-tested on hand-made figures in test_bench_verdict.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--short", "--runs", "60", "--warmup", "5", "--e2e-words", "10", "--hour-seconds", "30",
         "--idle-seconds", "4"]


def has_pocketsphinx() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def exit_code_of(report: dict) -> int:
    """What the CLI must exit with for this report: 0 when every gated target passed, 1 otherwise."""
    return 0 if report["passed"] else 1


def run_bench(args: list[str], out_dir: Path, fsdd_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, FSDD_DIR=str(fsdd_dir))
    return subprocess.run([sys.executable, "-m", "digitspot.benchmarks", *args, "--out-dir", str(out_dir), "--stem", "t"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def short_report(tmp_path_factory, bench_model, fsdd_dir):
    out = tmp_path_factory.mktemp("bench")
    proc = run_bench([*SMALL, "--model", str(bench_model)], out, fsdd_dir)
    assert (out / "t.json").is_file(), proc.stderr[-3000:]
    return out, json.loads((out / "t.json").read_text()), proc


def test_no_section_failed(short_report):
    _, report, proc = short_report
    assert report["errors"] == {}, proc.stderr[-3000:]


def test_exit_code_is_the_verdict(short_report):
    """A missed timing target is allowed here (short mode on a shared machine), but the exit code, the
    report's verdict and the targets must say the same thing."""
    _, report, proc = short_report
    gated_misses = [t["id"] for t in report["targets"] if t["gated"] and t["passed"] is not True]
    assert report["passed"] is (not gated_misses and not report["errors"])
    assert proc.returncode == exit_code_of(report), proc.stderr[-3000:]
    if report["passed"]:
        assert proc.stdout.rstrip().endswith("PASS: every gated target met")
    else:
        assert f"FAIL: {', '.join(gated_misses) or 'errors'}" in proc.stderr


def test_inference_figures(short_report, bench_model):
    from digitspot.benchmarks.stats import median_of_block_medians
    from digitspot.edge.card import load_card

    _, report, _ = short_report
    inf = report["inference"]
    int8 = inf["runtimes"]["int8"]
    lat = int8["latency_ms"]
    assert lat["n"] == 60 and len(int8["samples_ms"]) == 60
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    # 60 calls in 20 interleaved blocks of 3; the gate's statistic is recomputable from the samples.
    assert inf["interleave_block"] == 3
    blocks = int8["block_median_ms"]
    assert (blocks["blocks"], blocks["block_size"]) == (20, 3)
    again = median_of_block_medians(int8["samples_ms"], 3)  # the samples are stored rounded to 0.1 us
    assert blocks["block_medians"] == pytest.approx(again["block_medians"], abs=1e-3)
    assert blocks["value"] == pytest.approx(again["value"], abs=1e-3)
    target = next(t for t in report["targets"] if t["id"] == "inference_median_x86")
    assert target["measured"] == blocks["value"]
    for label in ("fp32", "torchscript", "eager"):
        r = inf["runtimes"][label]
        assert "latency_ms" in r or r["skipped"]  # skipped needs a reason (no torch, no file)
    card = load_card(bench_model)
    size = inf["models"]["int8"]
    assert size["file_size_bytes"] == bench_model.stat().st_size
    assert size["sha256"] == card.sha256
    assert (size["card_parameter_count"], size["card_nonzero_parameter_count"]) == (
        card.parameter_count, card.nonzero_parameter_count)
    assert 0 < size["nonzero_parameters"] <= size["parameters"]
    assert size["macs_by_op"]["Conv"] > 0 and size["macs"] == sum(size["macs_by_op"].values())


def test_e2e_figures(short_report):
    _, report, _ = short_report
    e2e = report["e2e"]
    assert e2e["stream"]["utterances"] == 10
    for key in ("p50", "p95", "p99"):
        assert key in e2e["latency_ms"]
    outcomes = e2e["outcomes"]
    assert outcomes["correct"] + outcomes["wrong"] + outcomes["missed"] == 10
    assert len(e2e["per_word"]) == 10 and "latency_definition" in e2e
    assert e2e["daemon_exit_code"] == 0


def test_throughput_figures(short_report):
    _, report, _ = short_report
    thr = report["throughput"]
    for key in ("speech_hour", "noise_hour"):
        r = thr[key]
        assert r["audio_seconds"] >= 30
        for figure in ("real_time_factor", "cpu_s_per_audio_hour", "peak_rss_mb", "events_per_hour"):
            assert r[figure] is not None
    idle = thr["idle"]
    # --idle-seconds 4 of real-time listening after the settling; the percentage is CPU over that window
    # (paced in real time, so never shorter than the audio; a late feeder only makes it longer)
    assert idle["window_s"] >= 4 - 0.05
    assert idle["cpu_percent_of_one_core"] == pytest.approx(100 * idle["cpu_s"] / idle["window_s"])
    assert idle["daemon_exit_code"] == 0 and thr["startup"]["daemon_exit_code"] == 0


@pytest.mark.skipif(not has_pocketsphinx(), reason="pocketsphinx is not installed (the dev extra has it)")
def test_peer_figures(short_report):
    _, report, _ = short_report
    peer = report["peer"]
    assert "skipped" not in peer  # installed here, so it ran
    utt = peer["utterances"]
    assert utt["files"] == 30
    ps, ours = utt["pocketsphinx"], utt["ours"]
    assert utt["speed_ratio_p50"] == pytest.approx(ps["decode_ms"]["p50"] / ours["decode_ms"]["p50"])
    assert ours["accuracy"]["total"] == ps["accuracy"]["total"] == 30
    assert utt["accuracy_difference"] == pytest.approx(
        (ours["accuracy"]["successes"] - ps["accuracy"]["successes"]) / 30)
    assert "accuracy" in peer["stream"] and peer["ours_stream"]["counts"] == report["e2e"]["outcomes"]


def test_accuracy_figures(short_report):
    """The accuracy suite needs no PocketSphinx: it runs and is checked whether or not the peer ran."""
    _, report, _ = short_report
    acc = report["accuracy"]["conditions"]
    assert set(acc) == {"official", "pitch+300", "pitch+500", "pitch+700", "white-10dB", "white-5dB",
                        "white-0dB", "pink-10dB", "pink-5dB", "pink-0dB"}
    assert all(c["accuracy"]["total"] == 30 and c["errors"] == 0 for c in acc.values())
    assert len(acc["official"]["confusion"]) == 10


def test_targets_and_markdown(short_report):
    out, report, _ = short_report
    ids = {t["id"] for t in report["targets"]}
    assert ids == {"inference_p99", "inference_median_x86", "e2e_p50", "e2e_p95", "accuracy_official",
                   "accuracy_e2e", "rtf_x86", "peak_rss", "idle_cpu_x86", "peer_speed", "peer_accuracy"}
    assert all(t["measured"] is not None for t in report["targets"] if not t["skipped"])
    md = (out / "t.md").read_text()
    for heading in ("## Machine", "## Targets", "## Inference latency", "## End to end", "## Throughput",
                    "## Accuracy suite", "## Caveats"):
        assert heading in md
    assert report["machine"]["cpu_model"] and report["machine"]["versions"]["onnxruntime"]
    assert "issue" not in md.lower()  # the report states its targets, not the history of how they were set
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".md", ".json")) == ["t.json", "t.md"]
    for name in report["figures"].values():
        assert (out / name).is_file()
    pngs = {p.name for p in out.glob("*.png")}
    if report["machine"]["versions"].get("matplotlib"):
        assert set(report["figures"]) == {"inference", "e2e", "confusion", "accuracy"}
        assert {"t-inference.png", "t-e2e.png", "t-confusion.png", "t-accuracy.png"} <= pngs
        for name in report["figures"].values():
            assert f"]({name})" in md  # linked from the Markdown


def test_own_broker_and_bad_model(tmp_path, bench_model, fsdd_dir):
    from digitspot.edge.devtools.local_broker import LocalBroker

    with LocalBroker() as broker:
        proc = run_bench(["--short", "--only", "e2e", "--e2e-words", "4", "--model", str(bench_model),
                          "--broker", f"{broker.host}:{broker.port}"], tmp_path, fsdd_dir)
    report = json.loads((tmp_path / "t.json").read_text())
    assert proc.returncode == exit_code_of(report), proc.stderr[-3000:]
    assert report["errors"] == {} and report["e2e"]["stream"]["utterances"] == 4
    assert report["settings"]["broker"] == f"{broker.host}:{broker.port}"
    bad = run_bench(["--short", "--model", str(tmp_path / "missing.onnx")], tmp_path / "x", fsdd_dir)
    assert bad.returncode == 65 and "missing.onnx" in bad.stderr  # EXIT_DATAERR: the model cannot be used


def test_without_optional_packages(tmp_path, bench_model, fsdd_dir):
    """A Pi with only the edge install: no torch, no pocketsphinx, no matplotlib. Those parts are reported
    as skipped, the rest still runs and the report still renders."""
    blocker = ("import sys, runpy\n"
               "for name in ('torch', 'pocketsphinx', 'matplotlib'):\n"
               "    sys.modules[name] = None  # import raises ImportError, as if not installed\n"
               "sys.argv[0] = 'digitspot.benchmarks'\n"
               "runpy.run_module('digitspot.benchmarks', run_name='__main__', alter_sys=True)\n")
    env = dict(os.environ, FSDD_DIR=str(fsdd_dir))
    proc = subprocess.run([sys.executable, "-c", blocker, "--short", "--only", "inference", "--only", "peer",
                           "--runs", "20", "--warmup", "2", "--model", str(bench_model),
                           "--out-dir", str(tmp_path), "--stem", "t"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    report = json.loads((tmp_path / "t.json").read_text())
    assert proc.returncode == exit_code_of(report), proc.stderr[-3000:]
    assert report["errors"] == {}
    runtimes = report["inference"]["runtimes"]
    assert "latency_ms" in runtimes["int8"]
    assert "torch is not installed" in runtimes["torchscript"]["skipped"]
    assert "pocketsphinx is not installed" in report["peer"]["skipped"]
    peer_targets = [t for t in report["targets"] if t["id"].startswith("peer_")]
    assert all(t["skipped"] and not t["gated"] for t in peer_targets)
    assert not list(tmp_path.glob("*.png")) and report["figures"] == {}
    assert "Skipped: pocketsphinx" in (tmp_path / "t.md").read_text()
