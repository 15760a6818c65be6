"""The benchmark's own parts on real audio: statistics, matching, streams, the ONNX reader, FSDD names,
report names."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from digitspot.benchmarks.audio import (
    build_stream,
    colored_noise,
    labelled_files,
    load_labelled,
    noise_only_stream,
    pitch_shift,
    trim,
)
from digitspot.benchmarks.matching import Detection, WordTimes, match
from digitspot.benchmarks.onnx_graph import count_macs, parameter_counts, read_graph
from digitspot.benchmarks.plan import report_stem
from digitspot.benchmarks.stats import poisson_rate, summarize, wilson
from digitspot.edge.devtools.fsdd import FsddTake, digit_of, list_takes


def test_summarize_has_percentiles_and_intervals():
    s = summarize(np.arange(1, 1001, dtype=float))
    assert s["n"] == 1000 and s["min"] == 1 and s["max"] == 1000
    assert s["p50"] == pytest.approx(500.5) and s["p99"] == pytest.approx(990.01)
    assert s["p50_ci95"][0] <= s["p50"] <= s["p50_ci95"][1]
    assert summarize([]) == {"n": 0}


def test_wilson_and_poisson_bounds():
    w = wilson(0, 50)
    assert w["value"] == 0 and w["ci95"][0] == 0 and 0.05 < w["ci95"][1] < 0.1
    assert wilson(50, 50)["ci95"][1] == pytest.approx(1.0)
    p = poisson_rate(0, 2.0)
    assert p["value"] == 0 and p["ci95"][0] == 0 and 1.5 < p["ci95"][1] < 2.0  # ~3.7 events / 2 h


def test_match_outcomes():
    words = [WordTimes(1, 0.0, 0.5), WordTimes(2, 2.0, 2.5), WordTimes(3, 4.0, 4.5)]
    events = [Detection(1, 0.6), Detection(1, 0.7), Detection(7, 2.58), Detection(9, 9.0)]
    m = match(words, events, max_latency_s=2.0)
    assert [w["outcome"] for w in m["per_word"]] == ["correct", "wrong", "missed"]
    assert m["counts"] == {"correct": 1, "wrong": 1, "missed": 1, "extra": 2, "extra_unattributed": 1}
    assert m["latencies_ms"] == pytest.approx([100.0, 80.0])


def test_stream_positions_and_noise(fsdd_dir):
    files = labelled_files(fsdd_dir, limit_per_digit=1)
    assert len(files) == 10 and sorted(f.digit for f in files) == list(range(10))
    clips = load_labelled(files, 8000)
    stream = build_stream(clips, [f.digit for f in files], [f.path.name for f in files], 8000,
                          snr_db=20, noise="pink", seed=3)
    assert len(stream.utterances) == 10
    gaps = [(b.start - a.end) / 8000 for a, b in zip(stream.utterances, stream.utterances[1:])]
    assert all(0.5 <= g <= 2.0 for g in gaps)
    # the words are where the stream says: louder than the noise bed around them
    u = stream.utterances[0]
    word_rms = np.sqrt(np.mean(stream.audio[u.start:u.end] ** 2))
    bed_rms = np.sqrt(np.mean(stream.audio[: u.start] ** 2))
    assert word_rms > 5 * bed_rms
    assert len(stream.pcm16()) == 2 * stream.audio.size
    quiet = noise_only_stream(10, 8000, noise="white", snr_db=20, seed=1)
    assert quiet.utterances == [] and quiet.audio.size == 80000
    assert abs(np.sqrt(np.mean(colored_noise(1 << 14, "pink", np.random.default_rng(0)) ** 2)) - 1) < 1e-3


def test_pitch_shift_and_trim():
    rate = 8000
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for method, length in (("resample", rate / 2), ("wsola", rate)):  # an octave up; tape-style halves it
        shifted = pitch_shift(tone, 1200, rate, method)
        assert abs(shifted.size - length) < 5
        spectrum = np.abs(np.fft.rfft(shifted * np.hanning(shifted.size)))
        assert abs(np.argmax(spectrum) * rate / shifted.size - 880) < 5
    padded = np.concatenate([np.zeros(800, np.float32), tone, np.zeros(1600, np.float32)])
    assert abs(trim(padded, rate).size - rate) <= 80


def test_onnx_reader_matches_onnx_package(bench_model):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    graph = read_graph(bench_model)
    reference = onnx.load(str(bench_model)).graph
    assert [n.op_type for n in reference.node] == [n["op_type"] for n in graph["nodes"]]
    for init in reference.initializer:
        ours = graph["initializers"][init.name]["data"]
        assert ours is not None and np.array_equal(numpy_helper.to_array(init).ravel(), ours.ravel())
    counts = parameter_counts(bench_model)
    assert 0 < counts["nonzero_parameters"] <= counts["parameters"]
    macs = count_macs(bench_model, "audio", 8000)
    assert macs["macs"] > 0 and macs["macs_by_op"].get("Conv", 0) > 0


def test_fsdd_names_parse_in_one_place(fsdd_dir):
    take = FsddTake.parse("/x/7_george_12.wav")
    assert take == FsddTake(7, "george", 12, Path("/x/7_george_12.wav")) and not take.is_official_test
    assert FsddTake.parse("3_theo_4.wav").is_official_test
    for name in ("7_george_12.flac", "x_george_1.wav", "17_george_1.wav", "7-george-1.wav", "7_george.wav"):
        assert FsddTake.parse(name) is None, name
    with pytest.raises(ValueError, match="not an FSDD file name"):
        digit_of("notes.wav")
    test_takes = list_takes(fsdd_dir, official_test_only=True)
    assert len(test_takes) == 300 and len(list_takes(fsdd_dir)) == 3000
    assert {t.take for t in test_takes} == set(range(5)) and len({t.speaker for t in test_takes}) == 6
    assert [f.path for f in labelled_files(fsdd_dir)] == [t.path for t in test_takes]


def test_report_names_carry_time_and_model():
    when = dt.datetime(2026, 11, 25, 11, 47, 5, tzinfo=dt.UTC)
    assert report_stem("vm", when, "4fdf78f958d2" + "0" * 52) == "vm-2026-11-25T114705-4fdf78f9"
    later = when.astimezone(dt.timezone(dt.timedelta(hours=2)))  # the same instant elsewhere: the same name
    assert report_stem("vm", later, "4fdf78f958d2" + "0" * 52) == "vm-2026-11-25T114705-4fdf78f9"


def test_cli_writes_no_readme_or_docs():
    """`make bench` writes its report only; README and docs/ take figures from it through `make docs`."""
    from click.testing import CliRunner

    from digitspot.benchmarks.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "--out-dir" in result.output
    assert "--readme" not in result.output and "--docs" not in result.output
    bad = CliRunner().invoke(main, ["--broker", "localhost"])
    assert bad.exit_code == 2 and "not HOST:PORT" in bad.output
